"""The Label Studio ML backend (`labelloop serve-ml`) answers Label Studio's own requests.

The requests are built as Label Studio builds them (label_studio/ml/api_connector.py: `setup` sends project "<id>.<created
timestamp>", schema, hostname, access_token, extra_params; `make_predictions` sends tasks, project, label_config and
params {login, password, context}); the answers are checked against the protocol (label-studio-ml-backend,
label_studio_ml/api.py: /setup -> {"model_version"}, /predict -> {"results": [per task {"result", "score",
"model_version"}]}) and the prediction format of https://labelstud.io/guide/task_format (regions with from_name,
to_name, type, value; rectangles in percent of original_width × original_height). Webhook events follow
https://labelstud.io/guide/webhook_reference ({"action", "annotation", "task", "project"}).

label-studio-sdk cannot be installed here under constraints.txt (it pins numpy and opencv versions that would replace
the project's), and label-studio-ml 1.0.9 (the newest that resolves) downgrades Flask's Jinja2 and Werkzeug: the
client side is httpx (FastAPI's TestClient) sending the JSON Label Studio sends.
"""

from __future__ import annotations

import csv
import http.server
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select

from labelloop.errors import NotFound
from labelloop.server.ml_backend import create_ml_backend
from labelloop.services.assist.ls_images import LabelStudioAccess
from labelloop.services.assist.model_kinds.classifier import DEFAULT_ENCODER
from labelloop.services.assist.models import get_model, load_estimator
from labelloop.services.data.importing import import_path
from labelloop.services.jobs import create_job, run_job
from labelloop.services.projects import get_project, get_row, update_settings
from labelloop.store.tables import AnnotationRow, EmbeddingRow, ItemRow, ModelRow

from conftest import snapshot

CLASSES = ["ant", "bee"]
CHOICES_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Choices name="choice" toName="image">
    <Choice value="ant"/><Choice value="bee"/>
  </Choices>
</View>"""
BOX_CONFIG = """<View>
  <Image name="img" value="$picture"/>
  <RectangleLabels name="tag" toName="img"><Label value="raccoon"/></RectangleLabels>
