"""Pre-labels that are not labels: an empty classification prediction is no answer, and a second pre-label run
never queues an item twice."""

from __future__ import annotations


import pytest
from fastapi.testclient import TestClient
from server_support import build_team, scribble_two_items, wait_for_job
from sqlalchemy import func, select

from labelloop.server import create_app
from labelloop.server.background import ThreadExecutor
from labelloop.services.assist import predictions
from labelloop.services.data.stats import project_stats
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
        scribble_two_items(client, team)
        trained = client.post(f"/api/projects/{team.project_id}/train",
                              json={"model": "pixel-rf", "params": {"trees": 5}}, headers=team.auth("manager"))
        assert wait_for_job(client, trained.json()["id"], team)["state"] == "done"
        for params in ({}, {}, {"instances": "watershed"}):  # the same run twice, then one that draws other shapes
            predicted = client.post(f"/api/projects/{team.project_id}/predict",
                                    json={"model": "pixel-rf", "params": params}, headers=team.auth("manager"))
            assert wait_for_job(client, predicted.json()["id"], team)["state"] == "done"
            pending = client.get(f"/api/projects/{team.project_id}/predictions?state=pending",
                                 headers=team.auth("reviewer")).json()["items"]
            assert sorted(p["item_id"] for p in pending) == team.item_ids[2:]
        assert {s["type"] for p in pending for s in p["shapes"]} == {"polygon"}  # the last run's shapes
    executor.shutdown()



def _box(x: float, **attributes) -> dict:
    return {"type": "box", "label": "cat", "x0": x, "y0": 5, "x1": x + 10, "y1": 25, "score": 0.9,
            "attributes": attributes}


def test_a_review_records_the_effort_it_saved_and_the_model_card_adds_it_up(workspace, tmp_path):
    """Of the pre-labels shown: accepted as they were, adjusted (with IoU), rejected; and the boxes added by hand."""
    team = build_team(workspace, tmp_path / "images", items=2, kind="detection", classes=("cat", "dog"))
    model_id = _model(workspace, team.project_id, kind="detector")
    first, second = team.item_ids
    shapes = [_box(0, prelabel=True), _box(15, prelabel=True), _box(30, prelabel=True), _box(45, prelabel=False)]
    _predict(workspace, model_id, "detector:1", {first: shapes, second: shapes})
    with TestClient(create_app(workspace, executor=ThreadExecutor(workspace))) as client:
        one, two = (_pending(workspace, item)[0].id for item in (first, second))
        edit = [{**_box(0), "attributes": {"prediction": f"{one}:0"}},  # as predicted
                {**_box(16), "attributes": {"prediction": f"{one}:1"}},  # moved 1 px
                {"type": "box", "label": "dog", "x0": 5, "y0": 30, "x1": 30, "y1": 45}]  # a miss, drawn by hand
        for shape in edit:
            shape.pop("score", None)
        answer = client.post(f"/api/predictions/{one}/review", json={"action": "edit", "shapes": edit,
                                                                     "base_version": 0}, headers=team.auth("reviewer"))
        assert answer.status_code == 200, answer.json()
        accepted = client.post(f"/api/predictions/{two}/review", json={"action": "accept", "base_version": 0},
                               headers=team.auth("reviewer")).json()["annotation"]
        assert len(accepted["shapes"]) == 3  # the box under the threshold is no pre-label: not accepted with them
        assert [s["attributes"]["prediction"] for s in accepted["shapes"]] == [f"{two}:0", f"{two}:1", f"{two}:2"]
        listed = {p["id"]: p for p in client.get(f"/api/projects/{team.project_id}/predictions",
                                                 headers=team.auth("reviewer")).json()["items"]}
        models = client.get(f"/api/projects/{team.project_id}/models", headers=team.auth("manager")).json()["items"]
    effort = listed[one]["effort"]
    assert {k: effort[k] for k in ("shown", "accepted", "adjusted", "rejected", "added")} == \
        {"shown": 3, "accepted": 1, "adjusted": 1, "rejected": 1, "added": 1}
    assert effort["adjusted_iou"] == [pytest.approx(9 * 20 / (11 * 20), abs=1e-3)]
    assert listed[two]["effort"]["accepted"] == 3
    (card,) = [m for m in models if m["id"] == model_id]
    assert card["effort"]["accepted_unedited"] == pytest.approx(4 / 6, abs=1e-4)
    assert any(f["name"] == "pre-labels accepted unedited" and f["value"].startswith("66.7 % of 6")
               for f in card["card"]["figures"])
