"""Jobs: persistent state, progress, cancel, crash recovery and the process-pool executor."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest
from PIL import Image

from labelloop.jobs import InlineExecutor, LocalProcessExecutor, job_kind
from labelloop.services.jobs import cancel_job, create_job, get_job, list_jobs, recover_interrupted_jobs, run_job
from labelloop.services.workspace import Workspace
from labelloop.store.tables import JobRow, utcnow


@job_kind("test-count")
def _count(workspace, ctx):
    for n in range(ctx.params["steps"]):
        ctx.progress(n + 1, ctx.params["steps"], "counting")
        time.sleep(ctx.params.get("sleep", 0))
    ctx.log("counted")
    return {"counted": ctx.params["steps"]}


@job_kind("test-broken")
def _broken(workspace, ctx):
    raise ZeroDivisionError("boom")


def test_job_runs_and_keeps_result_progress_and_log(workspace):
    seen = []
    job_id = create_job(workspace, "test-count", {"steps": 3})
    assert get_job(workspace, job_id).state == "queued"
    InlineExecutor(workspace, on_progress=lambda d, t, m: seen.append((d, t))).submit(job_id)
    job = get_job(workspace, job_id)
    assert (job.state, job.result, job.done, job.total) == ("done", {"counted": 3}, 3, 3)
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert [j.id for j in list_jobs(workspace, state="done")] == [job_id]


def test_a_bug_fails_the_job_with_the_traceback_in_its_log(workspace):
    from labelloop.services.jobs import job_log

    job_id = create_job(workspace, "test-broken", {})
    assert run_job(workspace, job_id).state == "failed"
    assert "ZeroDivisionError" in get_job(workspace, job_id).error
    assert "Traceback" in job_log(workspace, job_id)


def test_cancel_a_queued_job(workspace):
    job_id = create_job(workspace, "test-count", {"steps": 1})
    assert cancel_job(workspace, job_id).state == "cancelled"
    assert run_job(workspace, job_id).state == "cancelled"  # never starts


def test_cancel_a_running_job_stops_it(workspace):
    job_id = create_job(workspace, "test-count", {"steps": 400, "sleep": 0.01})
    thread = threading.Thread(target=run_job, args=(workspace, job_id))
    thread.start()
    deadline = time.monotonic() + 10
    while get_job(workspace, job_id).state != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    cancel_job(workspace, job_id)
    thread.join(timeout=20)
    job = get_job(workspace, job_id)
    assert job.state == "cancelled"
    assert job.done < 400


def _dead_pid() -> int:
    pid = 999_999
    while True:
        try:
            import os

            os.kill(pid, 0)
            pid -= 1
        except ProcessLookupError:
            return pid
        except PermissionError:
            pid -= 1


def test_jobs_left_running_by_a_crash_are_failed_or_requeued(workspace):
    worker = f"{socket.gethostname()}:{_dead_pid()}"
    with workspace.session() as session:
        lost = JobRow(kind="import", params={}, state="running", worker=worker, started_at=utcnow(), result={}, log="", message="")
        retry = JobRow(kind="import", params={"requeue_on_crash": True}, state="running", worker=worker,
                       started_at=utcnow(), result={}, log="", message="")
        alive = JobRow(kind="import", params={}, state="running", worker=f"{socket.gethostname()}:{__import__('os').getpid()}",
                       started_at=utcnow(), result={}, log="", message="")
        session.add_all([lost, retry, alive])
    assert sorted(recover_interrupted_jobs(workspace)) == sorted([lost.id, retry.id])
    assert get_job(workspace, lost.id).state == "failed"
    assert "interrupted" in get_job(workspace, lost.id).error
    assert get_job(workspace, retry.id).state == "queued"
    assert get_job(workspace, alive.id).state == "running"


def test_a_training_job_killed_hard_leaves_its_model_failed_not_training(workspace, make_project):
    from labelloop.services.assist.models import get_model, start_model

    project = make_project("killed", "semantic", ["background", "cell"])
    with workspace.session() as session:
        job = JobRow(kind="train", params={"project": "killed", "model": "unet"}, state="running",
                     worker=f"{socket.gethostname()}:{_dead_pid()}", started_at=utcnow(), result={}, log="", message="")
        session.add(job)
        session.flush()
        job_id = job.id
    mine = start_model(workspace, project, "unet", params={"job_id": job_id}, item_ids=[])
    other = start_model(workspace, project, "unet", params={"job_id": job_id + 1000}, item_ids=[])
    assert recover_interrupted_jobs(workspace) == [job_id]
    failed = get_model(workspace, project, mine.ref, statuses=("failed",))
    assert "interrupted" in failed.metrics["stopped"]
    assert get_model(workspace, project, other.ref, statuses=("training",)).id == other.id


def test_workspace_open_recovers_crashed_jobs(tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    with ws.session() as session:
        row = JobRow(kind="export", params={}, state="running", worker=f"{socket.gethostname()}:{_dead_pid()}",
                     started_at=utcnow(), result={}, log="", message="")
        session.add(row)
    Workspace.open(tmp_path / "ws")
    assert get_job(ws, row.id).state == "failed"


def test_process_pool_executor_runs_an_import(workspace, make_project, tmp_path):
    make_project("pool", "classification", ["a"])
    folder = tmp_path / "imgs"
    folder.mkdir()
    for n in range(3):
        Image.fromarray(np.full((8, 8), n * 40, np.uint8)).save(folder / f"{n}.png")
    job_id = create_job(workspace, "import", {"project": "pool", "path": str(folder), "format": "images"})
    executor = LocalProcessExecutor(workspace, max_workers=1)
    try:
        assert executor.submit(job_id).result(timeout=120) == "done"
    finally:
        executor.shutdown()
    job = get_job(workspace, job_id)
    assert job.result["items_added"] == 3
    assert job.started_at is not None and job.finished_at is not None


def test_unknown_job_kind(workspace):
    from labelloop.errors import InvalidInput

    with pytest.raises(InvalidInput, match="unknown job kind"):
        create_job(workspace, "teleport", {})