</View>"""
LS_PROJECT = "7.1733400000"  # Label Studio's "<project id>.<created_at timestamp>"


def _upload_url(name: str) -> str:
    """The URL Label Studio gives a file uploaded to its project 7: /data/upload/<project>/<8 hex>-<file name>."""
    return f"/data/upload/7/1a2b3c4d-{name}"


@pytest.fixture
def trained(workspace, make_project, tmp_path):
    """A classification project of tiny images whose (synthetic, well separated) embeddings are in the cache, one
    item halfway between the classes, and a trained classifier. Returns {item source: item id}."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    rows, truth = [], {}
    for name in CLASSES:
        for n in range(70):
            source = f"{name}-{n}.png"
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(folder / source)
            rows.append((source, name if n < 50 else ""))
            truth[source] = name
    Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(folder / "between.png")
    rows.append(("between.png", ""))
    with (folder / "labels.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([("image", "labels"), *rows])
    make_project("syn", "classification", CLASSES)
    import_path(workspace, "syn", folder / "labels.csv", format="csv")
    centres = {name: rng.normal(0, 1, 64) for name in CLASSES}
    ids = {}
    with workspace.session() as session:
        for item in session.scalars(select(ItemRow)):
            if item.source == "between.png":
                vector = (centres["ant"] + centres["bee"]) / 2
            else:
                vector = centres[truth[item.source]] + rng.normal(0, 0.35, 64)
            session.add(EmbeddingRow(item_id=item.id, encoder=DEFAULT_ENCODER, dim=64,
                                     vector=vector.astype("<f4").tobytes()))
            ids[item.source] = item.id
    job = run_job(workspace, create_job(workspace, "train", {"project": "syn", "model": "classifier", "seed": 0}))
    assert job.state == "done", job.error
    return ids


def _client(workspace, name="syn", **kwargs) -> TestClient:
    return TestClient(create_ml_backend(workspace, name, **kwargs))


def _predict_request(tasks, config=CHOICES_CONFIG):
    return {"tasks": tasks, "project": LS_PROJECT, "label_config": config,
            "params": {"login": None, "password": None, "context": None}}


def _task(task_id: int, url: str, key: str = "image") -> dict:
    return {"id": task_id, "data": {key: url}, "annotations": [], "predictions": []}


def test_health_and_setup_answer_as_the_protocol_says(workspace, trained):
    client = _client(workspace)
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "UP"
    assert client.get("/").json()["status"] == "UP"
    setup = client.post("/setup", json={"project": LS_PROJECT, "schema": CHOICES_CONFIG,
                                        "hostname": "http://localhost:8080", "access_token": "abc123",
                                        "extra_params": None})
    assert setup.status_code == 200
    assert setup.json() == {"model_version": "classifier:1"}


def test_predict_returns_only_calibrated_prelabels_above_the_threshold(workspace, trained):
    sources = ["ant-55.png", "bee-60.png", "ant-62.png", "bee-51.png", "between.png", "ant-3.png", "bee-4.png",
               "ant-69.png"]
    tasks = [_task(100 + n, _upload_url(s)) for n, s in enumerate(sources)]
    response = _client(workspace).post("/predict", json=_predict_request(tasks))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == "classifier:1"
    results = body["results"]
    assert len(results) == len(tasks)
    with workspace.session() as session:
        project = get_project(session, "syn")
    prelabeller = load_estimator(workspace, get_model(workspace, project, "classifier"))
    X = np.stack([np.frombuffer(v, "<f4") for v in _vectors(workspace, [trained[s] for s in sources])])
    proba, accepted = prelabeller.prelabel(X)
    labelled = 0
    for source, prediction, p, ok in zip(sources, results, proba, accepted):
        assert set(prediction) == {"result", "score", "model_version"}
        assert prediction["model_version"] == "classifier:1"
        assert prediction["score"] == pytest.approx(p.max(), abs=1e-4)
        if not ok.any():
            assert prediction["result"] == [], source
            continue
        labelled += 1
        (region,) = prediction["result"]
        assert set(region) == {"id", "from_name", "to_name", "type", "value", "score"}
        assert (region["from_name"], region["to_name"], region["type"]) == ("choice", "image", "choices")
        k = int(np.flatnonzero(ok)[0])
        assert region["value"] == {"choices": [CLASSES[k]]}
        assert region["score"] >= prelabeller.thresholds_[k] - 1e-4
        assert region["value"]["choices"] == [source.split("-")[0]]  # well separated: the pre-labels are right
    assert labelled >= 6
    assert results[sources.index("between.png")]["result"] == []  # halfway between the classes: below threshold


def _vectors(workspace, ids):
    with workspace.session() as session:
        found = dict(session.execute(select(EmbeddingRow.item_id, EmbeddingRow.vector)
                                     .where(EmbeddingRow.item_id.in_(ids))).all())
    return [found[i] for i in ids]


def test_predict_follows_the_project_target_without_retraining(workspace, trained):
    client = _client(workspace)
    tasks = [_task(1, _upload_url("between.png")), _task(2, _upload_url("ant-60.png"))]
    before = client.post("/predict", json=_predict_request(tasks)).json()["results"]
    with workspace.session() as session:
        update_settings(session, get_row(session, "syn"), {"target_precision": 0.5})
    after = client.post("/predict", json=_predict_request(tasks)).json()["results"]
    assert before[1]["result"] and after[1]["result"]
    # A lower target lowers the thresholds (chosen again in memory): the ambiguous item may now pass, never fewer.
    assert len(after[0]["result"]) >= len(before[0]["result"])
    with workspace.session() as session:
        assert session.scalar(select(func.count()).select_from(ModelRow)) == 1


def test_webhook_stores_the_label_and_retrains_when_due(workspace, trained):
    with workspace.session() as session:
        update_settings(session, get_row(session, "syn"), {"retrain_every": 2})
    app = create_ml_backend(workspace, "syn")
    client = TestClient(app)

    def event(task_id: int, source: str, label: str, action="ANNOTATION_CREATED") -> dict:
        return {"action": action, "project": {"id": 7, "label_config": CHOICES_CONFIG},
                "task": {"id": task_id, "data": {"image": _upload_url(source)}},
                "annotation": {"id": 900 + task_id, "task": task_id, "completed_by": 3, "was_cancelled": False,
                               "result": [{"id": "r1", "from_name": "choice", "to_name": "image", "type": "choices",
                                           "value": {"choices": [label]}}]}}

    first = client.post("/webhook", json=event(1, "ant-60.png", "ant"))
    assert first.status_code == 201, first.text
    assert first.json()["status"] == "ok"
    assert first.json()["result"]["retrain"] == "not due (1 of 2 new labels)"
    with workspace.session() as session:
        row = session.scalar(select(AnnotationRow).where(AnnotationRow.item_id == trained["ant-60.png"]))
        assert (row.version, row.author, row.shapes) == (1, "label-studio:3", [{"type": "class", "label": "ant"}])
    again = client.post("/webhook", json=event(1, "ant-60.png", "ant"))  # Label Studio retries a delivery
    assert again.json()["result"]["unchanged"] is True
    updated = client.post("/webhook", json=event(1, "ant-60.png", "bee", "ANNOTATION_UPDATED"))
    assert updated.json()["result"]["annotation_version"] == 2
    second = client.post("/webhook", json=event(2, "bee-61.png", "bee"))
    assert second.json()["result"]["retrain"] == "started"
    outcome = app.state.backend.wait_for_retraining(timeout=300)
    assert outcome and outcome["model"] == "classifier:2", outcome
    with workspace.session() as session:
        model = session.scalar(select(ModelRow).where(ModelRow.version == 2))
        assert {trained["ant-60.png"], trained["bee-61.png"]} <= set(model.item_ids)
    assert client.post("/predict", json=_predict_request([_task(1, _upload_url("ant-3.png"))])).json()[
        "model_version"] == "classifier:2"
    ignored = client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 7}})
    assert ignored.status_code == 200 and ignored.json()["status"] == "ignored"


