"""Items: upload, list, show, picture; the work queue (next, skip)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile

from labelloop.errors import InvalidInput
from labelloop.server.auth import (Access, DeferredAccess, ItemAccess, deferred_project_access, item_access,
                                   project_access, workspace_of)
from labelloop.server.pagination import Page, PageParams, page
from labelloop.server.schemas import ItemDetail, ItemOut, NextOut
from labelloop.services.labelling import annotations, queue
from labelloop.services.data import items
from labelloop.services.transactions import write_transaction
from labelloop.services.labelling.annotations import AnnotationInfo

router = APIRouter(tags=["items"])


def independent(access: Access) -> bool:
    """Annotators of an overlap project work blind: each sees and builds on only their own revisions."""
    return queue.overlap(access.project) > 1 and access.role == "annotator"


def own_view(session, access: Access, item_id: int) -> tuple[AnnotationInfo | None, int]:
    """(the revision this user should see, the base_version their next save should name)."""
    if independent(access):
        row = annotations.latest_by_author(session, item_id, access.user.name)
        return (annotations.to_info(row) if row else None), (row.version if row else 0)
    row = annotations.latest(session, item_id, include_drafts=True)
    return (annotations.to_info(row) if row else None), (row.version if row else 0)


@router.post("/api/projects/{project_id}/items", status_code=201, response_model=dict[str, Any],
             summary="Upload images (multipart field 'files'); all or nothing")
def upload(request: Request, files: list[UploadFile] = File(..., description="Image files"),
           split: str | None = Form(None, max_length=8),
           skip_bad: bool = Form(False, description="Import the readable files; list the others in `skipped`"),
           access: Access = Depends(project_access("manage"))):
    report = items.upload_items(workspace_of(request), access.project.name,
                                ((f.filename or "upload", f.file) for f in files), split=split, author=access.user.name,
                                skip_bad=skip_bad)
    return report.to_dict()


@router.get("/api/projects/{project_id}/items", response_model=Page[ItemOut], summary="A page of items, by id")
def list_items(request: Request, state: str | None = Query(None, description="unlabelled, submitted or accepted"),
               access: Access = Depends(project_access("view")), params: PageParams = Depends()):
    with workspace_of(request).session() as session:
        found = items.list_items(session, access.project.id, after=params.after, limit=params.limit, state=state)
    return page(found, params, lambda i: i["id"])


@router.get("/api/items/{item_id}", response_model=ItemDetail, summary="One item with what to show and the base version")
def show(request: Request, target: ItemAccess = Depends(item_access("view"))):
    access, row = target.access, target.item
    with workspace_of(request).session() as session:
        shown, base = own_view(session, access, row.id)
        described = items.describe(session, row.id)
    return {"item": described, "annotation": shown.to_dict() if shown else None, "base_version": base,
            "image_levels": items.levels(row)}


@router.get("/api/items/{item_id}/image", response_class=Response, summary="The picture as PNG",
            responses={200: {"content": {"image/png": {}}}})
def image(request: Request,
          level: int = Query(0, ge=0, le=40, description="0: full size; each level halves both sides"),
          window_centre: float | None = Query(None, allow_inf_nan=False, ge=-1e12, le=1e12),
          window_width: float | None = Query(None, allow_inf_nan=False, gt=0, le=1e12),
          tile_x: int | None = Query(None, ge=0, le=1_000_000, description="512-pixel tile column at this level"),
          tile_y: int | None = Query(None, ge=0, le=1_000_000),
          target: ItemAccess = Depends(item_access("view"))):
    row = target.item
    if (window_centre is None) != (window_width is None):
        raise InvalidInput("give both window_centre and window_width, or neither")
    if (tile_x is None) != (tile_y is None):
        raise InvalidInput("give both tile_x and tile_y, or neither")
    window = (window_centre, window_width) if window_centre is not None else None
    tile = (tile_x, tile_y) if tile_x is not None else None
    png = items.render_item(workspace_of(request), row, level=level, window=window, tile=tile)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.get("/api/projects/{project_id}/next", response_model=NextOut,
            summary="The next item for you, leased to you until lease_expires_at")
def next_item(request: Request, deferred: DeferredAccess = Depends(deferred_project_access("annotate"))):
    with write_transaction(workspace_of(request)) as session:
        access = deferred.project(session.connection())
        lease = queue.claim_next(session, access.project, access.user.id)
        if lease is None:
            return {"item": None, "message": "nothing left to label in this project for you"}
        described = items.describe(session, lease.item_id)
        shown, base = own_view(session, access, lease.item_id) if described["version"] else (None, 0)
    return {"item": described, "annotation": shown.to_dict() if shown else None, "base_version": base,
            "lease_expires_at": lease.expires_at.isoformat()}


@router.post("/api/items/{item_id}/skip", response_model=dict[str, Any],
             summary="Pass on an item: it goes to someone else and never comes back to you")
def skip(request: Request, target: ItemAccess = Depends(item_access("annotate"))):
    access, item_id = target.access, target.item.id
    queue.skip(workspace_of(request), access.project, item_id, access.user.id)
    return {"skipped": item_id}
