"""The queue order `nearest-labelled`: in a stack, the pages next to a labelled page come first.

A stack is a run of images that behave like video: the pages of a multi-page TIFF or the frames of a DICOM file
(one `source`, slice = `page`), the single-frame files of one DICOM series (slice = InstanceNumber), or a folder
of numbered slices (`slice_000.png`, `slice_005.png`, ...: the names that differ only in their last number; slice =
that number). A labelled page says most about its neighbours (on Lucchi its mask matches the next slice's at 0.80
IoU, five slices away at 0.33: benchmarks/micro_stack.py), so their pre-labels need the fewest edits, and the queue
serves the pages in increasing distance (in slices) to the nearest labelled page of their stack;
ties, pages of stacks with no labelled page yet, and items outside stacks follow in the shuffled order.

How it stays cheap: an item's stack and slice never change, so they are worked out once (`item_stacks`, migration
0011); the distance is kept on `queue_items.rank`, which the queue orders by exactly as it does for sampling
strategies. A saved (non-draft) revision re-ranks only its own stack (`annotations.save` calls `before_label` and
`after_label`), an item that comes back to the queue gets its rank again (`reopen`), and choosing the order,
importing or training re-ranks the whole project (`refresh`). A page counts as labelled when its newest non-draft revision has a shape
(`latest_annotations`, whoever wrote it: annotator, reviewer or import)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from sqlalchemy import BigInteger, Connection, and_, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from labelloop.store.tables import (ItemRow, ItemStackRow, LatestAnnotationRow, ProjectRow, QueueItemRow)

NAME = "nearest-labelled"
_NUMBER = re.compile(r"(\d+)(?!.*\d)")  # the last run of digits in a file name
_LARGEST = 2**31 - 1  # slices are stored as 32-bit integers
S = ItemStackRow.__table__
Q = QueueItemRow.__table__


def distances(slices: Sequence[int], labelled: Iterable[int]) -> np.ndarray:
    """Per slice, the distance to the nearest labelled slice (float; inf when none is labelled)."""
    slices = np.asarray(slices, np.int64)
    marks = np.unique(np.asarray(list(labelled), np.int64))
    if marks.size == 0:
        return np.full(slices.shape, np.inf)
    after = np.clip(np.searchsorted(marks, slices), 0, marks.size - 1)
    before = np.clip(after - 1, 0, marks.size - 1)
    return np.minimum(np.abs(marks[after] - slices), np.abs(slices - marks[before])).astype(np.float64)


def stack_of(source: str, page: int, multi_page: bool, series: str | None, instance: Any) -> tuple[str, int] | None:
    """(stack key, slice) of one item, or None when it belongs to no stack."""
    if multi_page:
        return f"file:{source}", int(page)
    number = str(instance).strip() if isinstance(instance, (int, str)) else ""
    if series and number.lstrip("-").isdigit() and abs(int(number)) <= _LARGEST:
        return f"series:{series}", int(number)
    folder, _, name = source.replace("\\", "/").rpartition("/")
    found = _NUMBER.search(name)
    if found is None or int(found.group(1)) > _LARGEST:  # a date-time stamp is no slice number
        return None
    return f"numbered:{folder}/{name[:found.start()]}#{name[found.end():]}", int(found.group(1))


def stack_key(stack: str) -> str:
    return hashlib.sha1(stack.encode()).hexdigest()  # sources may be 1,024 characters long


def uses_order(settings: dict[str, Any]) -> bool:
    return settings.get("sampling") == NAME


def index_stacks(connection: Connection, project_id: int) -> int:
    """Work out the stack and slice of the project's items that have none yet; returns how many were added."""
    known = select(S.c.item_id).where(S.c.item_id == ItemRow.id).exists()
    rows = connection.execute(select(
        ItemRow.id, ItemRow.source, ItemRow.page, ItemRow.meta["SeriesInstanceUID"].as_string(),
        ItemRow.meta["InstanceNumber"].as_string(),
    ).where(ItemRow.project_id == project_id, ~known)).all()
    if not rows:
        return 0
    multi_page = set(connection.execute(select(ItemRow.source).distinct().where(
        ItemRow.project_id == project_id, ItemRow.page > 0)).scalars())
    found = []
    for item_id, source, page, series, instance in rows:
        stack = stack_of(source, page, source in multi_page or page > 0, series, instance)
        if stack is not None:
            found.append({"item_id": item_id, "project_id": project_id, "stack": stack_key(stack[0]),
                          "slice": stack[1]})
    if found:  # a refresh running at the same time may have added some: theirs are the same
        dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
        connection.execute(dialect.insert(S).on_conflict_do_nothing(), found)
    return len(found)