def test_bad_requests_get_clear_errors_and_change_nothing(workspace, trained, tmp_path):
    with pytest.raises(NotFound, match="no project named 'nope'"):
        create_ml_backend(workspace, "nope")
    client = _client(workspace)
    before = snapshot(workspace)
    missing = client.post("/predict", json=_predict_request([_task(1, _upload_url("ant-1.png")),
                                                             _task(2, _upload_url("wasp-9.png"))]))
    assert missing.status_code == 404
    assert missing.json()["status"] == "error"
    assert "task 2" in missing.json()["error"] and "wasp-9.png" in missing.json()["error"]
    label = {"id": "r", "from_name": "choice", "to_name": "image", "type": "choices", "value": {"choices": ["ant"]}}
    webhook = client.post("/webhook", json={
        "action": "ANNOTATION_CREATED", "project": {"id": 7, "label_config": CHOICES_CONFIG},
        "task": {"id": 5, "data": {"image": "http://127.0.0.1:9/nowhere/wasp.png"}},
        "annotation": {"id": 1, "completed_by": 1, "result": [label]}})
    assert webhook.status_code == 404 and "task 5" in webhook.json()["error"]
    wrong_class = client.post("/webhook", json={
        "action": "ANNOTATION_CREATED", "project": {"id": 7, "label_config": CHOICES_CONFIG},
        "task": {"id": 6, "data": {"image": _upload_url("ant-1.png")}},
        "annotation": {"id": 2, "completed_by": 1, "result": [{**label, "value": {"choices": ["wasp"]}}]}})
    assert wrong_class.status_code == 400 and "wasp" in wrong_class.json()["error"]
    not_json = client.post("/predict", content=b"{tasks", headers={"content-type": "application/json"})
    assert not_json.status_code == 400 and "not JSON" in not_json.json()["error"]
    no_tasks = client.post("/predict", json={"tasks": "all"})
    assert no_tasks.status_code == 400 and "'tasks' must be a list" in no_tasks.json()["error"]
    no_choices = client.post("/setup", json={"project": LS_PROJECT, "schema": BOX_CONFIG})
    assert no_choices.status_code == 400 and "<Choices>" in no_choices.json()["error"]
    fewer = CHOICES_CONFIG.replace('<Choice value="bee"/>', "")
    assert "bee" in client.post("/setup", json={"project": LS_PROJECT, "schema": fewer}).json()["error"]
    assert snapshot(workspace) == before


def test_cli_refuses_an_unknown_project(workspace, trained):
    from typer.testing import CliRunner

    from labelloop.cli.main import app

    result = CliRunner().invoke(app, ["serve-ml", "nope", "--data-dir", str(workspace.root)])
    assert result.exit_code != 0
    assert "no project named 'nope'" in str(result.exception)


@pytest.fixture
def raccoons(shared_data, tmp_path) -> Path:
    folder = tmp_path / "raccoon"
    folder.mkdir()
    for n in (1, 2):
        shutil.copy(shared_data / "raccoon" / "images" / f"raccoon-{n}.jpg", folder)
    return folder


