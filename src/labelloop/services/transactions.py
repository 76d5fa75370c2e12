"""Write transactions that hold the database's write lock from their first statement.

SQLite's default (deferred) transaction reads first and upgrades to a write lock later; under concurrent writers
the upgrade fails at once with "database is locked" when another writer committed since the read. BEGIN
IMMEDIATE takes the write lock up front (waiting up to the busy timeout), so a read-check-write sequence such as
handing out the next item is atomic. PostgreSQL needs nothing here: its callers lock the rows they change.

SQLite's busy handler waits for the lock by sleeping in steps of up to 100 ms, so under many writers a request
can sleep long after the lock came free. Writers of one process therefore queue on a Python lock first and
reach SQLite one at a time; only writers in other processes still meet the busy handler."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from sqlalchemy.orm import Session


@contextmanager
def write_transaction(workspace) -> Iterator[Session]:
    """Like `workspace.session()`, but serialised against other writers on SQLite; committed before it returns."""
    sqlite = workspace.backend == "sqlite"
    with _writers(workspace) if sqlite else nullcontext(), workspace.sessions() as session:
        with session.begin():
            if sqlite:
                session.connection().exec_driver_sql("BEGIN IMMEDIATE")
            yield session


_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


def _writers(workspace) -> threading.RLock:
    """One lock per database file in this process (re-entrant: a nested writer meets SQLite's own lock, as before)."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(workspace.database_url, threading.RLock())
