"""The work queue: `next` hands each annotator a different item under a lease, in the project's order.

Atomicity lives in the database, not in this process (several server processes may share one workspace):
SQLite runs the whole claim under BEGIN IMMEDIATE (one writer at a time); PostgreSQL locks candidate items with
`FOR UPDATE SKIP LOCKED` (concurrent claims spread over different items instead of queueing behind one), then
recounts the item's assignments under that lock. The unique (item, slot) constraint is the last guard: one slot
of an item can never belong to two annotators."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from labelloop.errors import InvalidInput, NotFound
from labelloop.services.projects import ProjectInfo
from labelloop.services.transactions import write_transaction
from labelloop.store.tables import AnnotationRow, AssignmentRow, ItemRow, utcnow

DEFAULT_LEASE_SECONDS = 900
ATTEMPTS = 50  # claims that lose a race try the next item
ACTIVE = ("leased", "done")  # states that take one of the item's overlap slots

# Queue orders: a name -> the ORDER BY columns. Clustered and model-driven orders register here as they land.
ORDERS: dict[str, Callable[[], tuple[Any, ...]]] = {}


def queue_order(name: str):
    def register(function: Callable[[], tuple[Any, ...]]):
        ORDERS[name] = function
        return function

    return register


@queue_order("shuffled")
def _shuffled() -> tuple[Any, ...]:
    return ItemRow.position, ItemRow.id  # `position` is a fixed hash-shuffle made at import


@queue_order("sequential")
def _sequential() -> tuple[Any, ...]:
    return (ItemRow.id,)


@dataclass(frozen=True)
class Lease:
    item_id: int
    expires_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "expires_at": self.expires_at.isoformat()}


def overlap(project: ProjectInfo) -> int:
    return int(project.settings.get("overlap", 1))


def lease_time(project: ProjectInfo) -> timedelta:
    return timedelta(seconds=int(project.settings.get("lease_seconds", DEFAULT_LEASE_SECONDS)))


def _order(project: ProjectInfo) -> tuple[Any, ...]:
    name = project.settings.get("sampling", "shuffled")
    if name not in ORDERS:
        raise InvalidInput(f"project {project.name!r} asks for the queue order {name!r}; known: {', '.join(sorted(ORDERS))}")
    return ORDERS[name]()


def next_item(workspace, project: ProjectInfo, user_id: int) -> Lease | None:
    """The item this user should label now: their current lease (renewed), else a newly claimed one;
    None when nothing is left for them. Committed before it returns."""
    now = utcnow()
    expires = now + lease_time(project)
    postgres = workspace.backend == "postgresql"
    with write_transaction(workspace) as session:
        held = session.scalar(
            select(AssignmentRow).where(AssignmentRow.project_id == project.id, AssignmentRow.user_id == user_id,
                                        AssignmentRow.state == "leased", AssignmentRow.expires_at > now)
            .order_by(AssignmentRow.leased_at).limit(1))
        if held is not None:
            held.expires_at = expires
            return Lease(held.item_id, expires)
        session.execute(delete(AssignmentRow).where(
            AssignmentRow.project_id == project.id, AssignmentRow.state == "leased", AssignmentRow.expires_at <= now))
        if not postgres:  # BEGIN IMMEDIATE: nobody else can take the candidate before this transaction ends
            item_id = _candidate(session, project, user_id, skip_locked=False)
            if item_id is None or not _claim(session, project, item_id, user_id, now, expires, guarded=False):
                return None
            return Lease(item_id, expires)
        for _ in range(ATTEMPTS):
            # Each attempt in a savepoint: a failed one releases its row lock, so a waiting claim holds no locks
            # (no deadlocks between claims).
            attempt = session.begin_nested()
            item_id = _candidate(session, project, user_id, skip_locked=True)
            if item_id is None:  # every open item is being claimed right now: wait for one to settle
                item_id = _candidate(session, project, user_id, skip_locked=False)
            if item_id is not None and _claim(session, project, item_id, user_id, now, expires):
                attempt.commit()
                return Lease(item_id, expires)
            attempt.rollback()
            if item_id is None:
                return None
    return None


def _candidate(session: Session, project: ProjectInfo, user_id: int, *, skip_locked: bool) -> int | None:
    """The first open item in the project's order, row-locked (a no-op on SQLite, where BEGIN IMMEDIATE
    already keeps every other writer out)."""
    a = AssignmentRow
    taken = (select(func.count()).select_from(a).where(a.item_id == ItemRow.id, a.state.in_(ACTIVE))
             .correlate(ItemRow).scalar_subquery())
    mine = exists().where(a.item_id == ItemRow.id, a.user_id == user_id)
    settled = exists().where(AnnotationRow.item_id == ItemRow.id,
                             or_(AnnotationRow.state == "accepted", AnnotationRow.source == "import"))
    query = (select(ItemRow.id).where(ItemRow.project_id == project.id, taken < overlap(project), ~mine, ~settled)
             .order_by(*_order(project)).limit(1).with_for_update(skip_locked=skip_locked, of=ItemRow))
    return session.scalar(query)


def _claim(session: Session, project: ProjectInfo, item_id: int, user_id: int, now: datetime, expires: datetime,
           *, guarded: bool = True) -> bool:
    """Take a free slot of the item (whose row this transaction has locked); False when it filled up meanwhile."""
    used = set(session.scalars(select(AssignmentRow.slot).where(
        AssignmentRow.item_id == item_id, AssignmentRow.state.in_(ACTIVE))))
    free = [s for s in range(overlap(project)) if s not in used]
    if len(used) >= overlap(project) or not free:
        return False
    row = AssignmentRow(project_id=project.id, item_id=item_id, user_id=user_id, slot=free[0], state="leased",
                        leased_at=now, expires_at=expires)
    if not guarded:
        session.add(row)
        return True
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:  # another process took the slot between our count and our insert
        return False
    return True


def _assignment(session: Session, item_id: int, user_id: int) -> AssignmentRow | None:
    return session.scalar(select(AssignmentRow).where(AssignmentRow.item_id == item_id, AssignmentRow.user_id == user_id))


def mark_done(session: Session, project: ProjectInfo, item_id: int, user_id: int) -> None:
    """Inside the transaction that stored a submitted annotation: the user's work on the item is done."""
    row = _assignment(session, item_id, user_id)
    now = utcnow()
    slot = row.slot if row is not None else None
    if slot is None:  # submitted without a lease (or after it expired): count it where a slot is still free
        used = set(session.scalars(select(AssignmentRow.slot).where(
            AssignmentRow.item_id == item_id, AssignmentRow.slot.is_not(None))))
        slot = next((s for s in range(overlap(project)) if s not in used), None)
    if row is None:
        row = AssignmentRow(project_id=project.id, item_id=item_id, user_id=user_id, leased_at=now)
        session.add(row)
    row.slot, row.state, row.done_at, row.expires_at = slot, "done", now, None
    session.flush()


