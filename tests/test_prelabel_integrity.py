"""Pre-labels that are not labels: an empty classification prediction is no answer, and a second pre-label run
never queues an item twice."""

from __future__ import annotations

import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from server_support import build_team
from sqlalchemy import func, select

from labelloop.geometry import rle
from labelloop.server import create_app
from labelloop.server.background import ThreadExecutor
from labelloop.services import predictions
from labelloop.services.stats import project_stats
from labelloop.store.tables import AnnotationRow, ModelRow, PredictionDismissalRow, PredictionRow


def _model(workspace, project_id: int, kind: str = "classifier", version: int = 1) -> int:
    with workspace.session() as session:
        model = ModelRow(project_id=project_id, kind=kind, version=version, params={}, metrics={}, curves={},
                         item_ids=[], status="ready")
        session.add(model)
        session.commit()
        return model.id


def _predict(workspace, model_id: int, ref: str, shapes_of: dict[int, list[dict]]) -> None:
    with workspace.session() as session:
        predictions.save_predictions(session, [
            PredictionRow(item_id=item, model_id=model_id, model_version=ref, shapes=shapes, score=0.5)
            for item, shapes in shapes_of.items()])
        session.commit()


def _pending(workspace, item_id: int) -> list[PredictionRow]:
    with workspace.session() as session:
        return list(session.scalars(select(PredictionRow).where(PredictionRow.item_id == item_id,
                                                                PredictionRow.review_state == "pending")))


@pytest.fixture
def classes(workspace, tmp_path):
    team = build_team(workspace, tmp_path / "images", items=4, kind="classification", classes=("ant", "bee"))
    model_id = _model(workspace, team.project_id)
    empty, bee = team.item_ids[0], team.item_ids[1]
    _predict(workspace, model_id, "classifier:1", {
        empty: [],  # no class reached its threshold: only a score that ranks the item for labelling
        bee: [{"type": "class", "label": "bee", "score": 0.98, "attributes": {"prelabel": True}}]})
    return team, empty, bee


def test_an_empty_classification_prediction_cannot_be_accepted_and_changes_nothing(workspace, classes):
    team, empty, _ = classes
    with TestClient(create_app(workspace, executor=ThreadExecutor(workspace))) as client:
        prediction = _pending(workspace, empty)[0].id
        refused = client.post(f"/api/predictions/{prediction}/review", json={"action": "accept"},
                              headers=team.auth("reviewer"))
        assert refused.status_code == 400
        assert "names no class" in refused.json()["detail"]
        blank_edit = client.post(f"/api/predictions/{prediction}/review", json={"action": "edit", "shapes": []},
                                 headers=team.auth("reviewer"))
        assert blank_edit.status_code == 400
        with workspace.session() as session:
            assert session.scalar(select(func.count()).select_from(AnnotationRow)
                                  .where(AnnotationRow.item_id == empty)) == 0
        assert [p.id for p in _pending(workspace, empty)] == [prediction]  # still there, still pending
        # choosing the class is an answer: recorded as an edit
        edited = client.post(f"/api/predictions/{prediction}/review",
                             json={"action": "edit", "shapes": [{"type": "class", "label": "ant"}], "base_version": 0},
                             headers=team.auth("reviewer"))
        assert edited.status_code == 200, edited.json()
        assert edited.json()["annotation"]["shapes"][0]["label"] == "ant"


def test_the_review_queue_and_the_counts_list_only_predictions_that_name_a_class(workspace, classes):
    team, empty, bee = classes
    with TestClient(create_app(workspace, executor=ThreadExecutor(workspace))) as client:
        queue = client.get(f"/api/projects/{team.project_id}/predictions?state=pending",
                           headers=team.auth("reviewer")).json()["items"]
        assert [p["item_id"] for p in queue] == [bee]
        every = client.get(f"/api/projects/{team.project_id}/predictions", headers=team.auth("reviewer")).json()
        assert {p["item_id"] for p in every["items"]} == {empty, bee}  # still readable: they order the labelling
    assert project_stats(workspace, "zoo")["predictions"] == {"pending": 1}


