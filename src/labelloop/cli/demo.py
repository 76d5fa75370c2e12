"""`labelloop demo`: the main job end to end on the bundled sample (SQLite and local files by default)."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from rich.console import Console

SAMPLE = Path(__file__).resolve().parents[1] / "sample" / "nuclei"
PROJECT = "nuclei-sample"


def run_demo(data_dir: Path | None, out: Console, err: Console) -> None:
    from labelloop.cli.common import run_job_here
    from labelloop.errors import Conflict
    from labelloop.services.projects import create_project, get_project
    from labelloop.services.data.stats import project_stats
    from labelloop.services.workspace import Workspace

    workspace = Workspace.open(data_dir or os.environ.get("LABELLOOP_DATA_DIR"), create=True)
    out.print(f"workspace: {workspace.root} ({workspace.backend})")
    with workspace.session() as session:
        try:
            create_project(session, PROJECT, "instance", ["nucleus"])
        except Conflict:
            pass
    with workspace.session() as session:
        project = get_project(session, PROJECT)
    job = run_job_here(workspace, "import", {"project": PROJECT, "path": str(SAMPLE), "format": "instances"}, project.id, quiet=False)
    report = job.result
    out.print(f"import: {report['items_added']} new items ({report['items_existing']} already there), "
              f"{report['annotations_added']} annotations from {report['files']} files")
    target = workspace.root / "exports" / f"{PROJECT}-coco-{datetime.now():%Y%m%d-%H%M%S-%f}"
    job = run_job_here(workspace, "export", {"project": PROJECT, "out": str(target), "format": "coco"}, project.id, quiet=False)
    out.print(f"export: {job.result['items']} images and {job.result['shapes']} objects as COCO in {target}")
    stats = project_stats(workspace, PROJECT)
    out.print(f"project {PROJECT!r}: {stats['items']} items, {stats['annotated_items']} annotated, "
              f"{stats['shapes_per_class'].get('nucleus', 0)} nuclei")
    out.print("next: `labelloop stats nuclei-sample`, `labelloop export nuclei-sample OUT --format instances`")
