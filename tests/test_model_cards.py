"""What the dashboard shows of a model (issue 24): figures in words, per-class calibration, a picture that loads."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient
from server_support import build_team

from labelloop.server import create_app
from labelloop.server.background import ThreadExecutor
from labelloop.services.assist.model_cards import model_card
from labelloop.services.assist.models import ModelInfo
from labelloop.store.tables import ModelRow


def _info(kind: str, metrics: dict, **extra) -> ModelInfo:
    return ModelInfo(1, 1, kind, 1, "ready", extra.get("params", {}), metrics, extra.get("curves", {}), [], None, None)


def test_a_classifier_card_names_its_figures_and_why_a_class_has_no_threshold():
    card = model_card(_info("classifier", {
        "target_precision": 0.95, "coverage": 0.8125, "held_out_accuracy": 0.9412, "labelled_items": 49,
        "held_out_items": 49, "calibration_method": "auto", "training_seconds": 1.2, "features": "imagenet",
        "head": "finetune", "classes": {"ants": {"threshold": 0.91, "precision": 0.97, "recall": 0.8, "coverage": 0.5, "prelabelled": 96,
                             "held_out": 25, "method": "estimate", "reason": "auto: estimate"},
                    "bees": {"threshold": None, "precision": None, "recall": None, "coverage": 0.0, "prelabelled": 0,
                             "held_out": 4, "method": "estimate", "reason": "too few held-out examples"}}}))
    figures = {f["name"]: f["value"] for f in card["figures"]}
    assert figures["target precision"] == "0.95" and figures["trained head"] == "finetune"
    assert figures["unlabelled items pre-labelled"] == "81.2 %"
    assert figures["held-out accuracy"] == "94.1 %"
    assert figures["labelled items"] == "49" and figures["training time"] == "1 s"
    assert "features" not in figures  # only what the kind lists, in words
    rows = {r["class"]: r for r in card["classes"]}
    assert rows["ants"]["reason"] == "" and rows["ants"]["precision"] == 0.97
    assert rows["bees"]["reason"] == "too few held-out examples"
    assert "did not train on" in card["note"]


def test_a_unet_card_shows_its_iou_and_a_pixel_forest_card_says_it_has_none():
    unet = model_card(_info("unet", {"val_iou": 0.8861, "validation": "held-out items", "best_epoch": 12,
                                     "epochs": 14, "training_seconds": 900.0, "stopped": "time budget"}))
    assert [f["name"] for f in unet["figures"]][:2] == ["IoU (best held-out epoch)", "measured on"]
    assert unet["figures"][0]["value"] == "0.886" and {"name": "training time", "value": "15.0 min"} in unet["figures"]
    forest = model_card(_info("pixel-rf", {"training_pixels": 7846, "features": 48, "training_seconds": 0.4}))
    assert {"name": "scribbled pixels", "value": "7,846"} in forest["figures"]
    assert "no held-out score" in forest["note"]


def test_the_curves_link_serves_the_picture_the_model_kind_drew_and_no_link_without_one(workspace, tmp_path):
    team = build_team(workspace, tmp_path / "images", items=1, kind="classification", classes=("ant", "bee"))
    from labelloop.ml.calibration import reliability_bins, reliability_png
    from labelloop.services.assist.model_kinds.classifier import _put_png

    bins = reliability_bins(np.array([0.6, 0.9, 0.95]), np.array([True, True, False]))
    png = reliability_png(bins, "test")
    digest = _put_png(workspace, png)  # as the classifier stores its reliability plot
    with workspace.session() as session:
        session.add_all([
            ModelRow(project_id=team.project_id, kind="classifier", version=1, params={"reliability_plot_sha256": digest},
                     metrics={}, curves={"reliability": bins}, item_ids=[]),
            ModelRow(project_id=team.project_id, kind="pixel-rf", version=1, params={}, metrics={}, curves={},
                     item_ids=[])])
    with TestClient(create_app(workspace, executor=ThreadExecutor(workspace))) as client:
        models = client.get(f"/api/projects/{team.project_id}/models", headers=team.auth("manager")).json()["items"]
        by_kind = {m["kind"]: m for m in models}
        assert by_kind["pixel-rf"]["curves_png"] is None
        picture = client.get(by_kind["classifier"]["curves_png"], headers=team.auth("manager"))
        assert picture.status_code == 200 and picture.content == png
        assert by_kind["classifier"]["card"]["figures"] == []