class _LabelStudioFiles(http.server.BaseHTTPRequestHandler):
    """Label Studio's file serving, as far as the backend sees it: /data/upload/... with `Authorization: Token`."""

    token = "ls-token"
    folder: Path

    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1].split("-", 1)[-1]
        if self.headers.get("Authorization") != f"Token {self.token}":
            self.send_response(401)
            self.end_headers()
            return
        data = (self.folder / name).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_detection_labels_come_back_in_pixels_and_new_images_are_fetched_with_the_token(workspace, make_project,
                                                                                       raccoons):
    make_project("boxes", "detection", ["raccoon"])
    _LabelStudioFiles.folder = raccoons
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _LabelStudioFiles)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        app = create_ml_backend(workspace, "boxes", access=LabelStudioAccess())
        client = TestClient(app)
        hostname = f"http://127.0.0.1:{server.server_address[1]}"
        setup = client.post("/setup", json={"project": LS_PROJECT, "schema": BOX_CONFIG, "hostname": hostname,
                                            "access_token": "wrong"})
        assert setup.json() == {"model_version": "none"}
        width, height = Image.open(raccoons / "raccoon-1.jpg").size
        region = {"id": "b1", "from_name": "tag", "to_name": "img", "type": "rectanglelabels",
                  "original_width": width, "original_height": height, "image_rotation": 0,
                  "value": {"x": 10.0, "y": 20.0, "width": 50.0, "height": 40.0, "rotation": 0,
                            "rectanglelabels": ["raccoon"]}}
        event = {"action": "ANNOTATION_CREATED", "project": {"id": 7, "label_config": BOX_CONFIG},
                 "task": {"id": 11, "data": {"picture": "/data/upload/7/0badcafe-raccoon-1.jpg"}},
                 "annotation": {"id": 5, "completed_by": {"id": 2, "email": "a@example.org"}, "result": [region]}}
        before = snapshot(workspace)
        refused = client.post("/webhook", json=event)
        assert refused.status_code == 404 and "check the Label Studio token" in refused.json()["error"]
        assert snapshot(workspace) == before
        client.post("/setup", json={"project": LS_PROJECT, "schema": BOX_CONFIG, "hostname": hostname,
                                    "access_token": _LabelStudioFiles.token})
        stored = client.post("/webhook", json=event)
        assert stored.status_code == 201, stored.text
        assert stored.json()["result"]["item_added"] is True
        with workspace.session() as session:
            item = session.scalar(select(ItemRow))
            annotation = session.scalar(select(AnnotationRow))
        assert item.source == "raccoon-1.jpg" and (item.width, item.height) == (width, height)
        assert annotation.author == "label-studio:a@example.org"
        (box,) = annotation.shapes
        assert box["label"] == "raccoon"
        expected = (0.1 * width, 0.2 * height, 0.6 * width, 0.6 * height)
        assert np.allclose([box["x0"], box["y0"], box["x1"], box["y1"]], expected, atol=0.5)
        # Now in the project: the same task finds the item by its upload name, with no model yet.
        predicted = client.post("/predict", json=_predict_request([event["task"]], BOX_CONFIG)).json()
        assert predicted["results"] == [] and "no trained model" in predicted["message"]
    finally:
        server.shutdown()


def test_local_files_are_read_only_under_the_named_folder(workspace, make_project, raccoons, tmp_path):
    make_project("boxes", "detection", ["raccoon"])
    client = _client(workspace, "boxes", access=LabelStudioAccess(local_root=raccoons.resolve()))
    region = {"from_name": "tag", "to_name": "img", "type": "rectanglelabels",
              "value": {"x": 5, "y": 5, "width": 10, "height": 10, "rectanglelabels": ["raccoon"]}}

    def event(url: str) -> dict:
        return {"action": "ANNOTATION_CREATED", "project": {"id": 7, "label_config": BOX_CONFIG},
                "task": {"id": 1, "data": {"picture": url}}, "annotation": {"id": 1, "result": [region]}}

    before = snapshot(workspace)
    outside = client.post("/webhook", json=event("/data/local-files/?d=../../etc/passwd"))
    assert outside.status_code == 400 and "leaves the local images folder" in outside.json()["error"]
    assert snapshot(workspace) == before
    inside = client.post("/webhook", json=event("/data/local-files/?d=raccoon-2.jpg"))
    assert inside.status_code == 201, inside.text
    with workspace.session() as session:
        assert session.scalar(select(ItemRow.source)) == "raccoon-2.jpg"


