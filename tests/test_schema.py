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


def test_upgrading_a_workspace_counts_the_shapes_of_its_existing_predictions(tmp_path, database_url):
    """0006 adds predictions.shape_count: rows written before it get their count from their shapes."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import select, text

    from labelloop.store.db import MIGRATIONS
    from labelloop.store.tables import PredictionRow
    from server_support import build_team

    workspace = Workspace.init(tmp_path / "ws", database_url=database_url)
    team = build_team(workspace, tmp_path / "images", items=2, kind="classification", classes=("ant", "bee"))
    with workspace.session() as session:
        session.add_all([PredictionRow(item_id=team.item_ids[0], model_version="classifier:1", shapes=[], score=0.3),
                         PredictionRow(item_id=team.item_ids[1], model_version="classifier:1", score=0.9,
                                       shapes=[{"type": "class", "label": "ant"}, {"type": "class", "label": "bee"}])])
        session.commit()
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with workspace.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0005")
        assert "shape_count" not in str(connection.execute(text("SELECT * FROM predictions")).keys())
        command.upgrade(config, "head")
    with workspace.session() as session:
        counts = dict(session.execute(select(PredictionRow.item_id, PredictionRow.shape_count)).all())
    workspace.close()
    assert counts == {team.item_ids[0]: 0, team.item_ids[1]: 2}
