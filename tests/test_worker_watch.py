"""Job workers end with their server: a SIGKILL of `serve` leaves no worker behind, and a server that starts ends
the workers a dead one left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from server_support import build_team
from test_server_kill import _free_port, start_server

from labelloop.jobs.worker_watch import end_orphan_workers, is_running, records_dir, start_time
from labelloop.server import create_app
from labelloop.server.background import ThreadExecutor

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")


def _children(pid: int) -> list[tuple[int, int]]:
    """(pid, start time) of every process whose parent is `pid`, read from /proc (not from labelloop's records)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            found.append((int(stat.parent.name), int(fields[19])))
    return found


@pytest.mark.slow
def test_sigkill_of_the_server_ends_its_job_workers(workspace, tmp_path):
    team = build_team(workspace, tmp_path / "images", items=2, kind="semantic", classes=("background", "cell"))
    port = _free_port()
    server = start_server(workspace.root, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=team.auth("manager"), timeout=30) as http:
            job = http.post(f"/api/projects/{team.project_id}/predict", json={"model": "pixel-rf"}).json()
            deadline = time.monotonic() + 60
            while http.get(f"/api/jobs/{job['id']}").json()["state"] not in ("done", "failed", "cancelled"):
                assert time.monotonic() < deadline, "the job never ran"
                time.sleep(0.2)
        workers = _children(server.pid)
        assert workers, "a job ran, so the server has worker processes"
        server.send_signal(signal.SIGKILL)
        server.wait()
        deadline = time.monotonic() + 15
        while (alive := [w for w in workers if is_running(*w)]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive, f"workers still running 15 s after their server was killed: {alive}"
    finally:
        if server.poll() is None:
            server.kill()


def _record(workspace, pid: int, started: int | None, server_pid: int, server_started: int | None) -> Path:
    folder = records_dir(workspace.root)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{pid}.json"
    path.write_text(json.dumps({"pid": pid, "started": started, "server_pid": server_pid,
                                "server_started": server_started}))
    return path


def test_a_starting_server_ends_the_workers_of_a_dead_one_and_no_other_process(workspace):
    me, my_start = os.getpid(), start_time(os.getpid())
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    sibling = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        deadline = time.monotonic() + 10
        while None in (start_time(orphan.pid), start_time(sibling.pid), start_time(stranger.pid)):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # a worker whose server is gone (this pid, but another start time: the server that started it died)
        orphaned = _record(workspace, orphan.pid, start_time(orphan.pid), me, my_start - 1)
        # a worker of a server that still runs (another `serve --workers` process): left alone
        kept = _record(workspace, sibling.pid, start_time(sibling.pid), me, my_start)
        # a record whose pid now belongs to another program (other start time): never signalled, record dropped
        reused = _record(workspace, stranger.pid, start_time(stranger.pid) - 1, me, my_start - 1)
        with TestClient(create_app(workspace, executor=ThreadExecutor(workspace))):
            pass
        assert orphan.wait(timeout=10) in (-signal.SIGTERM, -signal.SIGKILL)
        assert sibling.poll() is None and stranger.poll() is None
        assert not orphaned.exists() and kept.exists() and not reused.exists()
        assert end_orphan_workers(workspace.root) == []  # nothing left to end
    finally:
        for process in (orphan, sibling, stranger):
            process.kill()
            process.wait()
