"""Engine creation (SQLite with WAL and foreign keys, or PostgreSQL) and schema migration."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from labelloop.errors import InvalidInput

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).with_name("migrations")
# A pooled PostgreSQL connection unused for this long is pinged before it is handed out. pool_pre_ping would ping
# on every checkout: one more round trip per request on the server's hot path, for connections used a moment ago.
IDLE_PING_SECONDS = 10.0
BUSY_TIMEOUT_S = 30.0  # how long an SQLite writer waits for another one to finish
# Connections kept open per process beyond SQLAlchemy's default of 5: the server runs up to 8 request threads (or
# $LABELLOOP_REQUEST_THREADS) plus job and background threads. With too small a pool, every request past the 5th
# at once opened a connection and closed it afterwards (a new PostgreSQL backend each time: tens of ms under load).
POOL_EXTRA = 4
MAX_OVERFLOW = 16


def pool_size() -> int:
    return max(5, int(os.environ.get("LABELLOOP_REQUEST_THREADS", "8")) + POOL_EXTRA)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable across process crashes, fast commits
    cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    cursor.close()


def make_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise InvalidInput(f"database URL {url!r} is not valid: {exc}") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S}, pool_size=pool_size(),
                               max_overflow=MAX_OVERFLOW)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if backend in ("postgresql", "postgres"):
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        engine = create_engine(parsed, pool_size=pool_size(), max_overflow=MAX_OVERFLOW)
        _ping_when_idle(engine)
        return engine
    raise InvalidInput(f"database URL {url!r}: only sqlite:/// and postgresql:// are supported")


def _ping_when_idle(engine: Engine) -> None:
    """Hand out only live connections without a round trip per checkout: a connection that sat in the pool for
    IDLE_PING_SECONDS is pinged first (a restarted database or a dropped idle connection shows there), and one that
    fails is replaced. A connection that dies while in use fails its request, and SQLAlchemy then invalidates the
    pool's older connections, as it does for any disconnect."""

    @event.listens_for(engine, "checkin")
    def _note_checkin(_dbapi_connection, record) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_stale(dbapi_connection, record, _proxy) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
            dbapi_connection.rollback()  # the ping's SELECT opened a transaction: leave the connection idle
        except engine.dialect.loaded_dbapi.Error as error:
            log.info("replacing a pooled database connection that went away: %s", error)
            raise exc.DisconnectionError(str(error)) from error  # the pool retries with a fresh connection


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (a no-op when it is already there)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
