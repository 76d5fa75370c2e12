"""Models of a project, their curves, and the train / predict jobs that make and use them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Request, Response

from labelloop.errors import InvalidInput
from labelloop.server.auth import MAX_ID, Access, Principal, check_project, current_user, project_access, workspace_of
from labelloop.server.pagination import Page, PageParams, page
from labelloop.server.schemas import JobOut, PredictIn, TrainIn
from labelloop.services.labelling.dashboard import curves_png, model_project, model_summary
from labelloop.services.assist.effort import effort_by_model
from labelloop.services.assist.models import list_models, parse_ref

router = APIRouter(tags=["models"])


def _check_model_kind(access: Access, ref: str) -> None:
    from labelloop.services.assist.model_kinds import get_model_kind

    kind = get_model_kind(parse_ref(ref)[0])
    if access.project.kind not in kind.project_kinds:
        raise InvalidInput(f"model {kind.name!r} serves {', '.join(k.value for k in kind.project_kinds)} projects; "
                           f"this is a {access.project.kind.value} project")


def start_job(request: Request, kind: str, params: dict[str, Any], project_id: int | None) -> dict[str, Any]:
    """Record the job, hand it to the executor, answer at once: the client polls GET /api/jobs/{id}."""
    from labelloop.services.jobs import create_job, get_job

    workspace = workspace_of(request)
    job_id = create_job(workspace, kind, params, project_id)
    request.app.state.executor.submit(job_id)
    return get_job(workspace, job_id).to_dict()


@router.get("/api/projects/{project_id}/models", response_model=Page[dict[str, Any]],
            summary="Trained models with parameters, metrics and a link to their curves")
def list_project_models(request: Request, access: Access = Depends(project_access("view")),
                        params: PageParams = Depends()):
    workspace = workspace_of(request)
    with workspace.session() as session:
        saved = effort_by_model(session, access.project.id)
    found = [model_summary(m, saved) for m in sorted(list_models(workspace, access.project), key=lambda m: m.id)
             if m.id > params.after]
    return page(found[: params.limit], params, lambda m: m["id"])


@router.get("/api/models/{model_id}/curves.png", response_class=Response, summary="A model's training curves as PNG",
            responses={200: {"content": {"image/png": {}}}})
def curves(request: Request, model_id: int = Path(ge=1, le=MAX_ID), principal: Principal = Depends(current_user)):
    check_project(request, principal.user, model_project(workspace_of(request), model_id), "view")
    return Response(curves_png(workspace_of(request), model_id), media_type="image/png")


@router.post("/api/projects/{project_id}/train", response_model=JobOut, status_code=202,
             summary="Start training a model (a background job)")
def train(body: TrainIn, request: Request, access: Access = Depends(project_access("manage"))):
    _check_model_kind(access, body.model)
    params = {"seed": 0, **body.params, "project": access.project.name, "model": body.model}
    return start_job(request, "train", params, access.project.id)


@router.post("/api/projects/{project_id}/predict", response_model=JobOut, status_code=202,
             summary="Start predicting items with a trained model (a background job)")
def predict(body: PredictIn, request: Request, access: Access = Depends(project_access("manage"))):
    _check_model_kind(access, body.model)
    params = {**body.params, "project": access.project.name, "model": body.model, "split": body.split,
              "all": body.all, "items": body.items}
    return start_job(request, "predict", params, access.project.id)
