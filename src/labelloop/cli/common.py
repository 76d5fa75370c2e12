"""What every command shares: consoles, common options, opening the workspace, running a job in the foreground."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

out = Console()
err = Console(stderr=True)

DataDir = typer.Option(None, "--data-dir", help="Workspace folder (default: $LABELLOOP_HOME or ./labelloop-data).")
JsonFlag = typer.Option(False, "--json", help="Machine-readable output.")


def open_workspace(data_dir: Optional[Path], *, create: bool = False):
    from labelloop.services.workspace import Workspace

    return Workspace.open(data_dir or os.environ.get("LABELLOOP_DATA_DIR"), create=create)


def parse_pairs(values: list[str], option: str = "--set ") -> dict[str, object]:
    """key=value pairs (`--set` of train/predict, `project set`); values parsed as JSON where they can be (numbers,
    true/false), else strings."""
    from labelloop.errors import InvalidInput

    params: dict[str, object] = {}
    for pair in values:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"{option}{pair!r}: give key=value, e.g. {option}min_size=30")
        try:
            params[key.strip()] = json.loads(value)
        except ValueError:
            params[key.strip()] = value
    return params


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def run_job_here(workspace, kind: str, params: dict[str, Any], project_id: int | None, quiet: bool):
    """Create a job and run it here with a progress bar; the job row keeps state, progress and log."""
    from labelloop.cli.progress import DelayedProgress
    from labelloop.errors import Cancelled, LabelloopError
    from labelloop.jobs import InlineExecutor
    from labelloop.services.jobs import create_job, get_job

    from labelloop.jobs.batches import executor_name

    if executor_name() == "ray":
        from labelloop.jobs.ray_runner import connect

        connect()  # an unreachable cluster fails here, before the job or any result is written
    job_id = create_job(workspace, kind, params, project_id)
    with DelayedProgress(err, enabled=not quiet) as bar:
        InlineExecutor(workspace, on_progress=bar).submit(job_id)
    job = get_job(workspace, job_id)
    if job.state == "failed":
        raise LabelloopError(job.error or "the job failed")
    if job.state == "cancelled":
        raise Cancelled(job.message)
    return job


