"""Where jobs run: in this process (CLI, tests) or in a local pool of worker processes (server).

A distributed engine plugs in by implementing `Executor.submit(job_id)`: the worker opens the same
workspace (database URL and blob URL) and calls `labelloop.services.jobs.run_job`."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Protocol


class Executor(Protocol):
    def submit(self, job_id: int) -> Future | None:
        """Start the queued job `job_id` somewhere; returns a future where one exists."""

    def shutdown(self, wait: bool = True) -> None: ...


class InlineExecutor:
    """Runs the job at once in the calling process (the CLI shows its progress bar this way)."""

    def __init__(self, workspace, on_progress=None):
        self.workspace = workspace
        self.on_progress = on_progress

    def submit(self, job_id: int) -> None:
        from labelloop.services.jobs import run_job

        run_job(self.workspace, job_id, on_progress=self.on_progress)

    def shutdown(self, wait: bool = True) -> None:
        return None


def _run_in_worker(data_dir: str, database_url: str, blob_url: str, job_id: int) -> str:
    from labelloop.services.jobs import run_job
    from labelloop.services.workspace import Workspace

    workspace = Workspace.open(data_dir, database_url=database_url, blob_url=blob_url)
    try:
        return run_job(workspace, job_id).state
    finally:
        workspace.close()


class LocalProcessExecutor:
    """A pool of worker processes on this machine (spawned, so no state leaks from the parent); each worker ends
    itself when this process dies (jobs/worker_watch.py)."""

    def __init__(self, workspace, max_workers: int | None = None):
        self.workspace = workspace
        from labelloop.jobs.worker_watch import start_time, watch_parent

        workers = max_workers or max(1, (os.cpu_count() or 2) - 1)
        me = os.getpid()
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=watch_parent, initargs=(str(workspace.root), me, start_time(me)))

    def submit(self, job_id: int) -> Future:
        ws = self.workspace
        return self.pool.submit(_run_in_worker, str(ws.root), ws.database_url, ws.blob_url, job_id)

    def shutdown(self, wait: bool = True) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=not wait)
