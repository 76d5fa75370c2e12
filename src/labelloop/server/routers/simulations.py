"""Simulations: measure the expert time labelloop saves on a project, as a background job, and its effort figure."""

from __future__ import annotations

import shutil
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from labelloop.errors import NotFound
from labelloop.server.auth import MAX_ID, Access, project_access, workspace_of
from labelloop.server.schemas import JobOut
from labelloop.services.labelling.users import PermissionDenied

router = APIRouter(tags=["simulations"])


class SimulateIn(BaseModel):
    """`labelloop simulate`'s options (docs/simulate.md); `truth` is "labels" (the project's own labels) or a folder
    or file on the server (admins only: it reads the server's disk)."""

    truth: str = Field("labels", min_length=1, max_length=4096)
    format: str = Field("auto", max_length=32)
    model: str | None = Field(None, max_length=64)
    strategy: str | None = Field(None, max_length=64)
    compare: list[str] | None = Field(None, max_length=10)
    start: int = Field(20, ge=0, le=1_000_000)
    batch: int = Field(20, ge=1, le=1_000_000)
    rounds: int | None = Field(None, ge=1, le=10_000)
    round_budget: str = Field("2m", max_length=16)
    target_precision: float | None = Field(None, ge=0.5, lt=1)
    seeds: list[int] = Field([0], min_length=1, max_length=10)
    cost_model: dict[str, float] | None = Field(None, description="seconds per action (every action of the default "
                                                                  "model); the default model when absent")
    grid: int | None = Field(None, ge=4, le=9, description="label on grid pages of this many (4, 6 or 9) of the "
                                                           "classifier's suggestions (classification)")
    from_previous: bool = Field(False, description="each round fine-tunes the round before's model instead of "
                                                    "training anew (the detector)")
    model_params: dict[str, str | int | float | bool] | None = Field(
        None, max_length=32, description="the model kind's own options for every round's training, as `labelloop "
                                         "simulate --set key=value` (e.g. {\"calibration_folds\": 0})")


@router.post("/api/projects/{project_id}/simulate", response_model=JobOut, status_code=202,
             summary="Start a simulation of labelling the project with labelloop (a background job)")
def simulate(body: SimulateIn, request: Request, access: Access = Depends(project_access("manage"))):
    from labelloop.server.routers.models import start_job
    from labelloop.services.assist.simulation.job import export_labels_as_truth, plan_from_params, simulations_folder

    workspace = workspace_of(request)
    staging = simulations_folder(workspace) / f"staging-{uuid.uuid4().hex}"
    params: dict[str, Any] = {"project": access.project.name, **body.model_dump(exclude={"truth", "cost_model"}),
                              "seeds": ",".join(map(str, body.seeds)), "until_done": body.rounds is None}
    try:
        if body.truth == "labels":
            truth, fmt = export_labels_as_truth(workspace, access.project, staging)
            params.update(truth=str(truth), format=fmt if body.format == "auto" else body.format)
        else:
            if not access.user.is_admin:
                raise PermissionDenied("only an admin may read a truth folder on the server; "
                                       'give truth: "labels" to use the project\'s own labels')
            params["truth"] = body.truth
        if body.cost_model is not None:
            import json

            staging.mkdir(parents=True, exist_ok=True)
            (staging / "costs.json").write_text(json.dumps({"name": "request", "seconds": body.cost_model}))
            params["cost_model"] = str(staging / "costs.json")
        if staging.exists():
            params["staging"] = str(staging)  # the job removes it when it ends
        plan_from_params(workspace, params)  # every input checked here: a bad one answers 400 and runs nothing
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return start_job(request, "simulate", params, access.project.id)


@router.get("/api/projects/{project_id}/simulations/{job_id}/effort.png", response_class=FileResponse,
            summary="A finished simulation's figure: dataset quality against human time, per strategy",
            responses={200: {"content": {"image/png": {}}}})
def effort_figure(request: Request, job_id: int = Path(ge=1, le=MAX_ID),
                  access: Access = Depends(project_access("view"))):
    from labelloop.services.assist.simulation.job import effort_png
    from labelloop.services.jobs import get_job

    job = get_job(workspace_of(request), job_id)
    if job.project_id != access.project.id:
        raise NotFound(f"project {access.project.id} has no job {job_id}")
    return FileResponse(effort_png(workspace_of(request), job), media_type="image/png")

