"""Shared fixtures: every workspace test runs on SQLite and on PostgreSQL (skipped with a reason when absent)."""

from __future__ import annotations

import os
import uuid
from functools import lru_cache
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PG_URL = os.environ.get("LABELLOOP_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch):
    for name in ("LABELLOOP_HOME", "LABELLOOP_DATABASE_URL", "LABELLOOP_BLOB_URL", "LABELLOOP_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATA} (they live in ../shared/data beside the repo)")
    return SHARED_DATA


@lru_cache(maxsize=1)
def _postgres_problem() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_URL, connect_timeout=3):
            return None
    except Exception as exc:  # any failure means: no usable server here
        return f"PostgreSQL not reachable at {PG_URL}: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}"


@pytest.fixture
def database_url(request, monkeypatch):
    """None for SQLite (the workspace default), or a PostgreSQL URL on a fresh schema dropped afterwards."""
    if request.param == "sqlite":
        yield None
        return
    problem = _postgres_problem()
    if problem:
        pytest.skip(problem)
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in PG_URL else "?"
    url = f"{PG_URL}{separator}options=-csearch_path%3D{schema}"
    monkeypatch.setenv("LABELLOOP_DATABASE_URL", url)  # so CLI calls inside the test use it too
    try:
        yield url
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


def pytest_generate_tests(metafunc):
    if "database_url" in metafunc.fixturenames:
        metafunc.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def workspace(tmp_path, database_url):
    from labelloop.services.workspace import Workspace

    ws = Workspace.init(tmp_path / "workspace", database_url=database_url)
    yield ws
    ws.close()


@pytest.fixture
def make_project(workspace):
    from labelloop.services.projects import create_project

    def make(name: str, kind: str, classes: list[str] | None = None):
        with workspace.session() as session:
            return create_project(session, name, kind, classes)

    return make


def snapshot(workspace) -> dict[str, object]:
    """What a user could observe of the store: row counts and the blob files on disk."""
    from sqlalchemy import func, select

    from labelloop.store.tables import AnnotationRow, BlobRow, ItemRow, JobRow, ProjectRow

    with workspace.session() as session:
        counts = {t.__tablename__: session.scalar(select(func.count()).select_from(t))
                  for t in (ProjectRow, ItemRow, AnnotationRow, BlobRow)}
        counts["project_classes"] = [list(map(lambda c: c["name"], p.classes)) for p in session.scalars(select(ProjectRow))]
    counts["blob_files"] = sorted(workspace.blobs)
    return counts
