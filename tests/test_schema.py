"""The Alembic migrations build exactly the schema that store/tables.py declares."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from labelloop.services.workspace import Workspace
from labelloop.store.tables import Base


def test_migrations_match_the_declared_tables(tmp_path, database_url):
    workspace = Workspace.init(tmp_path / "ws", database_url=database_url)
    with workspace.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    workspace.close()
    assert differences == []
