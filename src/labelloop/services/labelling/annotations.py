"""Annotations: append-only revisions per item, checked against the project's kind and schema."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, select
from sqlalchemy.orm import Session

from labelloop.domain import Box, ClassLabel, Mask, Polygon, ProjectKind, Scribble, Shape, shape_from_dict, shape_to_dict
from labelloop.errors import Conflict, InvalidInput, NotFound
from labelloop.geometry import rle
from labelloop.services.projects import ProjectInfo
from labelloop.services.labelling import stack_order
from labelloop.store.tables import AnnotationRow, ItemRow, utcnow

# Which shape types each project kind accepts (scribbles are partial labels for semantic work).
ALLOWED: dict[ProjectKind, tuple[type, ...]] = {
    ProjectKind.classification: (ClassLabel,),
    ProjectKind.multilabel: (ClassLabel,),
    ProjectKind.detection: (Box,),
    ProjectKind.instance: (Polygon, Mask, Box),
    ProjectKind.semantic: (Mask, Scribble, Polygon),
}
STATES = ("draft", "submitted", "accepted")


@dataclass(frozen=True)
class AnnotationInfo:
    id: int
    item_id: int
    version: int
    author: str
    state: str
    source: str
    shapes: list[Shape]
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "item_id": self.item_id,
            "version": self.version,
            "author": self.author,
            "state": self.state,
            "source": self.source,
            "shapes": [shape_to_dict(s) for s in self.shapes],
            "created_at": self.created_at.isoformat(),
        }


def to_info(row: AnnotationRow) -> AnnotationInfo:
    return AnnotationInfo(
        row.id, row.item_id, row.version, row.author, row.state, row.source,
        [shape_from_dict(s) for s in row.shapes], row.created_at,
    )


def check_shapes(shapes: Sequence[Shape], project: ProjectInfo, width: int, height: int, where: str) -> None:
    """Raise InvalidInput when a shape does not fit the project or the image; `where` names the source."""
    names = set(project.class_names())
    allowed = ALLOWED[project.kind]
    for n, shape in enumerate(shapes):
        prefix = f"{where}: shape {n + 1} ({shape.type} '{shape.label}')"
        if not isinstance(shape, allowed):
            kinds = ", ".join(t.__name__.lower() for t in allowed)
            raise InvalidInput(f"{prefix}: a {project.kind.value} project takes {kinds} shapes")
        if shape.label not in names:
            raise InvalidInput(f"{prefix}: class '{shape.label}' is not in the project's classes ({', '.join(sorted(names)) or 'none'})")
        if isinstance(shape, Box):
            values = (shape.x0, shape.y0, shape.x1, shape.y1)
            if not all(math.isfinite(v) for v in values):
                raise InvalidInput(f"{prefix}: coordinates must be finite numbers, got {values}")
            if shape.x1 <= shape.x0 or shape.y1 <= shape.y0:
                raise InvalidInput(f"{prefix}: box {values} has no area (x1 must exceed x0, y1 exceed y0)")
            if shape.x0 < -1 or shape.y0 < -1 or shape.x1 > width + 1 or shape.y1 > height + 1:
                raise InvalidInput(f"{prefix}: box {values} lies outside the {width}×{height} image")
        elif isinstance(shape, Polygon):
            for part in shape.parts:
                if len(part) < 3:
                    raise InvalidInput(f"{prefix}: a polygon part needs at least 3 points, got {len(part)}")
                for x, y in part:
                    if not (math.isfinite(x) and math.isfinite(y)) or x < -1 or y < -1 or x > width + 1 or y > height + 1:
                        raise InvalidInput(f"{prefix}: point ({x}, {y}) lies outside the {width}×{height} image")
        elif isinstance(shape, (Mask, Scribble)):
            if tuple(shape.size) != (height, width):
                raise InvalidInput(f"{prefix}: mask is {shape.size[1]}×{shape.size[0]} but the image is {width}×{height}")
            try:
                rle.check_counts(shape.size, shape.counts)
            except ValueError as exc:
                raise InvalidInput(f"{prefix}: malformed mask RLE: {exc}") from None
    if project.kind is ProjectKind.classification and len(shapes) > 1:
        raise InvalidInput(f"{where}: {len(shapes)} class labels in a classification project; use a multilabel project")
    if project.kind is ProjectKind.multilabel:
        labels = [s.label for s in shapes]
        if len(labels) != len(set(labels)):
            raise InvalidInput(f"{where}: the same class is given twice")


def latest(session: Session, item_id: int, *, include_drafts: bool = False) -> AnnotationRow | None:
    query = select(AnnotationRow).where(AnnotationRow.item_id == item_id)
    if not include_drafts:
        query = query.where(AnnotationRow.state != "draft")
    return session.scalar(query.order_by(AnnotationRow.version.desc()).limit(1))


def latest_by_author(session: Session, item_id: int, author: str) -> AnnotationRow | None:
    """The author's own newest revision of the item, drafts included."""
    return session.scalar(select(AnnotationRow).where(AnnotationRow.item_id == item_id, AnnotationRow.author == author)
                          .order_by(AnnotationRow.version.desc()).limit(1))


