"""`simulate` as a background job (the server's POST /api/projects/{id}/simulate): progress while it runs; its result
is a one-line summary and the simulation's JSON; simulation.json and the effort PNG stay under the workspace.

The truth is a folder on the server, or the project's own labels (`truth: "labels"`): they are exported in the
task's label format to a folder of the job's and read back as the truth of the items they label, so a team can ask
"what would labelloop have saved on the part we already labelled?" without handling files."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from labelloop.errors import InvalidInput, NotFound
from labelloop.jobs.registry import JobContext, job_kind

# The format a project kind's own labels are exported in to serve as the truth (one that reads back losslessly).
LABEL_FORMATS = {"classification": "folders", "detection": "coco", "semantic": "masks", "instance": "instances"}
PLAN_OPTIONS = ("format", "model", "strategy", "compare", "start", "batch", "until_done", "rounds", "round_budget",
                "target_precision", "seeds", "cost_model", "model_params", "grid", "from_previous")


def simulations_folder(workspace) -> Path:
    return Path(workspace.root) / "simulations"


def job_folder(workspace, job_id: int) -> Path:
    return simulations_folder(workspace) / f"job-{job_id}"


def export_labels_as_truth(workspace, project, folder: Path) -> tuple[Path, str]:
    """The project's labels in its kind's label format under `folder`; returns (path, format)."""
    from labelloop.services.data.exporting import export_project

    fmt = LABEL_FORMATS.get(project.kind.value)
    if fmt is None:
        raise InvalidInput(f"simulate cannot use the labels of a {project.kind.value} project as the truth")
    target = folder / "truth"
    summary = export_project(workspace, project.name, target, format=fmt, images=True)
    if not summary.items:
        raise InvalidInput(f"project {project.name!r} has no labels to use as the truth; label some items first, or "
                           "give the truth as a folder")
    return target, fmt


def plan_from_params(workspace, params: dict[str, Any]):
    """The checked plan of a job's parameters (raises InvalidInput, changing nothing, on bad ones)."""
    from labelloop.services.assist.simulation import plan_simulation

    options = {k: params[k] for k in PLAN_OPTIONS if params.get(k) is not None}
    return plan_simulation(workspace, params["project"], params["truth"], out=params.get("out"), **options)


@job_kind("simulate")
def simulate_job(workspace, ctx: JobContext) -> dict[str, Any]:
    from labelloop.services.assist.simulation import run_simulation

    params = dict(ctx.params)
    folder = job_folder(workspace, ctx.job_id)
    params["out"] = str(folder)
    try:
        plan = plan_from_params(workspace, params)
        result = run_simulation(workspace, plan, progress=ctx.progress)
    finally:
        if params.get("staging"):  # the exported labels and request's cost model, made for this job only
            shutil.rmtree(params["staging"], ignore_errors=True)
    best_name = result["summary"]["best_by_effort_ratio"]
    best = result["summary"]["strategies"][best_name]
    ratio = (best.get("effort_ratio") or {}).get("mean")
    human, scratch = best["human_seconds"]["mean"], best["scratch_seconds"]["mean"]
    line = (f"{best_name}: {human:.0f} s of human time vs {scratch:.0f} s by hand, effort ratio {ratio:.2f}x"
            if ratio else "no effort figure: no human time was spent")
    ctx.log(line)
    # The job list shows `summary` as words; the simulation's JSON (as `labelloop simulate --json` prints it) follows.
    return {"summary": line, "simulation": result}


def effort_png(workspace, job) -> Path:
    """The PNG a finished simulate job wrote (dataset quality against human time)."""
    if job.kind != "simulate":
        raise NotFound(f"job {job.id} is a {job.kind} job, not a simulation")
    if job.state != "done":
        raise NotFound(f"simulation job {job.id} is {job.state}; its figure exists once it is done")
    path = job_folder(workspace, job.id) / "simulation.png"
    if not path.is_file():
        raise NotFound(f"simulation job {job.id} left no figure (its folder {path.parent} was removed)")
    return path
