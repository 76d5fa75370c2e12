"""Micro-models of detection projects: per class a one-class detector trained on that class's boxes (the labelled
images without any as negatives), calibrated on held-out images, chained into one box pre-label per item. Drawn
shapes (test_detector.drawn_shapes: squares and discs) keep training short; a raccoon and a coco128 slice run the
real photos end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from labelloop.domain import Box
from labelloop.errors import InvalidInput
from labelloop.ml.micro_boxes import held_out_images, merge_detections
from labelloop.services.data.importing import import_path
from labelloop.services.jobs import create_job, run_job
from labelloop.store.tables import ItemRow, ModelRow, PredictionRow, ProjectRow

from conftest import snapshot
from test_detector import drawn_shapes
from test_micro_models import _done, _failed

# One evaluation at the end (the micro-model default), no calibration folds unless a test asks: seconds, not minutes.
FAST = {"min_size": 128, "max_size": 160, "batch_size": 4, "lr": 0.02, "warmup_steps": 5, "threads": 1,
        "calibration_folds": 0}


def _settings(workspace, name: str) -> dict:
    with workspace.session() as session:
        return dict(session.scalar(select(ProjectRow).where(ProjectRow.name == name)).settings)


def _chain_boxes(workspace) -> dict[int, list[dict]]:
    with workspace.session() as session:
        return {r.item_id: r.shapes for r in session.scalars(select(PredictionRow).where(
            PredictionRow.model_version == "chain"))}


@pytest.fixture
def shapes_project(workspace, make_project, tmp_path):
    """A detection project "shapes" (square, disc, star) of 30 drawn images, 24 labelled; the squares of two images
    are called stars, so "star" has 2 examples. Returns {file stem: item id}."""
    from labelloop.services.labelling import annotations
    from labelloop.services.projects import get_project

    make_project("shapes", "detection", ["square", "disc", "star"])
    folder = tmp_path / "shapes"
    folder.mkdir()
    images, targets = drawn_shapes(30, 7)
    for n, image in enumerate(images):
        Image.fromarray(image).save(folder / f"s{n:02d}.png")
    import_path(workspace, "shapes", folder, format="images")
    stars = set()
    with workspace.session() as session:
        project = get_project(session, "shapes")
        rows = session.scalars(select(ItemRow).where(ItemRow.project_id == project.id))
        ids = {Path(r.source).stem: r.id for r in rows}
        for n, target in enumerate(targets[:24]):
            shapes = []
            for box, k in zip(target["boxes"], target["labels"]):
                name = "square" if k == 1 else "disc"
                if name == "square" and len(stars) < 2 and n >= 6 and n not in stars:
                    name = "star"
                    stars.add(n)
                shapes.append(Box(name, *map(float, box)))
            annotations.save(session, project, ids[f"s{n:02d}"], shapes, author="ann", base_version=None)
    assert len(stars) == 2
    return ids


# --- the merge and the held-out images, on hand-made outputs ------------------------------------------------------

def test_the_box_merge_suppresses_same_class_duplicates_and_keeps_other_classes():
    cat = {"boxes": np.array([[0, 0, 10, 10],       # best cat
                              [1, 1, 11, 11],       # the same cat again (IoU 0.68): suppressed
                              [20, 20, 30, 30],     # another cat: kept
                              [40, 40, 50, 50]]),   # below the cat model's threshold: dropped
           "scores": np.array([0.9, 0.8, 0.7, 0.3])}
    dog = {"boxes": np.array([[0, 0, 10, 10.5],     # a dog on the cat's box: another model's claim, kept
                              [60, 60, 70, 70],     # a dog
                              [60.5, 60, 70, 70]]), # the same dog twice: the lower score goes
           "scores": np.array([0.95, 0.6, 0.65])}
    boxes, classes, scores = merge_detections([cat, dog], np.array([0.5, 0.5]))
    assert scores.tolist() == [0.95, 0.9, 0.7, 0.65]  # best first
    assert classes.tolist() == [1, 0, 0, 1]
    assert boxes.tolist() == [[0, 0, 10, 10.5], [0, 0, 10, 10], [20, 20, 30, 30], [60.5, 60, 70, 70]]
    # a model without a threshold (inf) contributes nothing; no model, nothing
    boxes, classes, _ = merge_detections([cat, dog], np.array([0.5, np.inf]))
    assert classes.tolist() == [0, 0]
    assert merge_detections([], np.zeros(0))[0].shape == (0, 4)
    empty = {"boxes": np.zeros((0, 4)), "scores": np.zeros(0)}
    assert len(merge_detections([empty, dog], np.array([0.5, 0.5]))[1]) == 2


def test_held_out_images_hold_the_class_and_its_absence_and_never_all_of_it():
    has = np.array([True] * 10 + [False] * 5)
    chosen = held_out_images(has, 0.2, 0)
    assert has[chosen].sum() == 2 and (~has[chosen]).sum() == 1
    assert held_out_images(has, 0.2, 0).tolist() == chosen.tolist()  # seeded
    two = held_out_images(np.array([True, True]), 0.2, 0)
    assert len(two) == 1  # one positive held out, one left to train on
    assert held_out_images(np.array([True, True, True]), 0.9, 1).size == 2


# --- refusals change nothing -------------------------------------------------------------------------------------

def test_bad_requests_are_refused_in_words_and_change_nothing(workspace, make_project, shapes_project):
    before = (snapshot(workspace), _settings(workspace, "shapes"))
    assert "has no class 'cat'" in _failed(workspace, "micro-train", project="shapes", **{"class": "cat"})
    assert "has no class 'cat'" in _failed(workspace, "train", project="shapes", model="micro", **{"class": "cat"})
    assert "--base classifier serves classification, multilabel projects" in _failed(
        workspace, "micro-train", project="shapes", all_classes=True, base="classifier")
    assert "--base unet serves semantic projects" in _failed(workspace, "micro-train", project="shapes",
                                                             all_classes=True, base="unet")
    error = _failed(workspace, "micro-train", project="shapes", **{"class": "star"})
    assert "no micro-model for 'star'" in error and "2 labelled image(s) hold a 'star' box" in error
    assert "draw it on 3 more" in error
    assert "pseudo-labels train classification micro-models only" in _failed(
        workspace, "micro-train", project="shapes", pseudo_labels=True, **{"class": "square"})
    assert "min size 10 must lie in" in _failed(workspace, "micro-train", project="shapes", min_size=10,
                                                **{"class": "square"})
    from labelloop.services.assist.micro import set_chain

    with pytest.raises(InvalidInput, match="project 'shapes' has no class 'cat'"):
        set_chain(workspace, "shapes", ["micro:square", "micro:cat"])
    assert "no micro-model of the chain is trained yet" in _failed(workspace, "chain-predict", project="shapes",
                                                                   chain=["micro:square"])
    make_project("kinds", "classification", ["ant", "bee"])
    assert "--base detector serves detection projects; 'kinds' is a classification project" in _failed(
        workspace, "micro-train", project="kinds", all_classes=True, base="detector")
    with workspace.session() as session:
        assert session.scalars(select(ModelRow)).all() == [] and session.scalars(select(PredictionRow)).all() == []
    after = snapshot(workspace)
    after["projects"] -= 1
    after["project_classes"] = after["project_classes"][:-1]
    assert (after, _settings(workspace, "shapes")) == before


# --- training, self-validation and the chain (drawn shapes) -------------------------------------------------------

@pytest.mark.slow
def test_a_class_below_min_examples_gets_a_reason_while_the_others_train_and_chain(workspace, shapes_project,
                                                                                  monkeypatch):
    result = _done(workspace, "micro-train", project="shapes", all_classes=True, epochs=1, **FAST)
    classes = result["classes"]
    assert classes["square"]["trained"] and classes["disc"]["trained"]
    assert classes["square"]["model"] == "micro:square:1" and classes["square"]["in_use"]
    assert not classes["star"]["trained"] and "fewer than --min-examples 5" in classes["star"]["reason"]
    assert result["lines"][2].startswith("star: not trained")
    with workspace.session() as session:
        square = session.scalar(select(ModelRow).where(ModelRow.kind == "micro:square"))
        assert square.params["base"] == "detector" and square.params["n_classes"] == 1
        metrics = dict(square.metrics)
    # held-out figures of the square's own boxes; one epoch does not reach the target, and the reason says so
    assert metrics["held_out"]["images"] >= 2 and metrics["held_out_average_precision"] is not None
    assert metrics["examples"] + metrics["negatives"] == 24 and metrics["self_validation"] == "first version, in use"
    assert not metrics["ready"] and "draw the class on more images" in metrics["reason"]

    from labelloop.services.assist.micro import chain_state, set_chain
    from labelloop.services.projects import get_project

    with workspace.session() as session:
        project = get_project(session, "shapes")
    state = {c["class"]: c for c in chain_state(workspace, project)["classes"]}
    assert state["square"]["model"] == "micro:square:1" and state["square"]["base"] == "detector"
    assert not state["square"]["ready"] and state["square"]["why_not"] == metrics["reason"]
    assert state["star"]["model"] is None and "fewer than --min-examples" in state["star"]["why_not"]
    # nothing new: --all-classes leaves both as they are
    again = _done(workspace, "micro-train", project="shapes", all_classes=True, epochs=1, **FAST)["classes"]
    assert not again["square"]["trained"] and "no new labels since micro:square:1" in again["square"]["reason"]

    # a retrain that scores worse is kept, not used (its held-out AP pushed down here)
    import labelloop.ml.micro_boxes as micro_boxes

    real = micro_boxes.held_out_figures
    monkeypatch.setattr(micro_boxes, "held_out_figures", lambda d: {**real(d), "average_precision": -1.0})
    retrained = _done(workspace, "micro-train", project="shapes", epochs=1, **FAST, **{"class": "disc"})["classes"]
    monkeypatch.undo()
    assert retrained["disc"]["model"] == "micro:disc:2" and not retrained["disc"]["in_use"]
    assert "worse than micro:disc:1 (kept, not used)" in retrained["disc"]["self_validation"]
    state = {c["class"]: c for c in chain_state(workspace, project)["classes"]}
    assert state["disc"]["model"] == "micro:disc:1" and state["disc"]["not_used"].startswith("micro:disc:2")

    # longer training, at a low target: a square micro-model that is ready replaces the first
    ready = _done(workspace, "micro-train", project="shapes", epochs=10, test_fraction=0.4, target_precision=0.5,
                  **FAST, **{"class": "square"})["classes"]["square"]
    assert ready["model"] == "micro:square:2" and ready["in_use"] and ready["ready"], ready
    assert "replaces micro:square:1 in use" in ready["self_validation"]

    # the chain: one pre-label per item, each box naming its micro-model; the disc's (not ready) adds none
    set_chain(workspace, "shapes", ["micro:square", "micro:disc"])
    unlabelled = [shapes_project[f"s{n}"] for n in range(24, 30)]  # squares on s27 and s29
    predicted = _done(workspace, "chain-predict", project="shapes", target_precision=0.5)
    assert predicted["predictions"] == 6 and predicted["chain"] == ["micro:square:2", "micro:disc:1"]
    assert "disc" in predicted["no_prelabels"]
    found = _chain_boxes(workspace)
    assert sorted(found) == sorted(unlabelled)
    boxes = [s for shapes in found.values() for s in shapes]
    assert boxes, predicted
    assert all(s["type"] == "box" and s["label"] == "square" and s["attributes"]["micro_model"] == "micro:square:2"
               for s in boxes)
    assert all(s["score"] >= s["attributes"]["threshold"] == ready["threshold"] for s in boxes)
    assert predicted["prelabelled"] == sum(bool(v) for v in found.values())
    # run again: the chain's pending pre-labels are replaced, not doubled
    _done(workspace, "chain-predict", project="shapes", target_precision=0.5)
    assert [s for shapes in _chain_boxes(workspace).values() for s in shapes] == boxes


# --- micro-models on a shared detector ----------------------------------------------------------------------------

def test_one_box_gets_one_class_of_the_heads_that_share_its_detector():
    from labelloop.ml.micro_boxes import exclusive

    square, disc = np.array([0.9, 0.2, 0.6, 0.3]), np.array([0.8, 0.7, 0.1, 0.5])
    kept = exclusive([square, disc], np.array([0.5, 0.4]))
    # box 0 passes both: the square's higher score keeps it; box 1 only the disc; box 2 only the square; box 3 both
    # fail and keep their scores (the item's score reads them)
    assert kept[0].tolist() == [0.9, 0.2, 0.6, 0.3]
    assert kept[1].tolist() == [-np.inf, 0.7, 0.1, 0.5]
    no_disc = exclusive([square, disc], np.array([0.5, np.inf]))  # a head with no threshold passes nothing
    assert no_disc[0].tolist() == square.tolist() and no_disc[1].tolist() == disc.tolist()


def test_the_heads_learn_from_true_boxes_and_the_detections_that_overlap_them():
    from labelloop.ml.micro_boxes import object_samples

    found = [{"boxes": np.array([[0, 0, 10, 10], [50, 50, 60, 60], [1, 0, 11, 10]], float),
              "features": np.array([[1.0], [2.0], [3.0]], np.float32),
              "given_features": np.array([[10.0], [20.0]], np.float32)},
             {"boxes": np.zeros((0, 4)), "features": np.zeros((0, 1), np.float32),
              "given_features": np.array([[30.0]], np.float32)}]
    truths = [np.array([[0, 0, 10, 10], [100, 100, 120, 120]], float), np.array([[5, 5, 9, 9]], float)]
    features, names, images = object_samples(found, [["cat", "dog"], ["dog"]], truths)
    # the true boxes' own features, then the detections on the cat (the one far from any box is not an object)
    assert features[:, 0].tolist() == [10.0, 20.0, 1.0, 3.0, 30.0]
    assert names.tolist() == ["cat", "dog", "cat", "cat", "dog"] and images.tolist() == [0, 0, 0, 0, 1]


@pytest.mark.slow
def test_shared_detector_micro_models_train_it_once_and_the_chain_runs_it_once_per_image(workspace, shapes_project,
                                                                                          monkeypatch):
    from labelloop.ml.detection.detector import BoxDetector
    from labelloop.services.assist import micro_shared_boxes
    from labelloop.services.assist.micro import set_chain

    fits = []
    real_fit = BoxDetector.fit
    monkeypatch.setattr(BoxDetector, "fit", lambda self, *a, **k: fits.append(self.n_classes) or real_fit(
        self, *a, **k))
    options = {**FAST, "epochs": 10, "test_fraction": 0.4, "target_precision": 0.5, "base": "shared-detector"}
    result = _done(workspace, "micro-train", project="shapes", all_classes=True, **options)
    classes = result["classes"]
    assert classes["square"]["trained"] and classes["disc"]["trained"] and not classes["star"]["trained"]
    assert "fewer than --min-examples 5" in classes["star"]["reason"]
    assert fits == [1]  # one class-agnostic detector for both classes
    with workspace.session() as session:
        rows = {r.kind: r for r in session.scalars(select(ModelRow))}
        square, disc = rows["micro:square"], rows["micro:disc"]
        assert square.params["base"] == disc.params["base"] == "shared-detector"
        assert square.params["trunk_sha256"] == disc.params["trunk_sha256"]
        metrics = dict(square.metrics)
    # the squares are told from the discs on boxes the detector never trained on: held-out AP and a threshold
    assert metrics["ready"], metrics["reason"]
    assert metrics["held_out_average_precision"] > 0.5 and metrics["held_out"]["images"] >= 5
    assert metrics["shared_detector"]["reused_from"] is None and metrics["shared_detector"]["steps"] > 0

    # one class again, at another target: the shared detector is reused (its boxes and settings are the same; the
    # target is the heads' business), not retrained
    again = _done(workspace, "micro-train", project="shapes", **{**options, "target_precision": 0.6},
                  **{"class": "disc"})["classes"]["disc"]
    assert again["model"] == "micro:disc:2" and fits == [1]
    with workspace.session() as session:
        second = session.scalar(select(ModelRow).where(ModelRow.kind == "micro:disc", ModelRow.version == 2))
        assert second.metrics["shared_detector"]["reused_from"] in ("micro:square:1", "micro:disc:1")
    unchanged = _done(workspace, "micro-train", project="shapes", all_classes=True, **options)["classes"]
    assert not unchanged["square"]["trained"] and "no new labels" in unchanged["square"]["reason"]

    # the chain: the shared detector runs once per batch of images, never a whole detector per class
    passes = []
    real_features = BoxDetector.predict_with_features

    def counted(self, images, given=None):
        passes.append(len(images))
        return real_features(self, images, given)

    monkeypatch.setattr(BoxDetector, "predict_with_features", counted)
    monkeypatch.setattr(BoxDetector, "predict", lambda *a, **k: pytest.fail("a whole detector ran per class"))
    micro_shared_boxes._TRUNKS.clear()
    set_chain(workspace, "shapes", ["micro:square", "micro:disc"])
    predicted = _done(workspace, "chain-predict", project="shapes", target_precision=0.5)
    assert predicted["predictions"] == 6 and passes == [6]
    found = _chain_boxes(workspace)
    boxes = [s for shapes in found.values() for s in shapes]
    assert boxes, predicted
    assert {s["label"] for s in boxes} <= {"square", "disc"}
    assert all(s["attributes"]["micro_model"] in ("micro:square:1", "micro:disc:2", "micro:disc:1") for s in boxes)
    assert all(s["score"] >= s["attributes"]["threshold"] for s in boxes)
    # one class per box: no two pre-labels of an item on the same box
    for shapes in found.values():
        corners = [tuple(s[k] for k in ("x0", "y0", "x1", "y1")) for s in shapes]
        assert len(corners) == len(set(corners))


# --- real photos ------------------------------------------------------------------------------------------------

def _raccoon_slice(shared_data: Path, folder: Path, count: int) -> None:
    source = shared_data / "raccoon"
    (folder / "images").mkdir(parents=True)
    (folder / "annotations").mkdir()
    for n in range(1, count + 1):
        shutil.copy(source / "images" / f"raccoon-{n}.jpg", folder / "images")
        shutil.copy(source / "annotations" / f"raccoon-{n}.xml", folder / "annotations")


@pytest.mark.slow
def test_raccoon_micro_model_through_the_cli(workspace, make_project, shared_data, tmp_path, capsys):
    """12 raccoon photos, 10 labelled (every image holds the one class: the background is the negative): the CLI
    trains the micro-model, chains it and pre-labels the other two; `models` shows its state."""
    from labelloop.cli.main import main

    _raccoon_slice(shared_data, tmp_path / "slice", 10)
    make_project("raccoons", "detection", ["raccoon"])
    import_path(workspace, "raccoons", tmp_path / "slice", format="voc")
    extra = tmp_path / "more"
    extra.mkdir()
    for n in (11, 12):
        shutil.copy(shared_data / "raccoon" / "images" / f"raccoon-{n}.jpg", extra)
    import_path(workspace, "raccoons", extra, format="images")

    def run(*args: str, code: int = 0) -> str:
        try:
            main([*args, "--data-dir", str(workspace.root)])
            got = 0
        except SystemExit as exc:
            got = exc.code or 0
        captured = capsys.readouterr()
        assert got == code, captured.err + captured.out
        return captured.out if "--json" in args else captured.out + captured.err

    out = run("train", "raccoons", "--model", "micro", "--all-classes", "--epochs", "2", "--min-size", "160",
              "--batch-size", "4", "--set", "max_size=224", "--set", "threads=1", "--set", "calibration_folds=0")
    assert out.strip().startswith("raccoon: micro:raccoon:1 on 10 examples"), out
    assert "held-out AP@0.5" in out or "no pre-labels yet" in out
    assert "no micro-model for 'raccoon'" in run("train", "raccoons", "--model", "micro", "--class", "raccoon",
                                                 "--min-examples", "11", code=1)
    assert "micro:raccoon" in run("chain", "raccoons", "micro:raccoon")
    predicted = json.loads(run("predict", "raccoons", "--chain", "--json"))
    assert predicted["predictions"] == 2 and predicted["chain"] == ["micro:raccoon:1"]
    for shapes in _chain_boxes(workspace).values():
        assert all(s["label"] == "raccoon" and s["attributes"]["micro_model"] == "micro:raccoon:1" for s in shapes)
    state = json.loads(run("models", "raccoons", "--json"))
    listed = json.dumps(state)
    assert "micro:raccoon:1" in listed


def _coco_slice(shared_data: Path, folder: Path, count: int) -> dict[str, int]:
    """The first `count` coco128 train images with their boxes as a COCO JSON beside them; boxes per class name."""
    source = shared_data / "coco128" / "annotations" / "instances_train2017.json"
    data = json.loads(source.read_text())
    images = data["images"][:count]
    kept = {i["id"] for i in images}
    annotations = [a for a in data["annotations"] if a["image_id"] in kept and not a.get("iscrowd")]
    folder.mkdir(parents=True)
    for image in images:
        shutil.copy(shared_data / "coco128" / "images" / "train2017" / image["file_name"], folder)
    for a in annotations:
        a.pop("segmentation", None)
    (folder / "annotations.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                         "categories": data["categories"]}))
    names = {c["id"]: c["name"] for c in data["categories"]}
    images_per_class: dict[str, set] = {}
    for a in annotations:
        images_per_class.setdefault(names[a["category_id"]], set()).add(a["image_id"])
    return {k: len(v) for k, v in images_per_class.items()}


@pytest.mark.slow
def test_coco128_slice_trains_the_common_classes_and_says_why_not_for_the_rare_ones(workspace, make_project,
                                                                                   shared_data, tmp_path):
    per_class = _coco_slice(shared_data, tmp_path / "coco", 24)
    make_project("coco", "detection")
    import_path(workspace, "coco", tmp_path / "coco" / "annotations.json", format="coco")
    common = sorted(k for k, v in per_class.items() if v >= 8)
    rare = sorted(k for k, v in per_class.items() if v < 8)
    assert "person" in common and rare
    result = _done(workspace, "micro-train", project="coco", all_classes=True, min_examples=8, epochs=1, **FAST)
    classes = result["classes"]
    assert [k for k, r in classes.items() if r["trained"]] == [k for k in classes if k in common]
    for name in rare:
        assert not classes[name]["trained"] and f"{per_class[name]} labelled image(s) hold a {name!r} box" in \
            classes[name]["reason"]
    person = classes["person"]
    assert person["model"] == "micro:person:1" and (person["ready"] or "precision" in person["reason"])
