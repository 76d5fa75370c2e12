"""Database connections under the server: a PostgreSQL connection that went away while idle is replaced, not
handed out; an SQLite writer waiting for another process's write lock gets it soon after it is released."""

from __future__ import annotations

import sqlite3
import threading
import time

import psycopg
import pytest
from sqlalchemy import text

from labelloop.services.transactions import write_transaction
from labelloop.store import db


def test_a_connection_killed_while_idle_in_the_pool_is_replaced(workspace, monkeypatch):
    if workspace.backend != "postgresql":
        pytest.skip("SQLite connections are files in this process: they do not go away")
    with workspace.reader() as connection:
        first = connection.execute(text("SELECT pg_backend_pid()")).scalar()
    with psycopg.connect(workspace.engine.url.set(drivername="postgresql").render_as_string(hide_password=False),
                         autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (first,))
    monkeypatch.setattr(db, "IDLE_PING_SECONDS", 0.0)  # every pooled connection now counts as idle
    with workspace.session() as session:  # a write transaction too, not only the autocommit reader
        second = session.execute(text("SELECT pg_backend_pid()")).scalar()
    assert second != first
    with workspace.reader() as connection:
        assert connection.execute(text("SELECT 1")).scalar() == 1


def test_an_sqlite_writer_gets_the_lock_soon_after_another_process_releases_it(workspace):
    if workspace.backend != "sqlite":
        pytest.skip("PostgreSQL writers lock rows, not the database")
    other = sqlite3.connect(workspace.engine.url.database, isolation_level=None, check_same_thread=False)
    held, released = threading.Event(), []

    def hold_the_lock() -> None:
        other.execute("BEGIN IMMEDIATE")
        held.set()
        time.sleep(0.18)  # SQLite's own busy handler would sleep on until 0.228 s
        other.execute("COMMIT")
        released.append(time.perf_counter())

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    assert held.wait(10)
    with write_transaction(workspace) as session:
        acquired = time.perf_counter()
        session.execute(text("SELECT 1"))
    holder.join()
    other.close()
    assert acquired - released[0] < 0.03, f"the lock came {1000 * (acquired - released[0]):.0f} ms after its release"


def test_as_many_requests_as_the_server_runs_at_once_reuse_their_connections(workspace, monkeypatch):
    """Each of the server's request threads may hold a connection at once; after such a burst the connections go
    back to the pool instead of being closed, so the next burst opens none (a new PostgreSQL backend costs tens of
    milliseconds under load)."""
    from sqlalchemy import event

    monkeypatch.setenv("LABELLOOP_REQUEST_THREADS", "8")
    engine = db.make_engine(workspace.engine.url.render_as_string(hide_password=False))
    opened = []
    event.listen(engine, "connect", lambda *_: opened.append(1))
    try:
        for burst in range(2):
            connections = [engine.connect() for _ in range(8)]
            for connection in connections:
                assert connection.execute(text("SELECT 1")).scalar() == 1
            for connection in connections:
                connection.close()
            if burst == 0:
                assert len(opened) == 8
        assert len(opened) == 8, f"the second burst opened {len(opened) - 8} new connections"
    finally:
        engine.dispose()
