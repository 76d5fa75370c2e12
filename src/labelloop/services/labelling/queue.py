"""The work queue: `next` hands each annotator a different item under a lease, in the project's order.

The items that may still be handed out are listed in `queue_items` (QueueItemRow: triggers add new items and
drop settled ones; this module drops an item when its last slot is taken and puts it back when a slot frees), so
a claim reads the head of that list: its cost does not grow with the work already done.

Atomicity lives in the database, not in this process (several server processes may share one workspace):
SQLite runs the whole claim under BEGIN IMMEDIATE (one writer at a time); PostgreSQL locks the queue row it
takes with `FOR UPDATE SKIP LOCKED` (concurrent claims spread over different items instead of queueing behind
one). The unique (item, slot) constraint is the last guard: a slot is taken with INSERT ... ON CONFLICT DO
NOTHING, so one taken meanwhile reads as "not claimed" and the claim moves on. One slot of an item can never
belong to two annotators.

On PostgreSQL a claim and a skip commit without waiting for their WAL flush (`synchronous_commit = off` for that
transaction only): the flush took ~3 ms of each call's ~6 ms on the benchmark machine, twice per annotator
cycle. What a database crash can lose is the last fraction of a second of leases and skips, never a submitted
annotation (its transaction waits for the flush, and with it every lease committed before it); a lost lease
offers the item again, and a submission without a lease still counts in a free slot (`mark_done`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, delete, exists, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from labelloop.errors import InvalidInput, NotFound
from labelloop.services.projects import ProjectInfo
from labelloop.services.labelling import stack_order
from labelloop.services.labelling.strategies import strategy_names
from labelloop.services.transactions import write_transaction
from labelloop.store.tables import AnnotationRow, AssignmentRow, ItemRow, QueueItemRow, utcnow

DEFAULT_LEASE_SECONDS = 900
ATTEMPTS = 50  # claims that lose a race try the next item
ACTIVE = ("leased", "done")  # states that take one of the item's overlap slots
A = AssignmentRow.__table__
Q = QueueItemRow.__table__

# Queue orders: a name -> the ORDER BY columns over queue_items. Clustered and model-driven orders register here
# as they land (joining their scores onto queue_items).
ORDERS: dict[str, Callable[[], tuple[Any, ...]]] = {}


def queue_order(name: str):
    def register(function: Callable[[], tuple[Any, ...]]):
        ORDERS[name] = function
        return function

    return register


@queue_order("shuffled")
def _shuffled() -> tuple[Any, ...]:
    return Q.c.position, Q.c.item_id  # `position` is a fixed hash-shuffle made at import


@queue_order("sequential")
def _sequential() -> tuple[Any, ...]:
    return (Q.c.item_id,)


def _ranked() -> tuple[Any, ...]:
    # Sampling strategies (services/labelling/strategies.py): the rank cached per model version
    # (services/assist/sampling.py); items without one (back in the queue since) follow in the shuffled order.
    return Q.c.rank.asc().nulls_last(), Q.c.position, Q.c.item_id


for _strategy in strategy_names():
    ORDERS.setdefault(_strategy, _ranked)


@queue_order(stack_order.NAME)
def _nearest_labelled() -> tuple[Any, ...]:
    # `rank` holds the distance (in slices) to the nearest labelled page of the item's stack (stack_order.py);
    # items outside stacks, or in stacks with no labelled page, have none and follow in the shuffled order.
    return _ranked()


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


def _insert(connection: Connection, table):
    return (postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert)(table)


# Statements built once; their values are bound per call (building and caching a statement costs more than
# running these small ones).
_RENEW_HELD = update(A).where(A.c.id == select(A.c.id).where(
    A.c.project_id == bindparam("b_project"), A.c.user_id == bindparam("b_user"), A.c.state == "leased",
    A.c.expires_at > bindparam("now")).order_by(A.c.leased_at).limit(1).scalar_subquery()
).values(expires_at=bindparam("expires")).returning(A.c.item_id)
_EXPIRE = delete(A).where(A.c.project_id == bindparam("b_project"), A.c.state == "leased",
                          A.c.expires_at <= bindparam("now")).returning(A.c.item_id)
_USED_SLOTS = select(A.c.slot).where(A.c.item_id == bindparam("b_item"), A.c.state.in_(ACTIVE))
_LEASE = {name: dialect.insert(A).values(
    project_id=bindparam("b_project"), item_id=bindparam("b_item"), user_id=bindparam("b_user"),
    slot=bindparam("b_slot"), state="leased", leased_at=bindparam("now"), expires_at=bindparam("expires"),
).on_conflict_do_nothing().returning(A.c.id) for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))}
_SETTLED = exists().where(AnnotationRow.item_id == ItemRow.id,
                          or_(AnnotationRow.state == "accepted", AnnotationRow.source == "import"))


def next_item(workspace, project: ProjectInfo, user_id: int) -> Lease | None:
    """The item this user should label now: their current lease (renewed), else a newly claimed one;
    None when nothing is left for them. Committed before it returns."""
    with write_transaction(workspace) as session:
        return claim_next(session, project, user_id)


def claim_next(session: Session, project: ProjectInfo, user_id: int) -> Lease | None:
    """`next_item` inside the caller's write transaction (which then commits without waiting for the disk on
    PostgreSQL: see the module's docstring)."""
    connection = session.connection()
    _commit_without_flush(connection)
    now = utcnow()
    expires = now + lease_time(project)
    held = connection.execute(_RENEW_HELD, {"b_project": project.id, "b_user": user_id, "now": now,
                                            "expires": expires}).scalar()
    if held is not None:
        return Lease(held, expires)
    expired = connection.execute(_EXPIRE, {"b_project": project.id, "now": now}).scalars().all()
    if expired:
        reopen(connection, expired)
    skipping, waiting = _heads(project)
    values = {"b_project": project.id, "b_user": user_id}
    postgres = connection.dialect.name == "postgresql"
    refilled = False
    for _ in range(ATTEMPTS):
        item_id = connection.execute(skipping, values).scalar()  # SQLite: no lock clause
        if item_id is None and postgres:  # every open item is being claimed right now: wait for one to settle
            item_id = connection.execute(waiting, values).scalar()
        if item_id is None:
            if refilled or not refill(connection, project):
                return None
            refilled = True
            continue
        if _take_slot(connection, project, item_id, user_id, now, expires):
            return Lease(item_id, expires)
    return None


