"""Annotation revisions of an item (read all, append one) and the review of submitted annotations."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select

from labelloop.domain import shape_from_dict
from labelloop.server.auth import (Access, DeferredAccess, ItemAccess, deferred_item_access, item_access,
                                   project_access, workspace_of)
from labelloop.server.pagination import Page, PageParams, page
from labelloop.server.routers.items import independent
from labelloop.server.schemas import AnnotationIn, AnnotationOut, AnnotationReviewIn, ErrorOut, VerdictOut
from labelloop.services.labelling import annotations, queue, review
from labelloop.services.transactions import write_transaction
from labelloop.store.tables import AnnotationRow

router = APIRouter(tags=["annotations"])
CONFLICT = {409: {"model": ErrorOut, "description": "Your base_version is stale; `current` is the newest revision"}}


def domain_shapes(shapes) -> list:
    return [shape_from_dict(s.model_dump()) for s in shapes]


@router.get("/api/items/{item_id}/annotations", response_model=Page[AnnotationOut],
            summary="Every revision of the item, oldest first (annotators of overlap projects: their own)")
def history(request: Request, target: ItemAccess = Depends(item_access("view")), params: PageParams = Depends()):
    access, item_id = target.access, target.item.id
    query = select(AnnotationRow).where(AnnotationRow.item_id == item_id, AnnotationRow.version > params.after)
    if independent(access):
        query = query.where(AnnotationRow.author == access.user.name)
    with workspace_of(request).session() as session:
        rows = session.scalars(query.order_by(AnnotationRow.version).limit(params.limit)).all()
        found = [annotations.to_info(r).to_dict() for r in rows]
    return page(found, params, lambda a: a["version"])


@router.post("/api/items/{item_id}/annotations", response_model=AnnotationOut, status_code=201, responses=CONFLICT,
             summary="Save a revision (draft or submitted); committed before the answer")
def save(body: AnnotationIn, request: Request, deferred: DeferredAccess = Depends(deferred_item_access("annotate"))):
    shapes = domain_shapes(body.shapes)
    with write_transaction(workspace_of(request)) as session:
        target = deferred.item(session.connection())
        access, item_id = target.access, target.item.id
        saved = annotations.save(session, access.project, item_id, shapes, author=access.user.name,
                                 base_version=body.base_version, state=body.state, per_author=independent(access))
        if body.state == "submitted":
            queue.mark_done(session, access.project, item_id, access.user.id)
        else:
            queue.renew(session, access.project, item_id, access.user.id)
    return saved.to_dict()


@router.get("/api/projects/{project_id}/review", response_model=Page[AnnotationOut],
            summary="Review queue: submitted annotations without a verdict, by item id")
def review_queue(request: Request, access: Access = Depends(project_access("review")), params: PageParams = Depends()):
    with workspace_of(request).session() as session:
        rows = review.pending_annotations(session, access.project.id, after=params.after, limit=params.limit)
        found = [annotations.to_info(r).to_dict() for r in rows]
    return page(found, params, lambda a: a["item_id"])


@router.post("/api/items/{item_id}/review", response_model=VerdictOut, responses=CONFLICT,
             summary="Accept, edit or reject the item's submitted annotation (reviewer, manager, owner)")
def review_annotation(body: AnnotationReviewIn, request: Request, target: ItemAccess = Depends(item_access("review"))):
    access, item_id = target.access, target.item.id
    shapes = domain_shapes(body.shapes) if body.shapes is not None else None
    with write_transaction(workspace_of(request)) as session:
        verdict = review.review_annotation(session, access.project, item_id, body.version, reviewer=access.user.name,
                                           action=body.action, shapes=shapes, comment=body.comment)
    return verdict.to_dict()
