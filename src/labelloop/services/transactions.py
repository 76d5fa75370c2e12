"""Write transactions that hold the database's write lock from their first statement.

SQLite's default (deferred) transaction reads first and upgrades to a write lock later; under concurrent writers
the upgrade fails at once with "database is locked" when another writer committed since the read. BEGIN
IMMEDIATE takes the write lock up front (waiting up to the busy timeout), so a read-check-write sequence such as
handing out the next item is atomic. PostgreSQL needs nothing here: its callers lock the rows they change.

SQLite's busy handler waits for the lock by sleeping in steps of up to 100 ms, so under many writers a request
can sleep long after the lock came free. Writers of one process therefore queue on a Python lock first and
reach SQLite one at a time; a writer that finds the lock held by another process (a second server worker, the
CLI) asks again every millisecond or two instead of leaving it to the busy handler."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from sqlalchemy.orm import Session

from labelloop.store.db import BUSY_TIMEOUT_S


@contextmanager
def write_transaction(workspace) -> Iterator[Session]:
    """Like `workspace.session()`, but serialised against other writers on SQLite; committed before it returns."""
    sqlite = workspace.backend == "sqlite"
    with _writers(workspace) if sqlite else nullcontext(), workspace.sessions() as session:
        with session.begin():
            if sqlite:
                _begin_immediate(session.connection().connection.dbapi_connection)
            yield session


def _begin_immediate(connection: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE, polling while another process holds the write lock, for up to the connection's busy
    timeout (store/db.py: 30 s); then SQLite's own "database is locked" error."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    pause = 0.0005
    connection.execute("PRAGMA busy_timeout=0")  # fail at once while locked: this loop does the waiting
    try:
        while True:
            try:
                connection.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) and "busy" not in str(error) or time.monotonic() > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.002)
    finally:
        connection.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")


_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


def _writers(workspace) -> threading.RLock:
    """One lock per database file in this process (re-entrant: a nested writer meets SQLite's own lock, as before)."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(workspace.database_url, threading.RLock())
