"""Jobs and batch work on a Ray cluster (`LABELLOOP_EXECUTOR=ray`).

`LABELLOOP_RAY_ADDRESS` says which cluster: unset, the one running on this machine (`ray start --head`) or else a
local one started for this process; `auto` that running one and no other; `local` always a new local one;
`HOST:PORT` (or `ray://HOST:PORT`) a cluster elsewhere. Workers open the same workspace (LABELLOOP_DATABASE_URL,
LABELLOOP_BLOB_URL) and read the images from the blob store themselves: tasks carry item ids, never pixels.

Batch work (jobs/batches.py) becomes one task per chunk of items; the job that started it keeps a few tasks per
cluster CPU in flight, adds their progress up on the Job row and merges their summaries. When the job is cancelled
it submits no more, drops the waiting tasks and interrupts the running ones (`ray.cancel`), and waits for them to
end, so nothing is written after the job reads `cancelled`; a running chunk also reads the job's cancel flag
between its batches. A chunk whose worker died is run again by Ray (`max_retries`); its results are keyed so
nothing is written twice.
A whole job can run as a task too (RayExecutor: the server's executor), training with `num_gpus` when asked."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from concurrent.futures import Future
from typing import Any
from urllib.parse import urlsplit

from labelloop.errors import Cancelled, InvalidInput, LabelloopError
from labelloop.jobs.batches import Chunk, get_batch_work, merge_summaries
from labelloop.jobs.registry import JobContext

log = logging.getLogger(__name__)
MAX_RETRIES = 3  # runs of a chunk after its worker died (a crash, the OOM killer, a node lost)
CONNECT_TIMEOUT = 5.0
POLL_SECONDS = 0.25
IN_FLIGHT_PER_CPU = 2  # tasks submitted per cluster CPU: every worker busy and one queued, little to drop on cancel
CANCEL_GRACE = 5.0  # seconds a cancelled task has to stop at its KeyboardInterrupt before its worker is killed
CANCEL_CHECK_SECONDS = 0.5  # a running chunk reads the job's cancel flag at most this often
_workspaces: dict[tuple[str, str, str], Any] = {}  # per worker process: one engine and blob store per workspace


def _ray():
    try:
        import ray
    except ImportError as exc:
        raise InvalidInput("LABELLOOP_EXECUTOR=ray needs Ray: pip install 'labelloop[ray]'") from exc
    return ray


def _local_options() -> dict[str, Any]:
    cpus = os.environ.get("LABELLOOP_RAY_CPUS")
    return {"num_cpus": int(cpus) if cpus and cpus.isdigit() else None, "include_dashboard": False,
            "logging_level": logging.WARNING, "log_to_driver": False}


def _check_reachable(address: str) -> None:
    """Fail fast, before anything is written, when nothing listens at the address (Ray itself would retry for a
    minute and then raise an error that does not say which setting to fix)."""
    split = urlsplit(address if "://" in address else f"ray://{address}")
    try:
        host, port = split.hostname, split.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise InvalidInput(f"LABELLOOP_RAY_ADDRESS={address!r} is not HOST:PORT (e.g. 10.0.0.5:6379), 'auto' "
                           f"or 'local'")
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        raise InvalidInput(f"cannot reach the Ray cluster at LABELLOOP_RAY_ADDRESS={address!r} ({exc.strerror or exc}); "
                           f"start it there with `ray start --head --port {port}`, or set LABELLOOP_RAY_ADDRESS to a "
                           f"running cluster (unset: this machine's cluster, or a local one started for you)") from exc


def connect(address: str | None = None) -> None:
    """Join the cluster named by `address` or LABELLOOP_RAY_ADDRESS (see the module text); a no-op when this
    process already is on one (a Ray worker, or a second call)."""
    ray = _ray()
    if ray.is_initialized():
        return
    given = (address or os.environ.get("LABELLOOP_RAY_ADDRESS") or "").strip()
    if given == "local":
        ray.init(**_local_options())
    elif given in ("", "auto"):
        try:
            ray.init(address="auto", logging_level=logging.WARNING, log_to_driver=False)
        except ConnectionError as exc:
            if given:
                raise InvalidInput("LABELLOOP_RAY_ADDRESS=auto: no Ray cluster is running on this machine; start one "
                                   "with `ray start --head`, or unset LABELLOOP_RAY_ADDRESS to have a local one "
                                   "started for you") from exc
            ray.init(**_local_options())
    else:
        _check_reachable(given)
        try:
            ray.init(address=given, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise InvalidInput(f"could not join the Ray cluster at LABELLOOP_RAY_ADDRESS={given!r}: "
                               f"{str(exc).splitlines()[0]}") from exc
    log.info("on the Ray cluster: %s", ray.cluster_resources())


def _workspace(root: str, database_url: str, blob_url: str):
    key = (root, database_url, blob_url)
    if key not in _workspaces:
        from labelloop.services.workspace import Workspace

        _workspaces[key] = Workspace.open(root, database_url=database_url, blob_url=blob_url)
    return _workspaces[key]


def _stop_when_cancelled(workspace, job_id: int):
    """A chunk's progress callback: raises Cancelled once the job was asked to stop, so a chunk that was running
    when the cancel landed (and missed the KeyboardInterrupt of `ray.cancel`) computes no further batch."""
    from labelloop.services.jobs import cancel_requested

    last = -CANCEL_CHECK_SECONDS

    def progress(done: int, total: int | None, message: str) -> None:
        nonlocal last
        if time.monotonic() - last < CANCEL_CHECK_SECONDS:
            return
        last = time.monotonic()
        if cancel_requested(workspace, job_id):
            raise Cancelled(f"job {job_id} was cancelled")

    return progress


def _chunk_task(root: str, database_url: str, blob_url: str, work: str, item_ids: tuple[int, ...],
                params: dict[str, Any], job_id: int) -> tuple[dict[str, Any], list[str]]:
    """One chunk on a worker: open the workspace, run the batch work on these ids; returns (summary, log lines)."""
    workspace = _workspace(root, database_url, blob_url)
    lines: list[str] = []
    ctx = JobContext(job_id, params, progress=_stop_when_cancelled(workspace, job_id), log=lines.append)
    ctx.progress(0, len(item_ids), "starting")  # a task that started as the job was cancelled does nothing
    summary = get_batch_work(work)(workspace, list(item_ids), params, ctx)
    return summary, lines


def _job_task(root: str, database_url: str, blob_url: str, job_id: int) -> str:
    from labelloop.services.jobs import run_job

    return run_job(_workspace(root, database_url, blob_url), job_id).state


def _remote(function, **options):
    return _ray().remote(**options)(function)


def _cause(exc: Exception) -> Exception:
    """The exception a task raised, without Ray's wrapper (a LabelloopError keeps its message for the user)."""
    return getattr(exc, "cause", None) or exc


