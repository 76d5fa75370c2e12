"""Background work: a registry of job kinds, a runner, and executors that decide where jobs run."""

from labelloop.jobs.executors import Executor, InlineExecutor, LocalProcessExecutor
from labelloop.jobs.registry import JobContext, get_job_kind, job_kind

__all__ = ["Executor", "InlineExecutor", "JobContext", "LocalProcessExecutor", "get_job_kind", "job_kind"]
