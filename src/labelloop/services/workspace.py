"""A workspace: one directory with the database (SQLite by default) and the blob store."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from labelloop.errors import NotFound
from labelloop.store.blobs import BlobStore
from labelloop.store.db import make_engine, make_sessionmaker, migrate

log = logging.getLogger(__name__)
DEFAULT_DIR = "labelloop-data"
MARKER = "labelloop.toml"


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """--data-dir, else $LABELLOOP_HOME, else ./labelloop-data."""
    chosen = data_dir or os.environ.get("LABELLOOP_HOME") or DEFAULT_DIR
    return Path(chosen).expanduser().resolve()


class Workspace:
    """Opened once per process (or per notebook); cheap to pass around."""

    def __init__(self, root: Path, database_url: str | None = None, blob_url: str | None = None):
        self.root = root
        self.database_url = database_url or os.environ.get("LABELLOOP_DATABASE_URL") or f"sqlite:///{root / 'labelloop.db'}"
        self.blob_url = blob_url or os.environ.get("LABELLOOP_BLOB_URL") or str(root / "blobs")
        self.engine = make_engine(self.database_url)
        self.sessions = make_sessionmaker(self.engine)
        self.blobs = BlobStore(self.blob_url, cache_dir=root / "cache" / "blobs", references=self._blob_reference)

    def _blob_reference(self, sha: str) -> str | None:
        """Where a blob imported by reference lives (None for blobs stored in the blob store)."""
        from sqlalchemy import select

        from labelloop.store.tables import BlobRow

        with self.reader() as connection:
            return connection.scalar(select(BlobRow.url).where(BlobRow.sha256 == sha))

    @classmethod
    def init(cls, data_dir: str | Path | None = None, **kwargs) -> Workspace:
        root = resolve_data_dir(data_dir)
        created = not root.exists()
        root.mkdir(parents=True, exist_ok=True)
        try:
            workspace = cls(root, **kwargs)  # checks the blob store (bucket, credentials) before anything is written
        except Exception:
            if created and not any(root.iterdir()):
                root.rmdir()
            raise
        marker = root / MARKER
        if not marker.exists():
            marker.write_text("# labelloop workspace\nversion = 1\n")
        migrate(workspace.engine)
        return workspace

    @classmethod
    def open(cls, data_dir: str | Path | None = None, *, create: bool = False, **kwargs) -> Workspace:
        root = resolve_data_dir(data_dir)
        if not (root / MARKER).exists():
            if create:
                return cls.init(root, **kwargs)
            raise NotFound(f"no labelloop workspace at {root}; create one with `labelloop init --data-dir {root}`")
        workspace = cls(root, **kwargs)
        migrate(workspace.engine)
        from labelloop.services.jobs import recover_interrupted_jobs

        recover_interrupted_jobs(workspace)
        return workspace

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed when the block ends normally, rolled back on any exception."""
        with self.sessions() as session:
            with session.begin():
                yield session

    @contextmanager
    def reader(self) -> Iterator[Connection]:
        """A bare connection for a lone read on the hot path, such as who is asking: no ORM session around it, and
        on PostgreSQL autocommit, which saves the BEGIN and ROLLBACK round trips. Never write through it."""
        with self.engine.connect() as connection:
            if self.backend == "postgresql":  # pysqlite opens no transaction for a SELECT anyway
                connection.execution_options(isolation_level="AUTOCOMMIT")
            yield connection

    def close(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r}, database={self.backend})"
