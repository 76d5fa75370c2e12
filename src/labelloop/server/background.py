"""Where the server runs train/predict jobs: never inside the request."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor

log = logging.getLogger(__name__)


class ThreadExecutor:
    """Jobs on a thread of this process (tests, tiny set-ups); the job row carries state and progress."""

    def __init__(self, workspace, max_workers: int = 1):
        self.workspace = workspace
        self.pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="labelloop-job")

    def submit(self, job_id: int) -> Future:
        from labelloop.services.jobs import run_job

        return self.pool.submit(run_job, self.workspace, job_id)

    def shutdown(self, wait: bool = True) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=not wait)


class LazyProcessExecutor:
    """The local process pool, started on the first job (a server that never trains spawns nothing)."""

    def __init__(self, workspace, max_workers: int = 1):
        self.workspace, self.max_workers = workspace, max_workers
        self._pool = None
        self._lock = threading.Lock()

    def submit(self, job_id: int) -> Future:
        with self._lock:
            if self._pool is None:
                from labelloop.jobs.executors import LocalProcessExecutor

                self._pool = LocalProcessExecutor(self.workspace, max_workers=self.max_workers)
        return self._pool.submit(job_id)

    def shutdown(self, wait: bool = True) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=wait)


def make_executor(workspace, max_workers: int = 1):
    """The server's executor: the local process pool, or Ray tasks with LABELLOOP_EXECUTOR=ray (connected now, so
    an unreachable cluster stops the server at start with the setting to fix)."""
    from labelloop.jobs.batches import executor_name

    if executor_name() == "ray":
        from labelloop.jobs.ray_runner import RayExecutor

        return RayExecutor(workspace)
    return LazyProcessExecutor(workspace, max_workers=max_workers)
