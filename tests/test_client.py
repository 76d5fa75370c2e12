"""The Python client against a live `labelloop serve`: projects, upload, items, next, annotations with
base_version (409 -> StaleVersion), review, train/predict jobs with waiting and progress, predictions, export."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from labelloop.client import (
    Client,
    ClientInvalidInput,
    ClientNotFound,
    ExportResult,
    NotAllowed,
    StaleVersion,
)
from labelloop.domain import Scribble
from labelloop.errors import Conflict, InvalidInput
from labelloop.geometry import rle
from labelloop.server.schemas import AnnotationOut, ItemOut, JobOut, NextOut, PredictionOut, ProjectOut
from ui_support import PASSWORD, free_port, start_server, stop_server, write_images


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A workspace with alice and bob (API tokens), served by `labelloop serve` on a free port."""
    from labelloop.services.labelling import users
    from labelloop.services.workspace import Workspace

    root = tmp_path_factory.mktemp("client")
    workspace = Workspace.init(root / "workspace")
    tokens = {}
    with workspace.session() as session:
        for name in ("alice", "bob"):
            user = users.create_user(session, name, PASSWORD)
            tokens[name] = users.create_token(session, user.id, "client tests")[1]
    port = free_port()
    process = start_server(workspace.root, port)
    yield {"url": f"http://127.0.0.1:{port}", "tokens": tokens, "root": root}
    stop_server(process)
    workspace.close()


@pytest.fixture
def alice(server):
    with Client(server["url"], server["tokens"]["alice"]) as client:
        yield client


@pytest.fixture
def bob(server):
    with Client(server["url"], server["tokens"]["bob"]) as client:
        yield client


def scribbles(width: int, height: int) -> list[Scribble]:
    marks = np.zeros((height, width), np.uint8)
    marks[5:40, 5:60], marks[100:150, 100:200] = 1, 2
    shapes = []
    for value, label in ((1, "background"), (2, "cell")):
        size, counts = rle.encode(marks == value)
        shapes.append(Scribble(label, size, counts))
    return shapes


def new_project(client: Client, server, name: str, images: int = 3) -> tuple[ProjectOut, list[ItemOut]]:
    project = client.create_project(name, "semantic", ["background", "cell"])
    paths = write_images(server["root"] / f"images-{name}", images, start=10 * len(name))
    report = client.upload(name, paths)  # by name: the client finds the id
    assert report["items_added"] == images
    return project, list(client.items(project.id))


def test_projects_upload_items_next_annotate_and_review(alice, bob, server):
    project, items = new_project(alice, server, "cells")
    assert isinstance(project, ProjectOut) and project.kind == "semantic"
    assert [c.name for c in alice.project("cells").classes] == ["background", "cell"]
    assert all(isinstance(i, ItemOut) and i.state == "unlabelled" and (i.width, i.height) == (320, 240) for i in items)
    assert alice.image(items[0].id)[:8] == b"\x89PNG\r\n\x1a\n"

    work = alice.next("cells")
    assert isinstance(work, NextOut) and work.item is not None and work.lease_expires_at
    saved = alice.annotate(work.item.id, scribbles(320, 240), base_version=work.base_version)
    assert isinstance(saved, AnnotationOut) and saved.version == 1 and saved.author == "alice"
    assert alice.item(work.item.id).base_version == 1
    assert [a.version for a in alice.annotations(work.item.id)] == [1]

    alice.set_member("cells", "bob", "reviewer")
    assert [a.item_id for a in bob.review_queue("cells")] == [work.item.id]
    verdict = bob.review(work.item.id, "accept", version=1)
    assert verdict.action == "accept" and verdict.reviewer == "bob"
    assert [i.id for i in alice.items("cells", state="accepted")] == [work.item.id]


def test_a_stale_base_version_raises_stale_version_with_the_current_revision(alice, bob, server):
    project, items = new_project(alice, server, "race", images=1)
    alice.set_member(project.id, "bob", "annotator")
    item = items[0].id
    first = alice.annotate(item, scribbles(320, 240)[:1], base_version=0)
    with pytest.raises(StaleVersion) as stale:
        bob.annotate(item, scribbles(320, 240)[1:], base_version=0)  # bob started before alice saved
    error = stale.value
    assert error.status == 409 and isinstance(error, Conflict)
    assert error.current["version"] == first.version == 1 and error.current["author"] == "alice"
    assert "based on version 0, the current version is 1" in str(error) and "base_version" in str(error)
    again = bob.annotate(item, scribbles(320, 240)[1:], base_version=bob.item(item).base_version)
    assert again.version == 2


def test_train_and_predict_wait_with_progress_then_review_a_prediction(alice, server):
    project, items = new_project(alice, server, "model", images=3)
    for item in items[:2]:
        alice.annotate(item.id, scribbles(320, 240), base_version=0)
    heard = []
    trained = alice.train(project.id, "pixel-rf", {"trees": 5}, wait=True, timeout=300,
                          progress=lambda done, total, message: heard.append((done, total, message)))
    assert isinstance(trained, JobOut) and trained.state == "done" and heard
    started = alice.predict(project.id, "pixel-rf")
    assert started.state in ("queued", "running", "done")
    assert alice.wait(started, timeout=300).state == "done"
    pending = list(alice.predictions(project.id, state="pending"))
    assert [p.item_id for p in pending] == [items[2].id] and isinstance(pending[0], PredictionOut)
    verdict = alice.review_prediction(pending[0].id, "accept", base_version=0)
    assert verdict.action == "accept" and verdict.annotation is not None
    assert list(alice.predictions(project.id, state="pending")) == []


def test_export_downloads_a_zip_or_a_folder(alice, server, tmp_path):
    project, items = new_project(alice, server, "exported", images=2)
    alice.annotate(items[0].id, scribbles(320, 240), base_version=0)
    zipped = alice.export(project.id, tmp_path / "labels.zip", format="scribbles")
    assert isinstance(zipped, ExportResult) and zipped.items == 1 and "1 not labelled" in zipped.left_out
    assert any(name.startswith("scribbles/") for name in zipfile.ZipFile(zipped.path).namelist())
    folder = alice.export(project.id, tmp_path / "out", format="scribbles", images=True)
    assert (folder.path / "scribbles").is_dir() and (folder.path / "images").is_dir()
    with pytest.raises(InvalidInput, match="not empty"):
        alice.export(project.id, tmp_path / "out", format="scribbles")


def test_errors_are_labelloop_exceptions_with_the_servers_detail(alice, server):
    with Client(server["url"], "not-a-token") as stranger, pytest.raises(NotAllowed) as denied:
        stranger.projects()
    assert denied.value.status == 401
    with pytest.raises(ClientNotFound):
        alice.project("no such project")
    with pytest.raises(ClientNotFound):
        alice.item(999_999)
    with pytest.raises(ClientInvalidInput) as invalid:
        alice.create_project("bad", "not-a-kind")
    assert invalid.value.status == 422 and "kind" in str(invalid.value)
    project, items = new_project(alice, server, "checked", images=1)
    with pytest.raises(InvalidInput, match="shapes"):  # refused by the schema before anything is sent
        alice.annotate(items[0].id, [{"type": "box", "label": "cell", "x0": 1}], base_version=0)
    assert alice.annotations(items[0].id) == []