def latest_for_items(session: Session, item_ids: Iterable[int]):
    """The newest non-draft revision of each item, in one query, as light rows (item_id, version, author,
    state, source, shapes): exports and stats read thousands of these."""
    ids = list(item_ids)
    if not ids:
        return {}
    newest = (
        select(AnnotationRow.item_id, func.max(AnnotationRow.version).label("version"))
        .where(AnnotationRow.item_id.in_(ids), AnnotationRow.state != "draft")
        .group_by(AnnotationRow.item_id)
        .subquery()
    )
    t = AnnotationRow.__table__.c
    rows = session.execute(
        select(t.item_id, t.version, t.author, t.state, t.source, t.shapes).join(
            newest, (t.item_id == newest.c.item_id) & (t.version == newest.c.version)
        )
    )
    return {row.item_id: row for row in rows}


def next_version(session: Session, item_id: int) -> int:
    current = session.scalar(select(func.max(AnnotationRow.version)).where(AnnotationRow.item_id == item_id))
    return (current or 0) + 1


# The item (locked on PostgreSQL, so revisions of one item are numbered one at a time; on SQLite the caller's
# BEGIN IMMEDIATE already is that lock) with its newest version, in one statement.
_ITEM_FOR_WRITE = (select(ItemRow.project_id, ItemRow.width, ItemRow.height,
                          select(func.max(AnnotationRow.version)).where(AnnotationRow.item_id == ItemRow.id)
                          .correlate(ItemRow).scalar_subquery().label("version"))
                   .where(ItemRow.id == bindparam("item_id")).with_for_update(of=ItemRow))
_APPEND = insert(AnnotationRow.__table__).returning(AnnotationRow.__table__.c.id)


def save(
    session: Session,
    project: ProjectInfo,
    item_id: int,
    shapes: Sequence[Shape],
    *,
    author: str,
    base_version: int | None,
    state: str = "submitted",
    source: str = "human",
    per_author: bool = False,
) -> AnnotationInfo:
    """Append a revision. `base_version` is the version the author started from (0 or None: none yet);
    a stale base raises Conflict carrying the current revision, so nothing is silently overwritten.

    With `per_author` (independent annotators of one item, for agreement) the base is the author's own newest
    revision: other annotators' revisions in between are not a conflict."""
    if state not in STATES:
        raise InvalidInput(f"annotation state {state!r} is not one of {', '.join(STATES)}")
    session.flush()  # what the caller added through the ORM goes first: the statements below bypass autoflush
    connection = session.connection()
    item = connection.execute(_ITEM_FOR_WRITE, {"item_id": item_id}).first()
    if item is None or item.project_id != project.id:
        raise NotFound(f"no item {item_id} in project {project.name!r}")
    check_shapes(shapes, project, item.width, item.height, f"item {item_id}")
    version = (item.version or 0) + 1
    if per_author and base_version is not None:
        own = latest_by_author(session, item_id, author)
        if base_version != (own.version if own is not None else 0):
            raise Conflict(
                f"item {item_id} was changed meanwhile: your edit is based on version {base_version}, "
                f"your newest version is {own.version if own is not None else 0}",
                to_info(own) if own is not None else None,
            )
    elif base_version is not None and base_version != version - 1:
        current = latest(session, item_id, include_drafts=True)
        raise Conflict(
            f"item {item_id} was changed meanwhile: your edit is based on version {base_version}, "
            f"the current version is {version - 1}",
            to_info(current) if current is not None else None,
        )
    ranked = state != "draft" and stack_order.uses_order(project.settings)
    if ranked:
        stack_order.before_label(connection, item_id)
    created_at = utcnow()
    annotation_id = connection.execute(_APPEND, {
        "item_id": item_id, "version": version, "author": author, "state": state, "source": source,
        "shapes": [shape_to_dict(s) for s in shapes], "created_at": created_at}).scalar_one()
    if ranked:
        stack_order.after_label(connection, item_id)  # the page's neighbours move up (or down, if it was cleared)
    return AnnotationInfo(annotation_id, item_id, version, author, state, source, list(shapes), created_at)


def history(session: Session, item_id: int) -> list[AnnotationInfo]:
    rows = session.scalars(select(AnnotationRow).where(AnnotationRow.item_id == item_id).order_by(AnnotationRow.version))
    return [to_info(r) for r in rows]
