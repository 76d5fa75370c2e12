"""Jobs: persistent state, progress, log and cancel for long work; import and export job kinds."""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from labelloop.errors import Cancelled, InvalidInput, LabelloopError, NotFound
from labelloop.extras import missing_extra
from labelloop.jobs.registry import JobContext, get_job_kind, job_kind
from labelloop.store.tables import JobRow, ModelRow, utcnow

log = logging.getLogger(__name__)
STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL = ("done", "failed", "cancelled")
WRITE_EVERY = 0.5  # seconds between progress writes to the database
STALE_AFTER = timedelta(minutes=10)  # a job on another host without a heartbeat for this long is lost
LOG_LIMIT = 100_000


@dataclass
class JobInfo:
    id: int
    kind: str
    state: str
    project_id: int | None
    done: int
    total: int | None
    message: str
    error: str | None
    result: dict[str, Any]
    params: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("created_at", "started_at", "finished_at"):
            data[key] = data[key].isoformat() if data[key] else None
        return data


def _info(row: JobRow) -> JobInfo:
    return JobInfo(row.id, row.kind, row.state, row.project_id, row.done, row.total, row.message, row.error,
                   dict(row.result or {}), dict(row.params or {}), row.created_at, row.started_at, row.finished_at)


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _register_job_kinds() -> None:
    """Modules whose job kinds register on import (import and export are below, in this module)."""
    from labelloop.services.assist import datasets, embeddings, jobs, micro  # noqa: F401
    from labelloop.services.data import object_import  # noqa: F401  (batch work object-check)
    from labelloop.services.assist.simulation import job as simulation_job  # noqa: F401
    from labelloop.services.quality import job as quality_job  # noqa: F401


def create_job(workspace, kind: str, params: dict[str, Any], project_id: int | None = None) -> int:
    _register_job_kinds()
    get_job_kind(kind)  # fail early on an unknown kind
    with workspace.session() as session:
        row = JobRow(kind=kind, params=params, project_id=project_id, state="queued", result={}, log="", message="")
        session.add(row)
        session.flush()
        return row.id


def get_job(workspace, job_id: int) -> JobInfo:
    with workspace.session() as session:
        row = session.get(JobRow, job_id)
        if row is None:
            raise NotFound(f"no job {job_id}")
        return _info(row)


def job_log(workspace, job_id: int) -> str:
    with workspace.session() as session:
        row = session.get(JobRow, job_id)
        if row is None:
            raise NotFound(f"no job {job_id}")
        return row.log


def list_jobs(workspace, *, state: str | None = None, limit: int = 50) -> list[JobInfo]:
    query = select(JobRow).order_by(JobRow.id.desc()).limit(limit)
    if state:
        if state not in STATES:
            raise InvalidInput(f"job state {state!r} is not one of {', '.join(STATES)}")
        query = query.where(JobRow.state == state)
    with workspace.session() as session:
        return [_info(r) for r in session.scalars(query)]


def cancel_job(workspace, job_id: int) -> JobInfo:
    """A queued job is cancelled at once; a running one stops at its next progress report."""
    with workspace.session() as session:
        row = session.get(JobRow, job_id, with_for_update=True)
        if row is None:
            raise NotFound(f"no job {job_id}")
        if row.state in FINAL:
            raise InvalidInput(f"job {job_id} has already ended ({row.state})")
        row.cancel_requested = True
        if row.state == "queued":
            row.state, row.finished_at, row.message = "cancelled", utcnow(), "cancelled before it started"
        return _info(row)


def cancel_requested(workspace, job_id: int) -> bool:
    """Whether the job was asked to stop (a Ray chunk task reads it between its batches)."""
    with workspace.session() as session:
        return bool(session.scalar(select(JobRow.cancel_requested).where(JobRow.id == job_id)))


class _Reporter:
    """Throttled progress writes; raises Cancelled when the job was asked to stop."""

    def __init__(self, workspace, job_id: int, on_progress):
        self.workspace, self.job_id, self.on_progress = workspace, job_id, on_progress
        self.last_write = 0.0
        self.lines: list[str] = []

    def progress(self, done: int, total: int | None, message: str) -> None:
        if self.on_progress:
            self.on_progress(done, total, message)
        now = time.monotonic()
        if now - self.last_write < WRITE_EVERY and (total is None or done < total):
            return
        self.last_write = now
        with self.workspace.session() as session:
            session.execute(update(JobRow).where(JobRow.id == self.job_id).values(
                done=done, total=total, message=message, heartbeat_at=utcnow()))
            cancelled = session.scalar(select(JobRow.cancel_requested).where(JobRow.id == self.job_id))
        if cancelled:
            raise Cancelled(f"job {self.job_id} was cancelled")

    def log(self, line: str) -> None:
        log.info("job %s: %s", self.job_id, line)
        self.lines.append(f"{utcnow().isoformat(timespec='seconds')} {line}")


