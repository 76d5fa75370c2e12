"""Write transactions that hold the database's write lock from their first statement.

SQLite's default (deferred) transaction reads first and upgrades to a write lock later; under concurrent writers
the upgrade fails at once with "database is locked" when another writer committed since the read. BEGIN
IMMEDIATE takes the write lock up front (waiting up to the busy timeout), so a read-check-write sequence such as
handing out the next item is atomic. PostgreSQL needs nothing here: its callers lock the rows they change."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text
from sqlalchemy.orm import Session


@contextmanager
def write_transaction(workspace) -> Iterator[Session]:
    """Like `workspace.session()`, but serialised against other writers on SQLite; committed before it returns."""
    with workspace.sessions() as session:
        with session.begin():
            if workspace.backend == "sqlite":
                session.execute(text("BEGIN IMMEDIATE"))
            yield session
