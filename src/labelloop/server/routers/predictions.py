"""Predictions waiting for review, and the verdict on one."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query, Request
from sqlalchemy import select

from labelloop.errors import InvalidInput
from labelloop.server.auth import MAX_ID, Access, Principal, check_project, current_user, project_access, workspace_of
from labelloop.server.pagination import Page, PageParams, page
from labelloop.server.routers.annotations import CONFLICT, domain_shapes
from labelloop.server.schemas import PredictionOut, ReviewIn, VerdictOut
from labelloop.services import review
from labelloop.services.predictions import REVIEW_STATES
from labelloop.services.transactions import write_transaction
from labelloop.store.tables import ItemRow, PredictionRow

router = APIRouter(tags=["predictions"])


@router.get("/api/projects/{project_id}/predictions", response_model=Page[PredictionOut],
            summary="Predictions, by id; ?state=pending is the review queue")
def list_predictions(request: Request, state: str | None = Query(None, description=", ".join(REVIEW_STATES)),
                     access: Access = Depends(project_access("view")), params: PageParams = Depends()):
    if state is not None and state not in REVIEW_STATES:
        raise InvalidInput(f"state {state!r} is not one of {', '.join(REVIEW_STATES)}")
    query = (select(PredictionRow).join(ItemRow, ItemRow.id == PredictionRow.item_id)
             .where(ItemRow.project_id == access.project.id, PredictionRow.id > params.after))
    if state:
        query = query.where(PredictionRow.review_state == state)
    with workspace_of(request).session() as session:
        found = [review.prediction_dict(r) for r in session.scalars(query.order_by(PredictionRow.id).limit(params.limit))]
    return page(found, params, lambda p: p["id"])


@router.post("/api/predictions/{prediction_id}/review", response_model=VerdictOut, responses=CONFLICT,
             summary="Accept, edit or reject a prediction (reviewer, manager, owner)")
def review_prediction(body: ReviewIn, request: Request, prediction_id: int = Path(ge=1, le=MAX_ID),
                      principal: Principal = Depends(current_user)):
    workspace = workspace_of(request)
    with workspace.session() as session:
        project_id = review.prediction_project(session, prediction_id)
    access = check_project(request, principal.user, project_id, "review")
    shapes = domain_shapes(body.shapes) if body.shapes is not None else None
    with write_transaction(workspace) as session:
        verdict = review.review_prediction(session, access.project, prediction_id, reviewer=access.user.name,
                                           action=body.action, shapes=shapes, base_version=body.base_version)
    return verdict.to_dict()
