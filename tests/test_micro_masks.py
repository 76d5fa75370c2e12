"""Micro-models of semantic projects: one binary segmenter per class (pixel forest or U-Net), calibrated on held-out
pixels, chained into one mask pre-label per item. Synthetic images of bright discs (test_unet.blobs) and, for two
classes, bright discs and dim squares."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from labelloop.domain import Mask, Scribble
from labelloop.geometry import rle
from labelloop.ml.micro_masks import pixel_calibration
from labelloop.services.data.importing import import_path
from labelloop.services.jobs import create_job, run_job
from labelloop.store.tables import ModelRow, PredictionRow

from conftest import snapshot
from test_unet import blobs

UNET = dict(patch=64, batch_size=2, steps_per_epoch=4, epochs=3, max_tile=128, overlap=32, tta=0, threads=1,
            decoder_channels=[32, 16, 16, 16, 16])


def _job(workspace, kind: str, **params):
    return run_job(workspace, create_job(workspace, kind, params))


def _done(workspace, kind: str, **params) -> dict:
    job = _job(workspace, kind, **params)
    assert job.state == "done", job.error
    return job.result


def _failed(workspace, kind: str, **params) -> str:
    job = _job(workspace, kind, **params)
    assert job.state == "failed"
    return job.error


def two_classes(seed: int, height: int = 96, width: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Bright discs (1) and dim squares (2) on a dark, noisy background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    labels = np.zeros((height, width), np.uint8)
    for _ in range(3):
        cy, cx, r = rng.integers(12, height - 12), rng.integers(12, width - 12), rng.integers(6, 10)
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
    for _ in range(3):
        y, x = rng.integers(4, height - 16), rng.integers(4, width - 16)
        labels[y:y + 12, x:x + 12][labels[y:y + 12, x:x + 12] == 0] = 2
    image = np.clip(40 + np.array([0, 170, 90])[labels] + rng.normal(0, 12, labels.shape), 0, 255).astype(np.uint8)
    return image, labels


def _masks_project(workspace, make_project, root: Path, count: int = 4, labelled: int | None = None) -> dict:
    """A semantic project "p" of `count` disc images whose first `labelled` carry their masks; {item id: truth}."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    truth = {}
    for n in range(count):
        image, mask = blobs(n)
        Image.fromarray(image).save(root / "images" / f"{n}.png")
        if n < (count if labelled is None else labelled):
            Image.fromarray(mask * 255).save(root / "masks" / f"{n}.png")
        truth[f"{n}.png"] = mask > 0
    (root / "classes.txt").write_text("cell\n")
    make_project("p", "semantic", ["cell"])
    import_path(workspace, "p", root, format="masks")
    return _by_item(workspace, truth)


def _by_item(workspace, truth_by_file: dict) -> dict:
    from labelloop.store.tables import ItemRow

    with workspace.session() as session:
        return {r.id: truth_by_file[Path(r.source).name] for r in session.scalars(select(ItemRow))}


def _chain_masks(workspace) -> dict[int, list[dict]]:
    with workspace.session() as session:
        return {r.item_id: r.shapes for r in session.scalars(select(PredictionRow).where(
            PredictionRow.model_version == "chain"))}


def _iou(shapes: list[dict], label: str, truth: np.ndarray) -> float:
    found = np.zeros(truth.shape, bool)
    for s in shapes:
        if s["label"] == label:
            found |= rle.decode(Mask(label, tuple(s["size"]), s["counts"]))
    return (found & truth).sum() / (found | truth).sum()


# --- the calibration, on hand-made pixels ----------------------------------------------------------------------