_LABELLED = and_(LatestAnnotationRow.item_id == S.c.item_id, LatestAnnotationRow.shape_count > 0)
# Every page of the project's stacks: slice, labelled or not, and the current rank of those in the queue (None: not
# queued, or unranked). Built once; the one-stack form is what a saved label runs.
_PAGES = (select(S.c.item_id, S.c.stack, S.c.slice, LatestAnnotationRow.item_id.is_not(None), Q.c.item_id, Q.c.rank)
          .select_from(S.outerjoin(LatestAnnotationRow, _LABELLED).outerjoin(Q, Q.c.item_id == S.c.item_id))
          .where(S.c.project_id == bindparam("b_project")))
_STACK_PAGES = _PAGES.where(S.c.stack == bindparam("b_stack"))
_SET_RANK = update(Q).where(Q.c.item_id == bindparam("b_item")).values(rank=bindparam("b_rank"))


def _rank_stacks(connection: Connection, project_id: int, stacks: Sequence[str] | None) -> int:
    """Put each queued page's distance to its stack's nearest labelled page on `queue_items.rank` (NULL when the
    stack has none), writing only the ranks that change. None: every stack of the project. Returns the number of
    ranks written."""
    if stacks is None:
        rows = list(connection.execute(_PAGES, {"b_project": project_id}))
    else:
        rows = [row for stack in dict.fromkeys(stacks)
                for row in connection.execute(_STACK_PAGES, {"b_project": project_id, "b_stack": stack})]
    by_stack: dict[str, list[Any]] = {}
    for row in rows:
        by_stack.setdefault(row[1], []).append(row)
    changes = []
    for pages in by_stack.values():
        marks = [p[2] for p in pages if p[3]]
        if not marks and all(p[5] is None for p in pages):
            continue  # no labelled page, and nothing ranked from one before: nothing to write
        away = distances([p[2] for p in pages], marks)
        for page, d in zip(pages, away):
            rank = None if np.isinf(d) else int(d)
            if page[4] is not None and page[5] != rank:
                changes.append({"b_item": page[0], "b_rank": rank})
    if changes:
        changes.sort(key=lambda c: c["b_item"])  # one lock order for every writer
        connection.execute(_SET_RANK, changes)
    return len(changes)


def refresh(connection: Connection, project_id: int) -> dict[str, Any]:
    """Rank the whole project's queue by stack distance (choosing the order, after an import or a model)."""
    indexed = index_stacks(connection, project_id)
    # ranks left by another order (a sampling strategy's) go first; then only stacks with a labelled page write
    connection.execute(update(Q).where(Q.c.project_id == project_id, Q.c.rank.is_not(None)).values(rank=None))
    ranked = _rank_stacks(connection, project_id, None)
    return {"strategy": NAME, "indexed": indexed, "ranked": ranked}


_LOCK_STACK = select(func.pg_advisory_xact_lock(bindparam("b_key", type_=BigInteger)))
_STACK_OF = select(S.c.project_id, S.c.stack).where(S.c.item_id == bindparam("b_item"))
_STACKS_OF = (select(S.c.project_id, S.c.stack, ProjectRow.settings).join(ProjectRow, ProjectRow.id == S.c.project_id)
              .where(S.c.item_id.in_(bindparam("b_items", expanding=True))))


def before_label(connection: Connection, item_id: int) -> None:
    """A page's label is about to change (before its revision is written): on PostgreSQL, wait until no other
    transaction is re-ranking its stack. Two labels saved at once in one stack then re-rank one after the other,
    and the second reads both (each statement sees what committed before it); taken before the revision, whose
    triggers lock the page's queue row, so the two cannot deadlock. SQLite's writers are one at a time already."""
    if connection.dialect.name != "postgresql":
        return
    found = connection.execute(_STACK_OF, {"b_item": item_id}).first()
    if found is not None:
        connection.execute(_LOCK_STACK, {"b_key": int(found.stack[:15], 16)})


def after_label(connection: Connection, item_id: int) -> None:
    """A page's label changed: re-rank the rest of its stack (inside the caller's transaction)."""
    found = connection.execute(_STACK_OF, {"b_item": item_id}).first()
    if found is not None:
        _rank_stacks(connection, found.project_id, [found.stack])


def after_reopen(connection: Connection, item_ids: Sequence[int]) -> None:
    """Items came back to the queue (rank NULL): rank them again where their project uses this order."""
    stacks: dict[int, list[str]] = {}
    for project_id, stack, settings in connection.execute(_STACKS_OF, {"b_items": list(item_ids)}):
        if uses_order(settings or {}):
            stacks.setdefault(project_id, []).append(stack)
    for project_id, keys in stacks.items():
        _rank_stacks(connection, project_id, keys)
