"""The effort a reviewed prediction saved: of the pre-labels shown, how many the person accepted as they were,
adjusted (and by what IoU), or rejected, and how many shapes they added that the model missed. The share accepted
unedited, per model version, is the product's own measure of effort saved."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from labelloop.domain import Shape, shape_to_dict
from labelloop.store.tables import ItemRow, PredictionRow


def is_prelabel(shape: dict[str, Any]) -> bool:
    """Shown as a pre-label (a detector keeps its boxes under the calibrated threshold as predictions only)."""
    return (shape.get("attributes") or {}).get("prelabel") is not False


def _geometry(shape: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in shape.items() if k not in ("attributes", "score")}


def _box_iou(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    if a.get("type") != "box" or b.get("type") != "box":
        return None
    w = min(a["x1"], b["x1"]) - max(a["x0"], b["x0"])
    h = min(a["y1"], b["y1"]) - max(a["y0"], b["y0"])
    inter = max(w, 0) * max(h, 0)
    union = (a["x1"] - a["x0"]) * (a["y1"] - a["y0"]) + (b["x1"] - b["x0"]) * (b["y1"] - b["y0"]) - inter
    return inter / union if union > 0 else 0.0


def review_effort(prediction_id: int, predicted: Sequence[dict[str, Any]], before: Sequence[dict[str, Any]],
                  after: Sequence[Shape] | None) -> dict[str, Any]:
    """Compare the pre-labels of a prediction with the annotation the review wrote (`after`, None when rejected);
    `before` is the annotation the reviewer started from (its shapes are not counted as added)."""
    written = [shape_to_dict(s) for s in after or []]
    shown = {i: s for i, s in enumerate(predicted) if is_prelabel(s)}
    taken: dict[int, dict[str, Any]] = {}
    added = 0
    existing = [_geometry(s) for s in before]
    for shape in written:
        origin = str((shape.get("attributes") or {}).get("prediction", ""))
        source, _, index = origin.partition(":")
        if source == str(prediction_id) and index.isdigit() and int(index) in shown:
            taken[int(index)] = shape
        elif _geometry(shape) not in existing and shape.get("type") != "scribble":
            added += 1
    accepted, adjusted, ious = 0, 0, []
    for index, shape in shown.items():
        if index not in taken:
            continue
        if _geometry(taken[index]) == _geometry(shape):
            accepted += 1
        else:
            adjusted += 1
            iou = _box_iou(shape, taken[index])
            if iou is not None:
                ious.append(round(iou, 4))
    return {"shown": len(shown), "accepted": accepted, "adjusted": adjusted,
            "rejected": len(shown) - accepted - adjusted, "added": added, "adjusted_iou": ious}


def effort_by_model(session: Session, project_id: int) -> dict[int, dict[str, Any]]:
    """Per model (id): the reviewed predictions' effort added up, with the share of pre-labels accepted unedited."""
    rows = session.execute(select(PredictionRow.model_id, PredictionRow.effort)
                           .join(ItemRow, ItemRow.id == PredictionRow.item_id)
                           .where(ItemRow.project_id == project_id, PredictionRow.effort.is_not(None)))
    totals: dict[int, dict[str, Any]] = {}
    for model_id, effort in rows:
        if model_id is None:
            continue
        total = totals.setdefault(model_id, {"reviewed": 0, "shown": 0, "accepted": 0, "adjusted": 0, "rejected": 0,
                                             "added": 0, "ious": []})
        total["reviewed"] += 1
        for key in ("shown", "accepted", "adjusted", "rejected", "added"):
            total[key] += int(effort.get(key, 0))
        total["ious"].extend(effort.get("adjusted_iou", []))
    for total in totals.values():
        ious = total.pop("ious")
        total["accepted_unedited"] = round(total["accepted"] / total["shown"], 4) if total["shown"] else None
        total["mean_adjusted_iou"] = round(sum(ious) / len(ious), 4) if ious else None
    return totals
