"""`labelloop demo`: the main job end to end on the bundled sample (SQLite and local files by default): import and
export, then the labelling loop simulated on the same images (a few masks drawn, a pixel classifier, its pre-labels
corrected with scribbles, round by round) and the expert time it saved against drawing every mask by hand."""

from __future__ import annotations

import os
import shutil
from datetime import datetime
from pathlib import Path

from rich.console import Console

SAMPLE = Path(__file__).resolve().parents[1] / "sample" / "nuclei"
PROJECT = "nuclei-sample"
LOOP_PROJECT = "nuclei-sample-semantic"


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
    run_loop(workspace, out)
    out.print("next: `labelloop stats nuclei-sample`, `labelloop export nuclei-sample OUT --format instances`, "
              "`labelloop simulate NAME --truth DIR` on your own labelled sample (docs/simulate.md)")


def _semantic_truth(folder: Path) -> Path:
    """The sample as a semantic task: images/ and masks/ (nucleus = 255) made from the instance labels."""
    import numpy as np
    from PIL import Image

    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for image in sorted((SAMPLE / "images").glob("*.png")):
        shutil.copyfile(image, folder / "images" / image.name)
        labels = np.asarray(Image.open(SAMPLE / "labels" / image.name))
        Image.fromarray(((labels > 0) * 255).astype(np.uint8)).save(folder / "masks" / image.name)
    (folder / "classes.txt").write_text("nucleus\n")
    return folder


def run_loop(workspace, out: Console) -> dict:
    """Simulate labelling the sample with labelloop (scratch copy; the projects stay as they are) and print the
    effort figure: human seconds, seconds by hand, their ratio, and the dataset's quality."""
    from labelloop.errors import Conflict
    from labelloop.services.assist.simulation import plan_simulation, run_simulation
    from labelloop.services.data.importing import import_path
    from labelloop.services.projects import create_project

    truth = _semantic_truth(workspace.root / "tmp" / "demo-truth")
    with workspace.session() as session:
        try:
            create_project(session, LOOP_PROJECT, "semantic", ["nucleus"])
        except Conflict:
            pass
    import_path(workspace, LOOP_PROJECT, truth / "images", format="images")
    figures = workspace.root / "exports" / f"{LOOP_PROJECT}-simulation-{datetime.now():%Y%m%d-%H%M%S-%f}"
    plan = plan_simulation(workspace, LOOP_PROJECT, truth, format="masks", start=2, batch=2, seeds=[0],
                           out=figures)
    result = run_simulation(workspace, plan)
    shutil.rmtree(truth, ignore_errors=True)
    (run,) = result["runs"]
    started = run["curve"][0]["human_labelled"]
    say = {"highlight": False, "soft_wrap": True}
    strokes = run["actions"].get("scribble_stroke", 0)
    out.print(f"loop: {run['pool']} images as a semantic task ({plan.model}): {started} drawn from scratch (every "
              f"nucleus outlined), then {run['rounds']} rounds of {plan.batch}: pre-labels corrected with "
              f"{strokes:.0f} scribble strokes and the rest of their wrong area, the model retrained after each round",
              **say)
    out.print(f"effort: {run['human_seconds']:.0f} s of expert time instead of {run['scratch_seconds']:.0f} s drawing "
              f"every mask by hand: effort ratio {run['effort_ratio']:.2f}x at {plan.task.quality} "
              f"{run['dataset_quality']:.3f} (cost model {plan.costs.name}; docs/simulate.md)", **say)
    out.print(f"figure: {result['files']['png']}", **say)
    return result
