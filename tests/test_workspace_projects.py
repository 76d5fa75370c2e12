"""Workspace, blob store, projects and annotation revisions, on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import text

from labelloop.domain import Box, ClassLabel
from labelloop.errors import Conflict, InvalidInput, NotFound
from labelloop.services.labelling import annotations
from labelloop.services.projects import create_project, get_project, list_projects
from labelloop.services.workspace import Workspace
from labelloop.store.tables import BlobRow, ItemRow


def test_sqlite_workspace_uses_wal_and_foreign_keys(tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    with ws.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    tables = {r[0] for r in sqlite3.connect(tmp_path / "ws" / "labelloop.db").execute("select name from sqlite_master")}
    assert {"projects", "items", "annotations", "predictions", "models", "jobs", "blobs", "alembic_version"} <= tables


def test_open_without_init_says_how_to_create(tmp_path):
    with pytest.raises(NotFound, match="labelloop init"):
        Workspace.open(tmp_path / "nowhere")


def test_data_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LABELLOOP_HOME", str(tmp_path / "home"))
    ws = Workspace.init()
    assert ws.root == (tmp_path / "home").resolve()
    assert Workspace.open().root == ws.root


def test_blob_store_is_content_addressed(workspace, tmp_path):
    source = tmp_path / "a.bin"
    source.write_bytes(b"hello")
    sha, created = workspace.blobs.put_file(source)
    assert sha == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824" and created
    assert workspace.blobs.put_file(source) == (sha, False)
    with workspace.blobs.open(sha) as handle:
        assert handle.read() == b"hello"
    assert list(workspace.blobs) == [sha]


def test_projects_create_list_show(workspace):
    with workspace.session() as session:
        create_project(session, "cells", "instance", ["nucleus", "cytoplasm"])
        create_project(session, "ants", "classification", ["ants", "bees"], ["#ff0000"])
    with workspace.session() as session:
        assert [p.name for p in list_projects(session)] == ["ants", "cells"]
        ants = get_project(session, "ants")
    assert ants.kind.value == "classification"
    assert [(c.name, c.index) for c in ants.classes] == [("ants", 1), ("bees", 2)]
    assert ants.classes[0].colour == "#ff0000" and ants.classes[1].colour.startswith("#")
    assert ants.settings["target_precision"] == 0.95


@pytest.mark.parametrize(
    ("name", "kind", "classes", "error", "match"),
    [
        ("bad name/x", "detection", [], InvalidInput, "not valid"),
        ("p", "boxes", [], InvalidInput, "unknown project kind"),
        ("p", "detection", ["a", "a"], InvalidInput, "repeated: a"),
        ("p", "detection", ["a;b"], InvalidInput, "not allowed"),
    ],
)
def test_project_bad_input(workspace, name, kind, classes, error, match):
    with pytest.raises(error, match=match), workspace.session() as session:
        create_project(session, name, kind, classes)


def test_duplicate_project_and_typo_hint(workspace, make_project):
    make_project("mito", "semantic", ["mitochondrion"])
    with pytest.raises(Conflict), workspace.session() as session:
        create_project(session, "mito", "semantic")
    with pytest.raises(NotFound, match="did you mean 'mito'"), workspace.session() as session:
        get_project(session, "mitoo")


def _add_item(workspace, project_id: int, width=100, height=80) -> int:
    with workspace.session() as session:
        session.add(BlobRow(sha256="a" * 64, size=1))
        row = ItemRow(project_id=project_id, blob_sha256="a" * 64, source="x.png", page=0, format="png", width=width,
                      height=height, dtype="uint8", channels=1, meta={}, split="none", position=1)
        session.add(row)
        session.flush()
        return row.id


def test_annotations_are_append_only_revisions_with_conflicts(workspace, make_project):
    project = make_project("boxes", "detection", ["cat", "dog"])
    item = _add_item(workspace, project.id)
    with workspace.session() as session:
        first = annotations.save(session, project, item, [Box("cat", 1, 2, 30, 40)], author="ann", base_version=0)
    with workspace.session() as session:
        second = annotations.save(session, project, item, [Box("dog", 5, 5, 50, 50)], author="bob", base_version=1)
    assert (first.version, second.version) == (1, 2)
    with pytest.raises(Conflict, match="based on version 1, the current version is 2") as caught, workspace.session() as session:
        annotations.save(session, project, item, [Box("cat", 0, 0, 10, 10)], author="ann", base_version=1)
    assert caught.value.current.version == 2 and caught.value.current.author == "bob"
    with workspace.session() as session:
        history = annotations.history(session, item)
    assert [(h.version, h.author, h.shapes[0].label) for h in history] == [(1, "ann", "cat"), (2, "bob", "dog")]


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        (Box("horse", 1, 1, 5, 5), "not in the project's classes"),
        (Box("cat", 10, 10, 5, 50), "has no area"),
        (Box("cat", 0, 0, 500, 50), "outside the 100×80 image"),
        (ClassLabel("cat"), "takes box shapes"),
    ],
)
def test_wrong_annotations_are_refused_and_nothing_is_stored(workspace, make_project, shape, match):
    project = make_project("boxes", "detection", ["cat"])
    item = _add_item(workspace, project.id)
    with pytest.raises(InvalidInput, match=match), workspace.session() as session:
        annotations.save(session, project, item, [shape], author="ann", base_version=0)
    with workspace.session() as session:
        assert annotations.history(session, item) == []
