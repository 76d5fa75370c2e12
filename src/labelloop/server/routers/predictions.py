"""Predictions waiting for review, the verdict on one, and pre-labels rejected while labelling."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query, Request
from sqlalchemy import select

from labelloop.domain import CLASS_KINDS
from labelloop.errors import InvalidInput
from labelloop.server.auth import MAX_ID, Access, Principal, check_project, current_user, project_access, workspace_of
from labelloop.server.pagination import Page, PageParams, page
from labelloop.server.routers.annotations import CONFLICT, domain_shapes
from labelloop.server.schemas import DismissIn, PredictionOut, ReviewIn, VerdictOut
from labelloop.services.assist import predictions
from labelloop.services.labelling import review
from labelloop.services.assist.predictions import REVIEW_STATES
from labelloop.services.transactions import write_transaction
from labelloop.store.tables import ItemRow, PredictionRow

router = APIRouter(tags=["predictions"])


@router.get("/api/projects/{project_id}/predictions", response_model=Page[PredictionOut],
            summary="Predictions, by id; ?state=pending is the review queue (in classification projects only those "
                    "naming a class), ?item= one item's")
def list_predictions(request: Request, state: str | None = Query(None, description=", ".join(REVIEW_STATES)),
                     item: int | None = Query(None, ge=1, le=MAX_ID, description="Only this item's predictions."),
                     access: Access = Depends(project_access("view")), params: PageParams = Depends()):
    if state is not None and state not in REVIEW_STATES:
        raise InvalidInput(f"state {state!r} is not one of {', '.join(REVIEW_STATES)}")
    query = (select(PredictionRow).join(ItemRow, ItemRow.id == PredictionRow.item_id)
             .where(ItemRow.project_id == access.project.id, PredictionRow.id > params.after))
    if state:
        query = query.where(PredictionRow.review_state == state)
    if state == "pending" and access.project.kind in CLASS_KINDS:
        # a classifier's prediction with no class only ranks the item for labelling: it is no pre-label to review
        query = query.where(PredictionRow.shape_count > 0)
    if item is not None:
        query = query.where(PredictionRow.item_id == item)
    with workspace_of(request).session() as session:
        rows = list(session.scalars(query.order_by(PredictionRow.id).limit(params.limit)))
        hidden = predictions.dismissed(session, [r.id for r in rows], access.user.name)
        found = [{**review.prediction_dict(r), "dismissed": hidden.get(r.id, [])} for r in rows]
    return page(found, params, lambda p: p["id"])


@router.post("/api/predictions/{prediction_id}/dismiss", response_model=PredictionOut,
             summary="Reject pre-label shapes while labelling: hidden from you for good (annotators and reviewers)")
def dismiss_prediction(body: DismissIn, request: Request, prediction_id: int = Path(ge=1, le=MAX_ID),
                       principal: Principal = Depends(current_user)):
    """Not a verdict: the prediction stays in the review queue; only the listed shapes stop coming back for you."""
    workspace = workspace_of(request)
    access = _prediction_access(request, principal, prediction_id, "annotate", "review")  # reviewers may hide too
    with write_transaction(workspace) as session:
        hidden = predictions.dismiss(session, prediction_id, body.shapes, access.user.name)
        return {**review.prediction_dict(session.get(PredictionRow, prediction_id)), "dismissed": hidden}


@router.post("/api/predictions/{prediction_id}/review", response_model=VerdictOut, responses=CONFLICT,
             summary="Accept, edit or reject a prediction (reviewer, manager, owner)")
def review_prediction(body: ReviewIn, request: Request, prediction_id: int = Path(ge=1, le=MAX_ID),
                      principal: Principal = Depends(current_user)):
    workspace = workspace_of(request)
    access = _prediction_access(request, principal, prediction_id, "review")
    shapes = domain_shapes(body.shapes) if body.shapes is not None else None
    with write_transaction(workspace) as session:
        verdict = review.review_prediction(session, access.project, prediction_id, reviewer=access.user.name,
                                           action=body.action, shapes=shapes, base_version=body.base_version)
    return verdict.to_dict()


def _prediction_access(request: Request, principal: Principal, prediction_id: int, permission: str,
                       *alternatives: str) -> Access:
    """The project of a prediction and the caller's access to it; raises unless allowed."""
    with workspace_of(request).session() as session:
        project_id = review.prediction_project(session, prediction_id)
    return check_project(request, principal.user, project_id, permission, *alternatives)