def upcoming(session: Session, project: ProjectInfo, user_id: int, limit: int) -> list[int]:
    """Up to `limit` items the queue would hand this user after the current claim, in its order (nothing leased):
    where a grid page looks for items to show beside the one `claim_next` gave."""
    return list(session.scalars(select(Q.c.item_id).where(Q.c.project_id == project.id, ~_TRIED)
                                .order_by(*_order(project)).limit(limit), {"b_user": user_id}))


def claim_items(session: Session, project: ProjectInfo, user_id: int, item_ids: Iterable[int]) -> list[int]:
    """Lease these open items to the user as well (a grid page: several items claimed at once), each in a free
    slot; returns those leased (an item taken meanwhile, or closed, is left out). Inside the caller's write
    transaction, after `claim_next`."""
    connection = session.connection()
    now = utcnow()
    expires = now + lease_time(project)
    item_ids = list(item_ids)
    open_ids = set(connection.execute(select(Q.c.item_id).where(Q.c.project_id == project.id, Q.c.item_id.in_(item_ids))
                                      .with_for_update(skip_locked=True)).scalars())
    return [i for i in item_ids if i in open_ids and _take_slot(connection, project, i, user_id, now, expires)]


def _commit_without_flush(connection: Connection) -> None:
    """Let this transaction's COMMIT return before its WAL reaches the disk (PostgreSQL; SQLite's WAL mode with
    synchronous=NORMAL already skips the sync at commit)."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("SET LOCAL synchronous_commit = off")


_HEADS: dict[str, tuple[Any, Any]] = {}
_TRIED = exists().where(A.c.item_id == Q.c.item_id, A.c.user_id == bindparam("b_user"))  # the user had it already


def _heads(project: ProjectInfo) -> tuple[Any, Any]:
    """The head of the project's queue not yet tried by the user, in its order: (skipping rows other claims have
    locked, waiting for them). Built once per order and reused, so SQLAlchemy need not rebuild its cache key."""
    name = project.settings.get("sampling", "shuffled")
    if name not in _HEADS:
        head = (select(Q.c.item_id).where(Q.c.project_id == bindparam("b_project"), ~_TRIED)
                .order_by(*_order(project)).limit(1))
        _HEADS[name] = (head.with_for_update(skip_locked=True), head.with_for_update())
    return _HEADS[name]


def _take_slot(connection: Connection, project: ProjectInfo, item_id: int, user_id: int, now: datetime,
               expires: datetime) -> bool:
    """Lease a free slot of the item (whose queue row this transaction holds); False when none is left."""
    slots = overlap(project)
    used = _used_slots(connection, item_id) if slots > 1 else set()
    free = next((s for s in range(slots) if s not in used), None)
    if free is not None:
        taken = connection.execute(_LEASE[connection.dialect.name], {
            "b_project": project.id, "b_item": item_id, "b_user": user_id, "b_slot": free, "now": now,
            "expires": expires}).first()
        if taken is not None:
            if len(used) + 1 >= slots:
                close(connection, [item_id])
            return True
        used = _used_slots(connection, item_id)  # someone took a slot between our count and our insert
    if len(used) >= slots:
        close(connection, [item_id])
    return False


def _used_slots(connection: Connection, item_id: int) -> set[int]:
    return set(connection.execute(_USED_SLOTS, {"b_item": item_id}).scalars())


_CLOSE = delete(Q).where(Q.c.item_id.in_(bindparam("b_items", expanding=True)))


def close(connection: Connection, item_ids: Iterable[int]) -> None:
    """Every slot of these items is taken: the queue stops offering them."""
    connection.execute(_CLOSE, {"b_items": list(item_ids)})


def reopen(connection: Connection, item_ids: Iterable[int]) -> None:
    """A slot of these items came free (expired lease, skip, rework): offer them again, unless they are settled."""
    item_ids = list(item_ids)
    found = (select(ItemRow.id, ItemRow.project_id, ItemRow.position)
             .where(ItemRow.id.in_(item_ids), ~_SETTLED))
    connection.execute(_insert(connection, Q).from_select(["item_id", "project_id", "position"], found)
                       .on_conflict_do_nothing())
    stack_order.after_reopen(connection, item_ids)  # a page of a stack gets its distance back


def refill(connection: Connection, project: ProjectInfo) -> bool:
    """Put back every open item of the project the queue lacks (a safety net, run only when the queue looks
    empty to someone: a raised overlap, or a change made behind the triggers' back). True if any came back."""
    taken = (select(func.count()).select_from(A).where(A.c.item_id == ItemRow.id, A.c.state.in_(ACTIVE))
             .correlate(ItemRow).scalar_subquery())
    missing = (select(ItemRow.id, ItemRow.project_id, ItemRow.position)
               .where(ItemRow.project_id == project.id, taken < overlap(project), ~_SETTLED,
                      ~exists().where(Q.c.item_id == ItemRow.id)))
    result = connection.execute(_insert(connection, Q).from_select(["item_id", "project_id", "position"], missing)
                                .on_conflict_do_nothing())
    if result.rowcount and stack_order.uses_order(project.settings):
        stack_order.refresh(connection, project.id)
    return bool(result.rowcount)


def _assignment(session: Session, item_id: int, user_id: int) -> AssignmentRow | None:
    return session.scalar(select(AssignmentRow).where(AssignmentRow.item_id == item_id, AssignmentRow.user_id == user_id))


_FINISH_LEASE = update(A).where(A.c.item_id == bindparam("b_item"), A.c.user_id == bindparam("b_user"),
                                A.c.slot.is_not(None)).values(state="done", done_at=bindparam("now"), expires_at=None)


def mark_done(session: Session, project: ProjectInfo, item_id: int, user_id: int) -> None:
    """Inside the transaction that stored a submitted annotation: the user's work on the item is done."""
    connection = session.connection()
    now = utcnow()
    if connection.execute(_FINISH_LEASE, {"b_item": item_id, "b_user": user_id, "now": now}).rowcount:
        return  # the usual case: the user held a slot (a lease, or an earlier submission)
    # Submitted without a lease (or after it expired and was cleared): count it where a slot is still free.
    for _ in range(ATTEMPTS):
        used = _used_slots(connection, item_id)
        slot = next((s for s in range(overlap(project)) if s not in used), None)
        try:
            with session.begin_nested():
                row = _assignment(session, item_id, user_id)
                if row is None:
                    row = AssignmentRow(project_id=project.id, item_id=item_id, user_id=user_id, leased_at=now)
                    session.add(row)
                row.slot, row.state, row.done_at, row.expires_at = slot, "done", now, None
                session.flush()
        except IntegrityError:  # a claim took that slot meanwhile: count again
            continue
        if slot is not None and len(used) + 1 >= overlap(project):
            close(connection, [item_id])
        return


def renew(session: Session, project: ProjectInfo, item_id: int, user_id: int) -> None:
    """A draft was saved: the annotator is still at work, so the lease runs on."""
    session.execute(update(AssignmentRow).where(
        AssignmentRow.item_id == item_id, AssignmentRow.user_id == user_id, AssignmentRow.state == "leased",
    ).values(expires_at=utcnow() + lease_time(project)))


# The item's project and this user's assignment state, in one round trip.
_SKIP_TARGET = (select(ItemRow.project_id, A.c.state)
                .outerjoin(A, (A.c.item_id == ItemRow.id) & (A.c.user_id == bindparam("b_user")))
                .where(ItemRow.id == bindparam("b_item")))
_SKIP_HELD = update(A).where(A.c.item_id == bindparam("b_item"), A.c.user_id == bindparam("b_user")).values(
    state="skipped", slot=None, expires_at=None)
_SKIP_NEW = insert(A).values(project_id=bindparam("b_project"), item_id=bindparam("b_item"),
                             user_id=bindparam("b_user"), state="skipped", slot=None, leased_at=bindparam("now"))


def skip(workspace, project: ProjectInfo, item_id: int, user_id: int) -> None:
    """The user passes on this item: it goes back to the others and never comes back to this user."""
    with write_transaction(workspace) as session:
        connection = session.connection()
        _commit_without_flush(connection)
        values = {"b_item": item_id, "b_user": user_id}
        found = connection.execute(_SKIP_TARGET, values).first()
        if found is None or found.project_id != project.id:
            raise NotFound(f"no item {item_id} in project {project.name!r}")
        if found.state is None:
            connection.execute(_SKIP_NEW, {**values, "b_project": project.id, "now": utcnow()})
        elif found.state == "done":
            raise InvalidInput(f"you already submitted item {item_id}; there is nothing to skip")
        else:
            connection.execute(_SKIP_HELD, values)
            reopen(connection, [item_id])


def release_for_rework(session: Session, item_id: int) -> None:
    """A reviewer rejected the item's annotation: it goes back into the queue (for anyone, its author included)."""
    session.execute(delete(AssignmentRow).where(AssignmentRow.item_id == item_id, AssignmentRow.state == "done"))
    reopen(session.connection(), [item_id])


def queue_counts(session: Session, project_id: int) -> dict[str, Any]:
    """Assignments per state (live leases only) and done items per annotator id."""
    now = utcnow()
    states = dict(session.execute(
        select(AssignmentRow.state, func.count()).where(
            AssignmentRow.project_id == project_id,
            or_(AssignmentRow.state != "leased", AssignmentRow.expires_at > now))
        .group_by(AssignmentRow.state)).all())
    return {s: states.get(s, 0) for s in ("leased", "done", "skipped")}
