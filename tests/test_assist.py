"""From scribbles to predictions and a training set, through the services and the CLI, on Lucchi crops."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labelloop.errors import InvalidInput
from labelloop.services.data.importing import import_path
from labelloop.services.jobs import create_job, get_job, run_job

from conftest import snapshot

CROP = (slice(200, 456), slice(300, 556))  # 256×256


def _lucchi_project(root: Path, shared_data: Path, slices=("slice_000.png", "slice_080.png"), per_class=300) -> Path:
    """Training crops with scribbles sampled from the ground truth (1 = background, 2 = mitochondrion)."""
    lucchi = shared_data / "lucchi_mito" / "train"
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "scribbles").mkdir()
    for name in slices:
        image = np.asarray(Image.open(lucchi / "images" / name))[CROP]
        truth = np.asarray(Image.open(lucchi / "masks" / name))[CROP] > 0
        labels = np.zeros(truth.shape, np.uint8)
        for value, region in ((1, ~truth), (2, truth)):
            labels.flat[rng.choice(np.flatnonzero(region), per_class, replace=False)] = value
        Image.fromarray(image).save(root / "images" / name)
        Image.fromarray(labels).save(root / "scribbles" / name)
    (root / "classes.txt").write_text("background\nmitochondrion\n")
    return root


def _test_crops(root: Path, shared_data: Path, slices=("slice_010.png", "slice_100.png")) -> Path:
    lucchi = shared_data / "lucchi_mito" / "test"
    root.mkdir(parents=True)
    for name in slices:
        Image.fromarray(np.asarray(Image.open(lucchi / "images" / name))[CROP]).save(root / name)
    return root


def _job(workspace, kind: str, **params):
    job_id = create_job(workspace, kind, params)
    return run_job(workspace, job_id)


def test_scribbles_train_predict_export_and_dataset(workspace, make_project, shared_data, tmp_path):
    make_project("mito", "semantic", ["background", "mitochondrion"])
    import_path(workspace, "mito", _lucchi_project(tmp_path / "scr", shared_data), format="scribbles")
    import_path(workspace, "mito", _test_crops(tmp_path / "test", shared_data), format="images", split="test")

    trained = _job(workspace, "train", project="mito", model="pixel-rf", trees=30, seed=0)
    assert trained.state == "done", trained.error
    assert trained.result["ref"] == "pixel-rf:1" and trained.result["metrics"]["training_pixels"] == 1200

    predicted = _job(workspace, "predict", project="mito", model="pixel-rf", split="test", instances="watershed")
    assert predicted.state == "done", predicted.error
    assert predicted.result["predictions"] == 2

    out = tmp_path / "export"
    from labelloop.services.data.exporting import export_project

    export_project(workspace, "mito", out, format="masks", include="predictions")
    lucchi = shared_data / "lucchi_mito" / "test" / "masks"
    ious = []
    for name in ("slice_010.png", "slice_100.png"):
        predicted_mask = np.asarray(Image.open(out / "test" / "masks" / name)) > 0
        truth = np.asarray(Image.open(lucchi / name))[CROP] > 0
        ious.append((predicted_mask & truth).sum() / (predicted_mask | truth).sum())
    assert min(ious) > 0.3, ious  # a forest on 600 pixels per image; the benchmark measures it properly

    made = _job(workspace, "dataset", project="mito", out=str(tmp_path / "pairs"), count=12, patch=64, seed=3,
                source="predictions", augment="none")
    assert made.state == "done", made.error
    assert len(list((tmp_path / "pairs" / "images").iterdir())) == 12
    assert json.loads((tmp_path / "pairs" / "classes.json").read_text()) == {"0": "background", "2": "mitochondrion"}


@pytest.mark.parametrize("dim_share", [0.0, 0.5])
def test_the_projects_images_choose_the_intensity_scaling_a_model_keeps(workspace, make_project, tmp_path, dim_share):
    """Images of one exposure keep raw intensities; when half the project is shot at a third of the exposure (as
    fluorescence sets are), features scale each image by its own percentiles, and the model records the choice."""
    rng = np.random.default_rng(0)
    root, more = tmp_path / "scribbled", tmp_path / "unlabelled"
    (root / "images").mkdir(parents=True)
    (root / "scribbles").mkdir()
    more.mkdir()
    yy, xx = np.mgrid[:64, :64]
    for k in range(6):
        truth = (yy - 20 - 4 * k) ** 2 + (xx - 30) ** 2 < 100
        image = np.where(truth, 200, 80) + rng.normal(0, 10, truth.shape)
        if k >= 6 * (1 - dim_share):
            image = image * 0.3
        image = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
        if k < 2:  # two scribbled images, both bright: the forest alone would not know the others differ
            labels = np.zeros(truth.shape, np.uint8)
            labels[~truth & (rng.random(truth.shape) < 0.05)], labels[truth & (rng.random(truth.shape) < 0.3)] = 1, 2
            image.save(root / "images" / f"{k}.png")
            Image.fromarray(labels).save(root / "scribbles" / f"{k}.png")
        else:
            image.save(more / f"{k}.png")
    make_project("p", "semantic", ["background", "cell"])
    import_path(workspace, "p", root, format="scribbles")
    import_path(workspace, "p", more, format="images")
    trained = _job(workspace, "train", project="p", model="pixel-rf", trees=5, seed=0)
    assert trained.state == "done", trained.error
    from labelloop.services.assist.models import list_models
    from labelloop.services.projects import get_project

    with workspace.session() as session:
        (model,) = list_models(workspace, get_project(session, "p"))
    assert model.params["intensity"] == ("percentile" if dim_share else "dtype")
    assert model.params["refine"] == "auto"
    forced = _job(workspace, "train", project="p", model="pixel-rf", trees=5, seed=0, intensity="dtype", refine=True)
    assert forced.state == "done" and forced.result["ref"] == "pixel-rf:2"
    with workspace.session() as session:
        assert {m.version: m.params["refine"] for m in list_models(workspace, get_project(session, "p"))} == \
            {1: "auto", 2: True}
    wrong = _job(workspace, "train", project="p", model="pixel-rf", trees=5, refine="sometimes")
    assert wrong.state == "failed" and "refine must be" in wrong.error
    with workspace.session() as session:
        assert len(list_models(workspace, get_project(session, "p"))) == 2  # nothing stored


def test_one_class_of_scribbles_is_refused_and_no_model_is_stored(workspace, make_project, tmp_path):
    root = tmp_path / "one"
    (root / "images").mkdir(parents=True)
    (root / "scribbles").mkdir()
    Image.fromarray(np.full((32, 32), 100, np.uint8)).save(root / "images" / "a.png")
    labels = np.zeros((32, 32), np.uint8)
    labels[5:10, 5:10] = 1
    Image.fromarray(labels).save(root / "scribbles" / "a.png")
    make_project("p", "semantic", ["background", "cell"])
    import_path(workspace, "p", root, format="scribbles")
    job = _job(workspace, "train", project="p", model="pixel-rf")
    assert job.state == "failed" and "at least 2 classes" in job.error and "background" in job.error
    from labelloop.services.assist.models import list_models
    from labelloop.services.projects import get_project

    with workspace.session() as session:
        assert list_models(workspace, get_project(session, "p")) == []


@pytest.mark.parametrize("problem", ["size", "index"])
def test_bad_scribbles_change_nothing(workspace, make_project, tmp_path, problem):
    root = tmp_path / "bad"
    (root / "images").mkdir(parents=True)
    (root / "scribbles").mkdir()
    Image.fromarray(np.full((32, 32), 100, np.uint8)).save(root / "images" / "a.png")
    labels = np.zeros((32, 40) if problem == "size" else (32, 32), np.uint8)
    labels[1, 1], labels[2, 2] = 1, (3 if problem == "index" else 2)
    Image.fromarray(labels).save(root / "scribbles" / "a.png")
    make_project("p", "semantic", ["background", "cell"])
    before = snapshot(workspace)
    with pytest.raises(InvalidInput, match=r"a\.png: scribble image is 40x32 but the image .* is 32x32" if problem == "size" else "class numbers up to 3"):
        import_path(workspace, "p", root, format="scribbles")
    assert snapshot(workspace) == before


def test_predict_without_a_model_says_how_to_train(workspace, make_project, tmp_path):
    make_project("p", "semantic", ["background", "cell"])
    folder = tmp_path / "i"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "a.png")
    import_path(workspace, "p", folder, format="images")
    job = _job(workspace, "predict", project="p", model="pixel-rf")
    assert job.state == "failed" and "labelloop train p --model pixel-rf" in job.error


def test_live_segmenter_retrains_on_new_strokes(workspace, make_project, shared_data, tmp_path):
    from labelloop.domain import Scribble
    from labelloop.notebook import ProjectHandle
    from labelloop.services.assist.live import LiveSegmenter

    make_project("mito", "semantic", ["background", "mitochondrion"])
    import_path(workspace, "mito", _lucchi_project(tmp_path / "scr", shared_data), format="scribbles")
    import_path(workspace, "mito", _test_crops(tmp_path / "test", shared_data, ("slice_010.png",)), format="images")
    (view,) = [i for i in ProjectHandle(workspace, "mito").items() if i["source"] == "slice_010.png"]
    truth = np.asarray(Image.open(shared_data / "lucchi_mito" / "test" / "masks" / "slice_010.png"))[CROP] > 0
    rng = np.random.default_rng(1)
    strokes = []
    for label, region in (("background", ~truth), ("mitochondrion", truth)):
        marked = np.zeros(truth.shape, bool)
        marked.flat[rng.choice(np.flatnonzero(region), 200, replace=False)] = True
        from labelloop.geometry import rle

        size, counts = rle.encode(marked)
        strokes.append(Scribble(label, size, counts))
    live = LiveSegmenter(workspace, "mito")
    before, _ = live.update(view["id"], [])
    after, proba = live.update(view["id"], strokes)
    assert proba.shape == (256, 256, 2) and np.allclose(proba.sum(axis=2), 1, atol=1e-4)

    def iou(values):
        predicted = values == 2
        return (predicted & truth).sum() / (predicted | truth).sum()

    assert iou(after) > iou(before)  # strokes on the view itself teach the forest about it
    assert live.cache.hits > 0  # the second update reused the cached features