def test_the_threshold_is_the_lowest_at_which_held_out_pixels_reach_the_target():
    rng = np.random.default_rng(0)
    truth = np.r_[np.ones(5000), np.zeros(5000)].astype(int)
    # Positives spread over 0.55-1.0; negatives mostly low, with a tail up to 0.8.
    probability = np.r_[rng.uniform(0.55, 1.0, 5000), rng.uniform(0.0, 0.8, 5000)]
    found = pixel_calibration(probability, truth, 0.95)
    assert found["ready"] and 0.5 <= found["threshold"] <= 0.8
    kept = probability >= found["threshold"]
    assert (truth[kept] == 1).mean() >= 0.95
    lower = probability >= found["threshold"] - 0.01
    assert (truth[lower] == 1).mean() < 0.95  # the next lower grid step misses the target
    assert found["recall"] == pytest.approx((kept & (truth == 1)).sum() / 5000, abs=1e-3)

    hopeless = pixel_calibration(rng.uniform(size=10000), truth, 0.95)
    assert not hopeless["ready"] and hopeless["threshold"] is None
    assert "held-out pixel precision reaches at most" in hopeless["reason"] and "below the target 0.95" in hopeless["reason"]
    nothing = pixel_calibration(np.zeros(10), np.zeros(10, int), 0.95)
    assert not nothing["ready"] and "no held-out pixel of the class" in nothing["reason"]


# --- training and the chain ------------------------------------------------------------------------------------

def test_a_pixel_forest_micro_model_is_calibrated_on_held_out_images_and_chained(workspace, make_project, tmp_path):
    truth = _masks_project(workspace, make_project, tmp_path / "m", count=6, labelled=4)
    result = _done(workspace, "micro-train", project="p", **{"class": "cell"}, base="pixel-rf")
    line = result["lines"][0]
    assert line.startswith("cell: micro:cell:1 on 4 examples, threshold ") and "pixel IoU" in line
    with workspace.session() as session:
        (row,) = session.scalars(select(ModelRow)).all()
    assert row.kind == "micro:cell" and row.params["base"] == "pixel-rf"
    metrics = row.metrics
    assert metrics["ready"] and metrics["held_out_precision"] >= 0.95 and metrics["threshold"] >= 0.5
    assert metrics["measured_on"] == "each image held out in turn (4 folds)"
    assert metrics["held_out"]["pixels"] == 4 * 96 * 128  # every pixel of the 4 masked images, each held out once

    _done(workspace, "micro-train", project="p", **{"class": "cell"}, base="pixel-rf", min_examples=2)
    from labelloop.services.assist.micro import set_chain

    state = set_chain(workspace, "p", ["micro:cell"])
    (cell,) = state["classes"]
    assert cell["base"] == "pixel-rf" and cell["ready"] and cell["held_out_iou"] > 0.7
    predicted = _done(workspace, "chain-predict", project="p")  # the items nobody labelled
    assert predicted["predictions"] == 2 and predicted["prelabelled"] == 2
    masks = _chain_masks(workspace)
    assert len(masks) == 2
    for item_id, shapes in masks.items():
        (shape,) = shapes
        assert shape["type"] == "mask" and shape["attributes"]["micro_model"] == "micro:cell:2"
        assert _iou(shapes, "cell", truth[item_id]) > 0.7


