"""Reading a project's items and labels for training, prediction and dataset generation."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from sqlalchemy import select

from labelloop.domain import Shape, shape_from_dict
from labelloop.errors import InvalidInput
from labelloop.services.labelling.annotations import latest_for_items
from labelloop.services.assist.predictions import latest_predictions_for_items
from labelloop.services.projects import ProjectInfo
from labelloop.store.tables import ItemRow

PAGE = 500


def background_index(project: ProjectInfo) -> int:
    """The class that means 'nothing here' (named background), or 0 when the project has none."""
    for c in project.classes:
        if c.name.lower() in ("background", "bg"):
            return c.index
    return 0


def item_pages(workspace, project_id: int, page: int = PAGE, *, ids_only: bool = False) -> Iterator[list]:
    """A project's items in id order, a page at a time (keyset pagination: memory stays flat on big projects);
    each page is a list of ItemRow, or of ids with `ids_only`."""
    last = 0
    columns = ItemRow.id if ids_only else ItemRow
    while True:
        with workspace.session() as session:
            rows = session.scalars(select(columns).where(ItemRow.project_id == project_id, ItemRow.id > last)
                                   .order_by(ItemRow.id).limit(page)).all()
        if not rows:
            return
        yield rows
        last = rows[-1] if ids_only else rows[-1].id


def labelled_items(workspace, project: ProjectInfo, shape_types: Sequence[str], *,
                   source: str = "annotations") -> list[tuple[ItemRow, list[Shape]]]:
    """Items whose newest annotation (or unrejected prediction) holds shapes of these types."""
    result = []
    for rows in item_pages(workspace, project.id):
        with workspace.session() as session:
            ids = [r.id for r in rows]
            latest = latest_for_items(session, ids) if source == "annotations" else latest_predictions_for_items(session, ids)
        for row in rows:
            if row.id in latest:
                shapes = [shape_from_dict(s) for s in latest[row.id].shapes if s["type"] in shape_types]
                if shapes:
                    result.append((row, shapes))
    return result


def select_items(workspace, project: ProjectInfo, *, split: str | None = None, everything: bool = False,
                 items: Sequence[int] | None = None) -> list[int]:
    """Item ids to predict: chosen ones, a split, all items, or by default those nobody has annotated yet."""
    if items:
        wanted = list(dict.fromkeys(int(i) for i in items))
        with workspace.session() as session:
            found = set(session.scalars(select(ItemRow.id).where(ItemRow.project_id == project.id,
                                                                 ItemRow.id.in_(wanted))))
        missing = [i for i in wanted if i not in found]
        if missing:
            raise InvalidInput(f"no item {', '.join(map(str, missing[:10]))} in project {project.name!r}")
        return wanted
    ids: list[int] = []
    for rows in item_pages(workspace, project.id):
        if everything:
            ids.extend(r.id for r in rows)
        elif split:
            ids.extend(r.id for r in rows if r.split == split)
        else:
            with workspace.session() as session:
                annotated = latest_for_items(session, [r.id for r in rows])
            ids.extend(r.id for r in rows if r.id not in annotated)
    if not ids:
        what = f"in split {split!r}" if split else "in the project" if everything else "without annotations"
        raise InvalidInput(f"project {project.name!r} has no items {what} to predict (use --split or --all)")
    return ids


def item_rows(workspace, item_ids: Sequence[int]) -> Iterator[ItemRow]:
    for start in range(0, len(item_ids), PAGE):
        chunk = list(item_ids[start : start + PAGE])
        with workspace.session() as session:
            rows = {r.id: r for r in session.scalars(select(ItemRow).where(ItemRow.id.in_(chunk)))}
        yield from (rows[i] for i in chunk if i in rows)