def run_job(workspace, job_id: int, on_progress=None) -> JobInfo:
    """Claim a queued job and run it here; the final state is always written, whatever happens."""
    from labelloop.ml.allocator import keep_freed_memory

    keep_freed_memory()  # in every process a job runs in (CLI, spawned workers, Ray): training steps 0.8x the time
    with workspace.session() as session:
        claimed = session.execute(
            update(JobRow).where(JobRow.id == job_id, JobRow.state == "queued")
            .values(state="running", started_at=utcnow(), heartbeat_at=utcnow(), worker=_worker_id())
        ).rowcount
        row = session.get(JobRow, job_id)
        if row is None:
            raise NotFound(f"no job {job_id}")
        if not claimed:
            return _info(row)
        kind, params = row.kind, dict(row.params)
    _register_job_kinds()
    reporter = _Reporter(workspace, job_id, on_progress)
    values: dict[str, Any]
    try:
        result = get_job_kind(kind)(workspace, JobContext(job_id, params, reporter.progress, reporter.log))
        # a job kind may sum its outcome up in words ("6 pre-labels; bees: too few held-out examples"): the job
        # list shows it where the user is, instead of a bare "done"
        values = {"state": "done", "result": result or {}, "message": (result or {}).get("summary") or "done"}
    except Cancelled as exc:
        values = {"state": "cancelled", "message": str(exc)}
    except KeyboardInterrupt:
        values = {"state": "cancelled", "message": "interrupted (Ctrl-C)"}
        _finish(workspace, job_id, reporter, values)
        raise
    except LabelloopError as exc:
        values = {"state": "failed", "error": str(exc), "message": str(exc).splitlines()[0]}
    except Exception as exc:  # a bug (keep the traceback in the job's log), or an extra that is not installed
        if (missing := missing_extra(exc)) is not None:
            values = {"state": "failed", "error": str(missing), "message": str(missing)}
        else:
            reporter.lines.append(traceback.format_exc())
            values = {"state": "failed", "error": f"internal error: {exc!r}", "message": "internal error"}
    return _finish(workspace, job_id, reporter, values)


def _finish(workspace, job_id: int, reporter: _Reporter, values: dict[str, Any]) -> JobInfo:
    with workspace.session() as session:
        row = session.get(JobRow, job_id)
        row.log = (row.log + "\n".join(reporter.lines) + ("\n" if reporter.lines else ""))[-LOG_LIMIT:]
        for key, value in values.items():
            setattr(row, key, value)
        row.finished_at, row.worker = utcnow(), None
        return _info(row)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_interrupted_jobs(workspace) -> list[int]:
    """Jobs left `running` by a crash: re-queued when their kind is safe to repeat, else failed with the reason."""
    host = socket.gethostname()
    recovered = []
    with workspace.session() as session:
        for row in session.scalars(select(JobRow).where(JobRow.state == "running").with_for_update()):
            worker_host, _, pid = (row.worker or ":").rpartition(":")
            if worker_host == host and pid.isdigit():
                lost = not _pid_alive(int(pid))
            else:
                beat = row.heartbeat_at or row.started_at
                if beat is not None and beat.tzinfo is None:
                    beat = beat.replace(tzinfo=utcnow().tzinfo)
                lost = beat is None or utcnow() - beat > STALE_AFTER
            if not lost:
                continue
            reason = f"interrupted: the process running it ({row.worker or 'unknown'}) is gone"
            if row.params.get("requeue_on_crash"):
                row.state, row.message, row.worker = "queued", f"re-queued; {reason}", None
            else:
                row.state, row.error, row.message, row.finished_at, row.worker = "failed", reason, reason, utcnow(), None
                if row.kind == "train":
                    _fail_models_of(session, row.id, reason)
            recovered.append(row.id)
    return recovered


def _fail_models_of(session, job_id: int, reason: str) -> None:
    """A training job killed hard leaves its reserved Model version `training`: mark it `failed` (a failed version
    with a checkpoint stays resumable with --resume, one without is just a record of the attempt)."""
    for model in session.scalars(select(ModelRow).where(ModelRow.status == "training")):
        if (model.params or {}).get("job_id") == job_id:
            model.status = "failed"
            model.metrics = {**(model.metrics or {}), "stopped": reason}


@job_kind("import")
def _import_job(workspace, ctx: JobContext) -> dict[str, Any]:
    from labelloop.services.data.importing import import_path
    from labelloop.services.data.object_import import import_objects, is_object_url

    p = ctx.params
    if p.get("by_reference") or is_object_url(p["path"]):  # s3://bucket/prefix (services/data/object_import.py)
        if p.get("format", "auto") not in ("auto", "images"):
            raise InvalidInput(f"{p['path']}: from an object store only plain images are imported (--format images)")
        report = import_objects(workspace, p["project"], p["path"], by_reference=bool(p.get("by_reference")),
                                split=p.get("split"), skip_bad=p.get("skip_bad", False), ctx=ctx)
    else:
        report = import_path(workspace, p["project"], p["path"], format=p.get("format", "auto"),
                             split=p.get("split"), skip_bad=p.get("skip_bad", False), progress=ctx.progress)
    ctx.log(f"imported {report.items_added} items, {report.annotations_added} annotations from {p['path']}")
    for line in report.skipped:
        ctx.log(f"skipped {line}")
    from labelloop.services.assist.prelabels import retrain_after_import  # retrain every K new labels (issue 5)

    retrained = retrain_after_import(workspace, p["project"], ctx.progress) if report.annotations_added else None
    return {**report.to_dict(), **({"retrained": retrained} if retrained else {})}


@job_kind("export")
def _export_job(workspace, ctx: JobContext) -> dict[str, Any]:
    from labelloop.services.data.exporting import export_project

    p = ctx.params
    summary = export_project(workspace, p["project"], p["out"], format=p["format"],
                             include=p.get("include", "annotations"), images=p.get("images", True),
                             unlabelled=p.get("unlabelled", False), scores=p.get("scores", False),
                             exclude_duplicates=p.get("exclude_duplicates", False),
                             progress=ctx.progress)
    line = f"exported {summary.items} items, {summary.shapes} shapes to {p['out']}"
    if summary.left_out:
        line += f"; left out (no label): {', '.join(f'{n} {why}' for why, n in summary.left_out.items())}"
    ctx.log(line)
    return {"out": p["out"], "format": p["format"], **asdict(summary), "summary": line}