def test_each_class_gets_its_own_micro_model_and_the_chain_merges_them_per_pixel(workspace, make_project, tmp_path):
    root = tmp_path / "two"
    (root / "images").mkdir(parents=True)
    truth = {}
    for n in range(5):
        image, labels = two_classes(n)
        Image.fromarray(image).save(root / "images" / f"{n}.png")
        truth[f"{n}.png"] = labels
    make_project("p", "semantic", ["background", "disc", "square"])
    import_path(workspace, "p", root / "images", format="images")
    by_item = _by_item(workspace, truth)
    from labelloop.services.labelling import annotations
    from labelloop.services.projects import get_project

    labelled = sorted(by_item)[:3]
    with workspace.session() as session:
        project = get_project(session, "p")
        for item_id in labelled:
            shapes = []
            for value, name in ((1, "disc"), (2, "square")):
                size, counts = rle.encode(by_item[item_id] == value)
                shapes.append(Mask(name, size, counts))
            annotations.save(session, project, item_id, shapes, author="a", base_version=None)
    result = _done(workspace, "micro-train", project="p", all_classes=True, base="pixel-rf")
    assert list(result["classes"]) == ["disc", "square"]  # never the background
    assert all(r["trained"] and r["ready"] for r in result["classes"].values()), result["lines"]
    again = _done(workspace, "micro-train", project="p", all_classes=True, base="pixel-rf")
    assert [r["trained"] for r in again["classes"].values()] == [False, False]
    assert "no new labels since micro:disc:1" in again["classes"]["disc"]["reason"]

    from labelloop.services.assist.micro import set_chain

    set_chain(workspace, "p", ["micro:disc", "micro:square"])
    predicted = _done(workspace, "chain-predict", project="p")
    assert predicted["prelabels_per_class"] == {"disc": 2, "square": 2}
    for item_id, shapes in _chain_masks(workspace).items():
        assert {s["attributes"]["micro_model"] for s in shapes} == {"micro:disc:1", "micro:square:1"}
        discs = np.zeros(by_item[item_id].shape, bool)
        squares = np.zeros_like(discs)
        for s in shapes:
            region = rle.decode(Mask(s["label"], tuple(s["size"]), s["counts"]))
            (discs if s["label"] == "disc" else squares)[region] = True
        assert not (discs & squares).any()  # one class per pixel
        assert _iou(shapes, "disc", by_item[item_id] == 1) > 0.6
        assert _iou(shapes, "square", by_item[item_id] == 2) > 0.6


def test_a_unet_micro_model_calibrates_on_its_held_out_bands_before_the_final_fit(workspace, make_project, tmp_path):
    _masks_project(workspace, make_project, tmp_path / "m", count=3)
    result = _done(workspace, "micro-train", project="p", **{"class": "cell"}, **UNET)  # masks: the U-Net by default
    with workspace.session() as session:
        (row,) = session.scalars(select(ModelRow)).all()
    assert row.params["base"] == "unet" and row.params["final_fit"] == 0.25
    measured = row.metrics["measured_on"]
    assert measured.startswith("held-out bands (20% of each image) until epoch 2, then a final fit on whole images")
    # The bands trained the final network: the figures come from the best network before it (unseen bands).
    assert "held-out figures: the best network before the final fit, epoch " in measured
    held = row.metrics["held_out"]
    assert 0 < held["pixels"] < 3 * 96 * 128 * 0.3 and held["average_precision"] is not None
    assert row.curves["val_iou"] and row.metrics["epochs"] == 3
    assert result["classes"]["cell"]["trained"]
    from labelloop.services.assist.micro import set_chain

    set_chain(workspace, "p", ["micro:cell"])
    predicted = _done(workspace, "chain-predict", project="p", all=True)
    assert predicted["predictions"] == 3
    if row.metrics["ready"]:
        assert predicted["thresholds"]["cell"] == row.metrics["threshold"]
    else:  # an uncalibrated micro-model pre-labels nothing: the items stay for a person
        assert predicted["prelabelled"] == 0 and "cell" in predicted["no_prelabels"]


# --- bad input --------------------------------------------------------------------------------------------------