def _in_flight(ray) -> int:
    """How many chunk tasks to keep submitted: read each time, so nodes an autoscaler adds get work too."""
    return IN_FLIGHT_PER_CPU * max(1, int(ray.cluster_resources().get("CPU", 0)))


def _stop(ray, refs: list) -> None:
    """Cancel these tasks and wait for them to end: a waiting one is dropped, a running one gets a KeyboardInterrupt,
    and one still running after CANCEL_GRACE (deep in native code) has its worker killed, so no chunk writes after
    the job has ended. Cancelled tasks are not retried."""
    for ref in refs:
        ray.cancel(ref, force=False)
    _, left = ray.wait(refs, num_returns=len(refs), timeout=CANCEL_GRACE, fetch_local=False)
    for ref in left:
        ray.cancel(ref, force=True)
    if left:
        ray.wait(left, num_returns=len(left), timeout=CANCEL_GRACE, fetch_local=False)
        log.warning("%d Ray tasks did not stop within %.0f s of the cancel; their workers were killed",
                    len(left), CANCEL_GRACE)


def run_chunks(workspace, work: str, chunks: list[Chunk], params: dict[str, Any], ctx: JobContext,
               *, message: str = "working") -> dict[str, Any]:
    """Run a batch work as Ray tasks, one per chunk, a few per cluster CPU at a time; the job's progress is the
    items of the finished chunks. Cancelling the job drops the tasks not yet run and stops the running ones."""
    connect()
    ray = _ray()
    total = sum(len(c.item_ids) for c in chunks)
    if not chunks:
        return get_batch_work(work)(workspace, [], params, ctx)
    task = _remote(_chunk_task, num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=False)
    started = time.perf_counter()
    waiting = deque(chunks)
    running: dict[Any, Chunk] = {}
    summaries: dict[int, dict[str, Any]] = {}
    lines: list[str] = []
    done = 0
    try:
        # reports (and so reads the cancel flag) before the first submit: a job cancelled while it listed its
        # items submits nothing
        ctx.progress(0, total, f"{message} on Ray: {len(chunks)} tasks")
        while waiting or running:
            window = _in_flight(ray)
            while waiting and len(running) < window:
                chunk = waiting.popleft()
                running[task.remote(str(workspace.root), workspace.database_url, workspace.blob_url, work,
                                    chunk.item_ids, params, ctx.job_id)] = chunk
            ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_SECONDS, fetch_local=True)
            for ref in ready:
                chunk = running.pop(ref)
                try:
                    summary, chunk_lines = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    raise _cause(exc) from None
                except ray.exceptions.TaskCancelledError as exc:
                    raise Cancelled(f"job {ctx.job_id}: its Ray task for chunk {chunk.index} was cancelled") from exc
                except ray.exceptions.WorkerCrashedError as exc:
                    raise LabelloopError(f"chunk {chunk.index} (items {chunk.item_ids[0]}..{chunk.item_ids[-1]}): "
                                         f"its Ray worker died {MAX_RETRIES + 1} times; see the Ray logs") from exc
                summaries[chunk.index] = summary
                lines.extend(line for line in chunk_lines if line not in lines)
                done += len(chunk.item_ids)
            finished = len(chunks) - len(waiting) - len(running)
            ctx.progress(done, total, f"{message} on Ray: {finished}/{len(chunks)} tasks")
    except BaseException:  # cancelled, a chunk failed, Ctrl-C: the other tasks stop too
        if running:
            _stop(ray, list(running))
        raise
    for line in lines:
        ctx.log(line)
    merged = merge_summaries([summaries[n] for n in sorted(summaries)])
    return {**merged, "executor": "ray", "tasks": len(chunks), "wall_seconds": round(time.perf_counter() - started, 3)}


class RayExecutor:
    """Jobs as Ray tasks (`LABELLOOP_EXECUTOR=ray` for the server): a job that fans batch work out waits on its
    chunk tasks and holds no CPU; a training job holds one CPU and `num_gpus` GPUs when its parameters ask."""

    def __init__(self, workspace):
        self.workspace = workspace
        connect()

    def submit(self, job_id: int) -> Future:
        from labelloop.services.jobs import get_job

        job = get_job(self.workspace, job_id)
        options: dict[str, Any] = {"num_cpus": 0, "max_retries": 0}  # a job is claimed once; a lost one is recovered
        if job.kind == "train":
            options.update(num_cpus=1, num_gpus=float(job.params.get("num_gpus") or 0))
        env = {name: os.environ[name] for name in ("LABELLOOP_CHUNK_ITEMS",) if name in os.environ}
        options["runtime_env"] = {"env_vars": {"LABELLOOP_EXECUTOR": "ray", **env}}
        ws = self.workspace
        return _remote(_job_task, **options).remote(str(ws.root), ws.database_url, ws.blob_url, job_id).future()

    def shutdown(self, wait: bool = True) -> None:
        return None
