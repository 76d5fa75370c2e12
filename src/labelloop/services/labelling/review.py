"""Review: accept, edit or reject a model's prediction or an annotator's submitted annotation.

Every verdict records the reviewer and the time. Accepting or editing writes a new `accepted` annotation
revision (append-only, so what the annotator or the model said stays readable)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from labelloop.domain import CLASS_KINDS, Shape, shape_from_dict, shape_to_dict
from labelloop.errors import Conflict, InvalidInput, NotFound
from labelloop.services.labelling import annotations, queue
from labelloop.services.labelling.annotations import AnnotationInfo
from labelloop.services.assist.effort import is_prelabel, review_effort
from labelloop.services.projects import ProjectInfo
from labelloop.store.tables import AnnotationRow, ItemRow, PredictionRow, ReviewRow, utcnow

ACTIONS = ("accept", "edit", "reject")
_VERDICT = {"accept": "accepted", "edit": "edited", "reject": "rejected"}


@dataclass(frozen=True)
class Verdict:
    action: str
    reviewer: str
    reviewed_at: str
    annotation: AnnotationInfo | None  # the accepted revision written, if any

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "reviewer": self.reviewer, "reviewed_at": self.reviewed_at,
                "annotation": self.annotation.to_dict() if self.annotation else None}


def _check_action(action: str, shapes: Sequence[Shape] | None) -> None:
    if action not in ACTIONS:
        raise InvalidInput(f"review action {action!r} is not one of {', '.join(ACTIONS)}")
    if action == "edit" and shapes is None:
        raise InvalidInput("an edit needs the corrected shapes")
    if action != "edit" and shapes is not None:
        raise InvalidInput(f"'{action}' takes no shapes; use 'edit' to change them")


def prediction_dict(row: PredictionRow) -> dict[str, Any]:
    return {"id": row.id, "item_id": row.item_id, "model_id": row.model_id, "model_version": row.model_version,
            "shapes": row.shapes, "score": row.score, "review_state": row.review_state, "reviewer": row.reviewer,
            "reviewed_at": row.reviewed_at.isoformat() if row.reviewed_at else None,
            "created_at": row.created_at.isoformat(), "effort": row.effort}


def prediction_project(session: Session, prediction_id: int) -> int:
    project_id = session.scalar(select(ItemRow.project_id).join(PredictionRow, PredictionRow.item_id == ItemRow.id)
                                .where(PredictionRow.id == prediction_id))
    if project_id is None:
        raise NotFound(f"no prediction {prediction_id}")
    return project_id


def review_prediction(session: Session, project: ProjectInfo, prediction_id: int, *, reviewer: str, action: str,
                      shapes: Sequence[Shape] | None = None, base_version: int | None = None) -> Verdict:
    """Inside a write transaction. A prediction is reviewed once; a second verdict is a Conflict."""
    _check_action(action, shapes)
    row = session.get(PredictionRow, prediction_id)
    if row is None:
        raise NotFound(f"no prediction {prediction_id}")
    if project.kind in CLASS_KINDS and action != "reject":
        given = row.shapes if action == "accept" else [shape_to_dict(s) for s in shapes or []]
        if not any(s.get("type") == "class" for s in given):
            raise InvalidInput(
                f"prediction {prediction_id} names no class (no class reached its threshold), so it is not an "
                f"answer to accept; choose the class yourself ('edit' with a class) or reject it")
    now = utcnow()
    claimed = session.execute(update(PredictionRow).where(
        PredictionRow.id == prediction_id, PredictionRow.review_state == "pending",
    ).values(review_state=_VERDICT[action], reviewer=reviewer, reviewed_at=now)).rowcount
    if not claimed:
        session.refresh(row)
        raise Conflict(f"prediction {prediction_id} was already {row.review_state} by {row.reviewer}",
                       prediction_dict(row))
    written = None
    before = annotations.latest(session, row.item_id, include_drafts=True)
    if action != "reject":
        if shapes is None:  # accept the pre-labels as predicted; the score belongs to the prediction, not the label
            shapes = [shape_from_dict({**{k: v for k, v in s.items() if k != "score"},
                                       "attributes": {**(s.get("attributes") or {}), "prediction": f"{row.id}:{n}"}})
                      for n, s in enumerate(row.shapes) if is_prelabel(s)]
        written = annotations.save(session, project, row.item_id, shapes, author=reviewer, base_version=base_version,
                                   state="accepted", source="review")
    row.effort = review_effort(row.id, row.shapes, before.shapes if before is not None else [],
                               written.shapes if written is not None else None)
    return Verdict(action, reviewer, now.isoformat(), written)


def review_annotation(session: Session, project: ProjectInfo, item_id: int, version: int, *, reviewer: str,
                      action: str, shapes: Sequence[Shape] | None = None, comment: str = "") -> Verdict:
    """Inside a write transaction: judge the item's newest submitted revision, which must be `version`."""
    _check_action(action, shapes)
    current = annotations.latest(session, item_id)
    if current is None or current.state != "submitted":
        what = "no submitted annotation" if current is None or current.state != "accepted" else "an accepted annotation"
        raise Conflict(f"item {item_id} has {what} to review", annotations.to_info(current) if current else None)
    if current.version != version:
        raise Conflict(f"item {item_id} changed: you reviewed version {version}, the newest is {current.version}",
                       annotations.to_info(current))
    now = utcnow()
    written = None
    if action == "accept":
        written = annotations.save(session, project, item_id, annotations.to_info(current).shapes,
                                   author=current.author, base_version=None, state="accepted", source="review")
    elif action == "edit":
        written = annotations.save(session, project, item_id, shapes, author=reviewer, base_version=None,
                                   state="accepted", source="review")
    else:
        queue.release_for_rework(session, item_id)
    try:
        with session.begin_nested():
            session.add(ReviewRow(item_id=item_id, annotation_id=current.id, action=action, reviewer=reviewer,
                                  result_annotation_id=written.id if written else None, comment=comment,
                                  created_at=now))
    except IntegrityError:
        raise Conflict(f"version {version} of item {item_id} was reviewed meanwhile") from None
    return Verdict(action, reviewer, now.isoformat(), written)


def pending_annotations(session: Session, project_id: int, *, after: int = 0, limit: int = 100) -> list[AnnotationRow]:
    """The review queue: items whose newest non-draft revision is submitted and has no verdict yet, by item id."""
    newer = aliased(AnnotationRow)
    newest = ~exists().where(newer.item_id == AnnotationRow.item_id, newer.version > AnnotationRow.version,
                             newer.state != "draft")
    query = (select(AnnotationRow).join(ItemRow, ItemRow.id == AnnotationRow.item_id)
             .where(ItemRow.project_id == project_id, AnnotationRow.state == "submitted", newest,
                    ~exists().where(ReviewRow.annotation_id == AnnotationRow.id), AnnotationRow.item_id > after)
             .order_by(AnnotationRow.item_id).limit(limit))
    return list(session.scalars(query))


def review_counts(session: Session, project_id: int) -> dict[str, int]:
    rows = session.execute(select(ReviewRow.action, func.count()).join(ItemRow, ItemRow.id == ReviewRow.item_id)
                           .where(ItemRow.project_id == project_id).group_by(ReviewRow.action)).all()
    found = dict(rows)
    return {a: found.get(a, 0) for a in ACTIONS}
