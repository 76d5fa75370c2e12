"""Models of a project, their curves, and the train / predict jobs that make and use them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import Field, StringConstraints

from labelloop.errors import InvalidInput
from labelloop.server.auth import MAX_ID, Access, Principal, check_project, current_user, project_access, workspace_of
from labelloop.server.pagination import Page, PageParams, page
from labelloop.server.schemas import JobOut, PredictIn, Strict, TrainIn
from labelloop.services.labelling.dashboard import curves_png, model_project, model_summary
from labelloop.services.assist.effort import effort_by_model
from labelloop.services.assist.models import list_models, parse_ref

router = APIRouter(tags=["models"])


ChainEntry = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class MicroTrainIn(Strict):
    class_name: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = Field(
        None, alias="class", description="Train this class's micro-model")
    all_classes: bool = Field(False, description="Every class with at least min_examples labelled examples")
    min_examples: int | None = Field(None, ge=2, le=1_000_000,
                                     description="Labelled examples a class needs (default 5 items; 5 images "
                                                 "with a box of it for detector; 2 images for pixel-rf and unet)")
    base: Literal["classifier", "detector", "shared-detector", "pixel-rf", "unet"] | None = Field(
        None, description="classifier (classification, multi-label); detector (detection: a one-class detector per "
                          "class); shared-detector (detection: one detector for every class and a small head per "
                          "class: one detector pass per image in the chain); pixel-rf or unet (semantic: default "
                          "unet where the project has masks, else pixel-rf)")
    pseudo_labels: bool = Field(False, description="Let the chain's pending pre-labels join training as pseudo-labels "
                                                   "where the held-out score says they help")
    params: dict[str, Any] = Field(default_factory=dict, description="Model parameters, as `labelloop train --set`.")


class ChainIn(Strict):
    chain: list[ChainEntry] = Field(min_length=1, max_length=1000,
                                    description="micro:CLASS, micro:CLASS:VERSION or a model id, in order")


class ChainPredictIn(Strict):
    chain: list[ChainEntry] | None = Field(None, min_length=1, max_length=1000,
                                           description="This chain instead of the project's")
    split: Literal["train", "val", "test", "none"] | None = None
    all: bool = Field(False, description="Predict every item (default: items without annotations).")
    items: list[Annotated[int, Field(ge=1, le=2**31 - 1)]] | None = Field(None, max_length=100_000)


class ModelsPage(Page[dict[str, Any]]):
    micro_models: dict[str, Any] | None = Field(
        None, description="Per class: examples, the micro-model in use, ready or why not, held-out precision and "
                          "recall; and the project's chain (null when the project has no micro-model nor chain)")


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


@router.get("/api/projects/{project_id}/models", response_model=ModelsPage,
            summary="Trained models with parameters, metrics and a link to their curves")
def list_project_models(request: Request, access: Access = Depends(project_access("view")),
                        params: PageParams = Depends()):
    workspace = workspace_of(request)
    with workspace.session() as session:
        saved = effort_by_model(session, access.project.id)
    found = [model_summary(m, saved) for m in sorted(list_models(workspace, access.project), key=lambda m: m.id)
             if m.id > params.after]
    from labelloop.services.assist.micro import project_micro_state

    return {**page(found[: params.limit], params, lambda m: m["id"]),
            "micro_models": project_micro_state(workspace, access.project)}


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


@router.post("/api/projects/{project_id}/micro-models/train", response_model=JobOut, status_code=202,
             summary="Train micro-models: one class, or every class with enough examples (a background job)")
def train_micro_models(body: MicroTrainIn, request: Request, access: Access = Depends(project_access("manage"))):
    if (body.class_name is None) == (not body.all_classes):
        raise InvalidInput("give either class or all_classes: true")
    params = {"seed": 0, **body.params, "project": access.project.name, "all_classes": body.all_classes,
              "pseudo_labels": body.pseudo_labels}
    for name, value in (("min_examples", body.min_examples), ("base", body.base)):
        if value is not None:
            params[name] = value
    if body.class_name is not None:
        params["class"] = body.class_name
    return start_job(request, "micro-train", params, access.project.id)


@router.put("/api/projects/{project_id}/chain", response_model=dict[str, Any],
            summary="Set the project's chain of micro-models; answers each class's micro-model state")
def put_chain(body: ChainIn, request: Request, access: Access = Depends(project_access("manage"))):
    from labelloop.services.assist.micro import set_chain

    return set_chain(workspace_of(request), access.project.name, list(body.chain))


@router.post("/api/projects/{project_id}/chain/predict", response_model=JobOut, status_code=202,
             summary="Pre-label with the project's chain of micro-models, merged into one pre-label per item")
def predict_chain(body: ChainPredictIn, request: Request, access: Access = Depends(project_access("manage"))):
    params = {"project": access.project.name, "split": body.split, "all": body.all, "items": body.items}
    if body.chain is not None:
        params["chain"] = list(body.chain)
    return start_job(request, "chain-predict", params, access.project.id)