def test_predicting_again_with_the_same_model_replaces_the_pending_prediction(workspace, classes):
    team, empty, bee = classes
    first = _pending(workspace, bee)[0].id
    with workspace.session() as session:
        predictions.dismiss(session, first, [0], "annotator")
        session.commit()
    same = {"type": "class", "label": "bee", "score": 0.98, "attributes": {"prelabel": True}}
    _predict(workspace, _model_id(workspace), "classifier:1", {bee: [same], empty: []})
    assert [p.id for p in _pending(workspace, bee)] == [first]  # unchanged: the row, and what was dismissed, stay
    with workspace.session() as session:
        assert predictions.dismissed(session, [first], "annotator") == {first: [0]}

    other = {"type": "class", "label": "ant", "score": 0.97, "attributes": {"prelabel": True}}
    _predict(workspace, _model_id(workspace), "classifier:1", {bee: [other]})
    rows = _pending(workspace, bee)
    assert len(rows) == 1 and rows[0].shapes == [other]
    with workspace.session() as session:  # what was dismissed of the old shapes does not hide the new ones
        assert session.scalar(select(func.count()).select_from(PredictionDismissalRow)) == 0

    # a reviewed prediction is history: it stays, and the next run adds a pending one beside it
    with workspace.session() as session:
        session.get(PredictionRow, rows[0].id).review_state = "rejected"
        session.commit()
    _predict(workspace, _model_id(workspace), "classifier:1", {bee: [other]})
    with workspace.session() as session:
        states = sorted(session.scalars(select(PredictionRow.review_state).where(PredictionRow.item_id == bee)))
    assert states == ["pending", "rejected"]

    # another model version's prediction is its own suggestion
    newer = _model(workspace, team.project_id, version=2)
    _predict(workspace, newer, "classifier:2", {bee: [other]})
    assert len(_pending(workspace, bee)) == 2


def _model_id(workspace) -> int:
    with workspace.session() as session:
        return session.scalar(select(ModelRow.id).where(ModelRow.version == 1))


def test_pre_labelling_twice_through_the_server_leaves_one_pending_prediction_per_item(workspace, tmp_path):
    team = build_team(workspace, tmp_path / "images", items=4, kind="semantic", classes=("background", "cell"))
    executor = ThreadExecutor(workspace)
    with TestClient(create_app(workspace, executor=executor)) as client:
        for item in team.item_ids[:2]:
            marks = np.zeros((48, 64), np.uint8)
            marks[5:10, 5:30], marks[30:40, 20:50] = 1, 2
            shapes = []
            for index, label in ((1, "background"), (2, "cell")):
                size, counts = rle.encode(marks == index)
                shapes.append({"type": "scribble", "label": label, "size": list(size), "counts": counts})
            client.post(f"/api/items/{item}/annotations", json={"shapes": shapes, "base_version": 0},
                        headers=team.auth("annotator"))
        trained = client.post(f"/api/projects/{team.project_id}/train",
                              json={"model": "pixel-rf", "params": {"trees": 5}}, headers=team.auth("manager"))
        assert _wait(client, trained.json()["id"], team)["state"] == "done"
        for params in ({}, {}, {"instances": "watershed"}):  # the same run twice, then one that draws other shapes
            predicted = client.post(f"/api/projects/{team.project_id}/predict",
                                    json={"model": "pixel-rf", "params": params}, headers=team.auth("manager"))
            assert _wait(client, predicted.json()["id"], team)["state"] == "done"
            pending = client.get(f"/api/projects/{team.project_id}/predictions?state=pending",
                                 headers=team.auth("reviewer")).json()["items"]
            assert sorted(p["item_id"] for p in pending) == team.item_ids[2:]
        assert {s["type"] for p in pending for s in p["shapes"]} == {"polygon"}  # the last run's shapes
    executor.shutdown()


def _wait(client, job_id: int, team, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}", headers=team.auth("manager")).json()
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")