def renew(session: Session, project: ProjectInfo, item_id: int, user_id: int) -> None:
    """A draft was saved: the annotator is still at work, so the lease runs on."""
    session.execute(update(AssignmentRow).where(
        AssignmentRow.item_id == item_id, AssignmentRow.user_id == user_id, AssignmentRow.state == "leased",
    ).values(expires_at=utcnow() + lease_time(project)))


def skip(workspace, project: ProjectInfo, item_id: int, user_id: int) -> None:
    """The user passes on this item: it goes back to the others and never comes back to this user."""
    with write_transaction(workspace) as session:
        item = session.get(ItemRow, item_id)
        if item is None or item.project_id != project.id:
            raise NotFound(f"no item {item_id} in project {project.name!r}")
        row = _assignment(session, item_id, user_id)
        if row is None:
            session.add(AssignmentRow(project_id=project.id, item_id=item_id, user_id=user_id, state="skipped",
                                      slot=None, leased_at=utcnow()))
        elif row.state == "done":
            raise InvalidInput(f"you already submitted item {item_id}; there is nothing to skip")
        else:
            row.state, row.slot, row.expires_at = "skipped", None, None


def release_for_rework(session: Session, item_id: int) -> None:
    """A reviewer rejected the item's annotation: it goes back into the queue (for anyone, its author included)."""
    session.execute(delete(AssignmentRow).where(AssignmentRow.item_id == item_id, AssignmentRow.state == "done"))


def queue_counts(session: Session, project_id: int) -> dict[str, Any]:
    """Assignments per state (live leases only) and done items per annotator id."""
    now = utcnow()
    states = dict(session.execute(
        select(AssignmentRow.state, func.count()).where(
            AssignmentRow.project_id == project_id,
            or_(AssignmentRow.state != "leased", AssignmentRow.expires_at > now))
        .group_by(AssignmentRow.state)).all())
    return {s: states.get(s, 0) for s in ("leased", "done", "skipped")}