def test_bad_requests_are_refused_in_words_and_change_nothing(workspace, make_project, tmp_path):
    _masks_project(workspace, make_project, tmp_path / "m", count=3, labelled=2)
    make_project("scribbled", "semantic", ["background", "cell"])
    image, mask = blobs(0)
    folder = tmp_path / "s"
    folder.mkdir()
    Image.fromarray(image).save(folder / "scribbled.png")
    import_path(workspace, "scribbled", folder, format="images")
    from labelloop.services.labelling import annotations
    from labelloop.services.projects import get_project
    from labelloop.store.tables import ItemRow

    with workspace.session() as session:
        project = get_project(session, "scribbled")
        item_id = session.scalar(select(ItemRow.id).where(ItemRow.source == "scribbled.png"))
        size, counts = rle.encode(mask > 0)
        annotations.save(session, project, item_id, [Scribble("cell", size, counts)], author="a", base_version=None)
    before = snapshot(workspace)

    assert "2 labelled image(s) hold 'cell', fewer than --min-examples 3; label it on 1 more" in _failed(
        workspace, "micro-train", project="p", **{"class": "cell"}, base="pixel-rf", min_examples=3)
    assert "has no class 'dog'" in _failed(workspace, "micro-train", project="p", **{"class": "dog"}, base="pixel-rf")
    assert "pseudo-labels train classification micro-models only" in _failed(
        workspace, "micro-train", project="p", **{"class": "cell"}, base="pixel-rf", pseudo_labels=True)
    assert "--base detector serves detection projects; 'p' is a semantic project" in _failed(
        workspace, "micro-train", project="p", **{"class": "cell"}, base="detector")
    assert "--base classifier serves classification, multilabel projects" in _failed(
        workspace, "micro-train", project="p", **{"class": "cell"}, base="classifier")
    assert "is the background of project 'scribbled'" in _failed(workspace, "micro-train", project="scribbled",
                                                                  **{"class": "background"})
    assert "has no mask or polygon labels for a unet micro-model" in _failed(
        workspace, "micro-train", project="scribbled", **{"class": "cell"}, base="unet")
    # Scribbles only: the pixel forest by default, and one scribbled image is too few.
    assert "1 labelled image(s) hold 'cell', fewer than --min-examples 2" in _failed(
        workspace, "micro-train", project="scribbled", **{"class": "cell"})
    from labelloop.services.assist.micro import set_chain

    from labelloop.errors import InvalidInput

    with pytest.raises(InvalidInput, match="has no class 'dog'"):
        set_chain(workspace, "p", ["micro:dog"])
    with workspace.session() as session:
        assert session.scalars(select(ModelRow)).all() == []
        assert session.scalars(select(PredictionRow)).all() == []
    assert snapshot(workspace) == before


def test_cli_trains_chains_and_predicts_a_semantic_project(workspace, make_project, tmp_path, capsys):
    from labelloop.cli.main import main

    truth = _masks_project(workspace, make_project, tmp_path / "m", count=5, labelled=3)

    def run(*args: str) -> str:
        try:
            main([*args, "--data-dir", str(workspace.root)])
            code = 0
        except SystemExit as exc:
            code = exc.code or 0
        captured = capsys.readouterr()
        assert code == 0, captured.err + captured.out
        return captured.out

    assert "cell: micro:cell:1 on 3 examples" in run("train", "p", "--model", "micro", "--class", "cell",
                                                     "--base", "pixel-rf")
    run("chain", "p", "micro:cell")
    result = json.loads(run("predict", "p", "--chain", "--json"))
    assert result["predictions"] == 2 and result["chain"] == ["micro:cell:1"]
    table = run("models", "p")
    assert "micro-models" in table and "pixel-rf" in table and "IoU" in table  # narrow terminals wrap cells
    for item_id, shapes in _chain_masks(workspace).items():
        if shapes:
            assert _iou(shapes, "cell", truth[item_id]) > 0.6


def test_without_a_final_fit_the_unet_micro_model_scores_its_own_network(workspace, make_project, tmp_path):
    _masks_project(workspace, make_project, tmp_path / "m", count=3)
    _done(workspace, "micro-train", project="p", **{"class": "cell"}, **UNET, final_fit=0)
    with workspace.session() as session:
        (row,) = session.scalars(select(ModelRow)).all()
    assert row.params["final_fit"] == 0 and row.metrics["measured_on"] == "held-out bands (20% of each image)"
    assert row.metrics["held_out"]["pixels"] > 0