@pytest.mark.slow
def test_detector_prelabels_are_the_boxes_above_its_threshold_in_percent(workspace, make_project, tmp_path):
    """A detector trained on drawn shapes, with enough held-out images to certify a threshold: the backend answers
    exactly the boxes the detector kind itself marks as pre-labels, as rectangles in percent of the image."""
    from test_detector import FAST, drawn_shapes

    from labelloop.domain import Box
    from labelloop.services.labelling import annotations
    from labelloop.store.tables import PredictionRow

    make_project("shapes", "detection", ["square", "disc"])
    folder = tmp_path / "shapes"
    folder.mkdir()
    images, boxes = drawn_shapes(44, 3)
    for n, image in enumerate(images):
        Image.fromarray(image).save(folder / f"s{n:02d}.png")
    import_path(workspace, "shapes", folder, format="images")
    names = {1: "square", 2: "disc"}
    with workspace.session() as session:
        project = get_project(session, "shapes")
        ids = {Path(r.source).stem: r.id for r in session.scalars(select(ItemRow))}
        for n, target in enumerate(boxes[:40]):
            shapes = [Box(names[int(k)], *map(float, b)) for b, k in zip(target["boxes"], target["labels"])]
            annotations.save(session, project, ids[f"s{n:02d}"], shapes, author="ann", base_version=None)
        update_settings(session, get_row(session, "shapes"), {"target_precision": 0.8})
        project = get_project(session, "shapes")
    held_out = ",".join(str(ids[f"s{n:02d}"]) for n in range(24, 40))
    # Two threads, fixed: by default the thread count follows the machine's load, and this short run's result
    # swings with the sums' order (mAP@0.5 0.54 and no certified box on 1 thread; it passes on 2)
    job = run_job(workspace, create_job(workspace, "train", {"project": "shapes", "model": "detector", "epochs": 8,
                                                              **FAST, "threads": 2, "test_items": held_out,
                                                              "seed": 0}))
    assert job.state == "done", job.error
    fresh = [ids[f"s{n:02d}"] for n in range(40, 44)]
    # The detector kind's own pre-labels, called directly: its predict job cannot store its summary when a box is
    # pre-labelled (a numpy count in the job's JSON result; reported, not fixed here).
    from labelloop.jobs.registry import JobContext
    from labelloop.services.assist.model_kinds import get_model_kind

    kind = get_model_kind("detector")
    kind.predict(workspace, project, get_model(workspace, project, "detector"), fresh, {},
                 JobContext(0, {}, lambda *a: None, lambda line: None))
    with workspace.session() as session:
        own = {r.item_id: [s for s in r.shapes if s["attributes"]["prelabel"]]
               for r in session.scalars(select(PredictionRow))}
    assert sum(map(len, own.values())) >= 2, "no box reached a certified threshold: the test shows nothing"
    config = BOX_CONFIG.replace('<Label value="raccoon"/>', '<Label value="square"/><Label value="disc"/>')
    tasks = [_task(n, _upload_url(f"s{n:02d}.png"), "picture") for n in range(40, 44)]
    body = _client(workspace, "shapes").post("/predict", json=_predict_request(tasks, config)).json()
    assert body["model_version"] == "detector:1"
    for n, prediction in zip(range(40, 44), body["results"]):
        expected = own[ids[f"s{n:02d}"]]
        assert len(prediction["result"]) == len(expected)
        for region, shape in zip(prediction["result"], expected):
            assert (region["from_name"], region["to_name"], region["type"]) == ("tag", "img", "rectanglelabels")
            assert (region["original_width"], region["original_height"]) == (160, 160)
            value = region["value"]
            assert value["rectanglelabels"] == [shape["label"]]
            assert region["score"] == pytest.approx(shape["score"], abs=1e-3)
            pixels = [value["x"] * 1.6, value["y"] * 1.6, (value["x"] + value["width"]) * 1.6,
                      (value["y"] + value["height"]) * 1.6]
            assert np.allclose(pixels, [shape["x0"], shape["y0"], shape["x1"], shape["y1"]], atol=0.5)
        if expected:
            assert prediction["score"] == pytest.approx(min(s["score"] for s in expected), abs=1e-3)
