"""Live pixel classifier for the labelling view: the scribbles being painted retrain a small forest on the
project's stored scribbles plus these, and the item's predicted classes come back as a colour overlay (PNG).

One `LiveSegmenter` per project and server process keeps the features of recently seen items in memory (a
cache only: losing it costs one feature computation); nothing is stored, the UI saves scribbles as annotations."""

from __future__ import annotations

import threading

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from pydantic import Field

from labelloop import media
from labelloop.domain import ProjectKind, shape_from_dict
from labelloop.errors import InvalidInput
from labelloop.geometry import rle
from labelloop.server.auth import ItemId, Principal, check_item, current_user, workspace_of
from labelloop.server.schemas import ScribbleShape, Strict

router = APIRouter(tags=["live"])
OVERLAY_ALPHA = 140
_segmenters: dict[tuple[int, int], object] = {}
_lock = threading.Lock()


class LiveIn(Strict):
    scribbles: list[ScribbleShape] = Field(max_length=1000, description="This item's scribbles as painted now")


def _segmenter(request: Request, project):
    from labelloop.services.assist.live import LiveSegmenter

    key = (id(request.app), project.id)
    with _lock:
        found = _segmenters.get(key)
        if found is None:
            found = _segmenters[key] = LiveSegmenter(workspace_of(request), project.name)
        return found


def overlay(values: np.ndarray, project) -> np.ndarray:
    """RGBA picture of predicted classes; a class named `background` stays transparent."""
    rgba = np.zeros((*values.shape, 4), np.uint8)
    for cls in project.classes:
        if cls.name == "background":
            continue
        colour = [int(cls.colour[i:i + 2], 16) for i in (1, 3, 5)]
        rgba[values == cls.index] = (*colour, OVERLAY_ALPHA)
    return rgba


@router.post("/api/items/{item_id}/live", response_class=Response, summary="Retrain on scribbles, predict this item",
             responses={200: {"content": {"image/png": {}}}})
def live(body: LiveIn, request: Request, item_id: int = ItemId, principal: Principal = Depends(current_user)):
    access, row = check_item(request, principal.user, item_id, "annotate")
    if access.project.kind is not ProjectKind.semantic:
        raise InvalidInput("live prediction needs a semantic project (scribbles -> pixel classifier)")
    names = set(access.project.class_names())
    for stroke in body.scribbles:
        if tuple(stroke.size) != (row.height, row.width):
            raise InvalidInput(f"scribble is {stroke.size[1]}×{stroke.size[0]} but the image is {row.width}×{row.height}")
        if stroke.label not in names:
            raise InvalidInput(f"class '{stroke.label}' is not in the project's classes ({', '.join(sorted(names))})")
        try:
            rle.check_counts(stroke.size, stroke.counts)
        except ValueError as exc:
            raise InvalidInput(f"scribble '{stroke.label}': malformed RLE: {exc}") from None
    strokes = [shape_from_dict(s.model_dump()) for s in body.scribbles]
    try:
        values, _ = _segmenter(request, access.project).update(item_id, strokes)
    except ValueError as exc:  # e.g. one class scribbled so far: a forest needs two
        raise InvalidInput(f"cannot train on these scribbles yet: {exc}") from None
    return Response(media.encode_png(overlay(values, access.project)), media_type="image/png",
                    headers={"Cache-Control": "no-store"})
