"""Durability: annotations acknowledged by the server survive a SIGKILL of it, none duplicated."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import httpx
import pytest
from server_support import build_team
from sqlalchemy import select

from labelloop.store.tables import AnnotationRow

CLIENTS = 6
KILL_AFTER = 60  # acknowledged annotations before the kill


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(data_dir, port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "labelloop.cli.main", "serve", "--data-dir", str(data_dir), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited: {process.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("the server did not start within 60 s")


@pytest.mark.slow
def test_acknowledged_annotations_survive_sigkill(workspace, tmp_path):
    team = build_team(workspace, tmp_path / "images", items=200)
    port = _free_port()
    server = start_server(workspace.root, port)
    acknowledged: list[tuple[int, int, str]] = []  # (item, version, marker)
    lock = threading.Lock()
    stop = threading.Event()

    def annotate(client_no: int) -> None:
        who = "annotator" if client_no % 2 else "annotator2"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=team.auth(who), timeout=10) as http:
            sequence = 0
            while not stop.is_set():
                try:
                    item = http.get(f"/api/projects/{team.project_id}/next").json()["item"]
                    if item is None:
                        return
                    marker = f"c{client_no}-{sequence}"
                    sequence += 1
                    shape = {"type": "box", "label": "cat", "x0": 1, "y0": 1, "x1": 9, "y1": 9,
                             "attributes": {"marker": marker}}
                    response = http.post(f"/api/items/{item['id']}/annotations",
                                         json={"shapes": [shape], "base_version": item["version"]})
                except (httpx.HTTPError, ValueError):
                    return  # the server is gone
                if response.status_code == 201:
                    with lock:
                        acknowledged.append((item["id"], response.json()["version"], marker))

    threads = [threading.Thread(target=annotate, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < KILL_AFTER and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(server.pid, signal.SIGKILL)  # mid-load: requests are in flight
    server.wait()
    stop.set()
    for t in threads:
        t.join()
    assert len(acknowledged) >= KILL_AFTER

    server = start_server(workspace.root, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=team.auth("annotator"), timeout=10) as http:
            assert http.get(f"/api/projects/{team.project_id}/next").status_code == 200  # it serves again
            item, version, _ = acknowledged[-1]
            history = http.get(f"/api/items/{item}/annotations").json()["items"]
            assert version in [revision["version"] for revision in history]
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    with workspace.session() as session:
        stored = [(item, version, shape["attributes"]["marker"]) for item, version, shapes in session.execute(
            select(AnnotationRow.item_id, AnnotationRow.version, AnnotationRow.shapes)) for shape in shapes]
    markers = Counter(marker for _, _, marker in stored)
    assert max(markers.values()) == 1  # nothing stored twice
    assert set(acknowledged) <= set(stored)  # everything acknowledged is there, as acknowledged
    assert len(stored) - len(acknowledged) <= CLIENTS  # at most the requests in flight at the kill
