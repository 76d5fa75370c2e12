"""Job workers never outlive their server.

A SIGTERM of `serve` shuts its pool down, but a SIGKILL (a crash, the OOM killer, a container stop) leaves the
spawned workers running and holding the workspace. So each worker watches its parent and exits once the parent
is gone, and records itself under the workspace's `run/workers/`; a server that starts ends the recorded workers
of a server that is gone (a worker stuck where its watch cannot run). A process is known by its pid and its start
time, so a pid the system has since given to another program is never signalled.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)
POLL_SECONDS = 0.5


def start_time(pid: int) -> int | None:
    """When the process started (clock ticks since boot, from /proc), or None when it is gone (a zombie too)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: count fields after its closing parenthesis
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def is_running(pid: int, started: int | None) -> bool:
    """The process `pid` exists and is the one that started at `started` (not a later one given the same pid)."""
    now = start_time(pid)
    if now is None:
        return False
    return started is None or now == started


def records_dir(workspace_root: str | Path) -> Path:
    return Path(workspace_root) / "run" / "workers"


def watch_parent(workspace_root: str, parent_pid: int, parent_started: int | None) -> None:
    """Pool initializer: record this worker, then end it as soon as the server that spawned it is gone."""
    if os.getppid() != parent_pid:
        os._exit(0)  # the server died while this worker was starting
    folder = records_dir(workspace_root)
    folder.mkdir(parents=True, exist_ok=True)
    me = os.getpid()
    record = folder / f"{me}.json"
    record.write_text(json.dumps({"pid": me, "started": start_time(me), "server_pid": parent_pid,
                                  "server_started": parent_started}))

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(POLL_SECONDS)
        log.warning("job worker %d: its server (pid %d) is gone; exiting", me, parent_pid)
        record.unlink(missing_ok=True)
        os._exit(1)  # a job running here stays 'running' until recover_interrupted_jobs marks it failed

    threading.Thread(target=watch, name="labelloop-parent-watch", daemon=True).start()


def end_orphan_workers(workspace_root: str | Path, grace_seconds: float = 3.0) -> list[int]:
    """End the recorded workers whose server is gone; forget records of workers that already ended.
    Workers of a server still running (another `serve --workers` process) are left alone. Returns the pids ended."""
    folder = records_dir(workspace_root)
    if not folder.is_dir():
        return []
    orphans: list[tuple[int, int | None, Path]] = []
    for path in folder.glob("*.json"):
        try:
            record = json.loads(path.read_text())
            pid, started = int(record["pid"]), record.get("started")
            server_pid, server_started = int(record["server_pid"]), record.get("server_started")
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            continue
        if not is_running(pid, started):
            path.unlink(missing_ok=True)
        elif not is_running(server_pid, server_started):
            orphans.append((pid, started, path))
    for pid, _, _ in orphans:
        log.warning("ending job worker %d: the server that started it is gone", pid)
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline and any(is_running(pid, started) for pid, started, _ in orphans):
        time.sleep(0.05)
    for pid, started, path in orphans:
        if is_running(pid, started):
            _signal(pid, signal.SIGKILL)
        path.unlink(missing_ok=True)
    return [pid for pid, _, _ in orphans]


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
