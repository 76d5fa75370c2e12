"""Pixel features and the scribble-trained pixel classifier: shapes, tiling, inputs, accuracy, errors, contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone

from labelloop.ml.features import (
    DEFAULT_SCALES,
    FeatureCache,
    FeatureSettings,
    compute_features,
    feature_names,
    iter_feature_tiles,
)
from labelloop.ml.pixel_classifier import InvalidTrainingData, PixelClassifier

LUCCHI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lucchi_mito"


def _blobs(seed: int = 0, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A noisy grey image with dark discs (class 2) on a bright background (class 1), and its truth."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    truth = np.zeros((size, size), bool)
    for _ in range(4):
        cy, cx, r = rng.integers(12, size - 12, 2).tolist() + [int(rng.integers(6, 12))]
        truth |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    image = np.where(truth, 90, 160) + rng.normal(0, 18, truth.shape)
    return np.clip(image, 0, 255).astype(np.uint8), truth


def _scribbles(truth: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = np.zeros(truth.shape, np.uint8)
    for value, region in ((1, ~truth), (2, truth)):
        idx = np.flatnonzero(region)
        labels.flat[rng.choice(idx, min(per_class, idx.size), replace=False)] = value
    return labels


def _iou(pred: np.ndarray, truth: np.ndarray) -> float:
    return np.count_nonzero(pred & truth) / max(1, np.count_nonzero(pred | truth))


# ---------------------------------------------------------------- features
def test_features_shape_dtype_and_names():
    image, _ = _blobs()
    feats = compute_features(image)
    names = feature_names()
    assert feats.shape == (96, 96, len(names)) and feats.dtype == np.float32
    assert len(names) == 8 * len(DEFAULT_SCALES) and len(set(names)) == len(names)
    assert "hessian_of_gaussian_eigenvalues_2_s10" in names
    assert np.isfinite(feats).all()
    # the first plane is the 0.7-sigma smoothing of the [0, 1]-normalised image
    assert names[0] == "gaussian_smoothing_s0.7"
    assert abs(float(feats[..., 0].mean()) - image.mean() / 255) < 0.01


def test_feature_kinds_and_scales_select_planes():
    image, _ = _blobs()
    feats = compute_features(image, scales=(1.0, 2.0), kinds=("gaussian_smoothing", "structure_tensor_eigenvalues"))
    assert feats.shape[-1] == len(feature_names((1.0, 2.0), ("gaussian_smoothing", "structure_tensor_eigenvalues"))) == 6
    # structure-tensor eigenvalues come larger first and are non-negative
    assert (feats[..., 1] >= feats[..., 2] - 1e-6).all() and feats[..., 2].min() > -1e-6
    with pytest.raises(ValueError, match="unknown feature kinds"):
        compute_features(image, kinds=("sobel",))


def test_tiled_equals_untiled():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (150, 230), dtype=np.uint8)
    scales = (0.7, 1.6, 5.0)
    whole = compute_features(image, scales=scales)
    tiled = compute_features(image, scales=scales, tile_shape=(64, 80))
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    covered = np.zeros(image.shape, int)
    for (rows, cols), feats in iter_feature_tiles(image, scales=scales, tile_shape=(64, 80)):
        covered[rows, cols] += 1
        np.testing.assert_allclose(feats, whole[rows, cols], atol=1e-5)
    assert (covered == 1).all()


def test_large_scales_on_a_reduced_grid_track_the_exact_filters():
    from skimage.data import camera

    image = camera()[::2, ::2]
    fast = compute_features(image)
    exact = compute_features(image, downsample=False)
    names = feature_names()
    assert fast.shape == exact.shape
    for i, name in enumerate(names):
        r = np.corrcoef(fast[..., i].ravel(), exact[..., i].ravel())[0, 1]
        assert r > 0.95, f"{name}: correlation {r:.3f} with the full-resolution filter"
        if name.endswith(("_s0.7", "_s1", "_s1.6")):  # small scales are not reduced at all
            np.testing.assert_allclose(fast[..., i], exact[..., i], atol=1e-6)


def test_16_bit_input_is_normalised_by_dtype_range():
    image8, _ = _blobs()
    image16 = image8.astype(np.uint16) * 257  # same picture, full 16-bit range
    np.testing.assert_allclose(compute_features(image16), compute_features(image8), atol=1e-5)


def test_rgb_luminance_and_per_channel():
    image, _ = _blobs()
    rgb = np.stack([image, image, image], axis=-1)
    np.testing.assert_allclose(compute_features(rgb), compute_features(image), atol=1e-5)
    per_channel = compute_features(rgb, scales=(1.0,), colour="channels")
    names = feature_names((1.0,), colour="channels", channels=3)
    assert per_channel.shape[-1] == len(names) == 24 and names[0].startswith("r_") and names[-1].startswith("b_")
    rgba = np.concatenate([rgb, np.full(image.shape + (1,), 255, np.uint8)], axis=-1)
    np.testing.assert_allclose(compute_features(rgba, scales=(1.0,)), compute_features(image, scales=(1.0,)), atol=1e-5)
    with pytest.raises(ValueError, match="H×W×3/4"):
        compute_features(np.zeros((8, 8, 2), np.uint8))


def test_feature_cache_is_lru_and_memory_bounded():
    image, _ = _blobs(size=32)
    settings = FeatureSettings(scales=(1.0,))
    one = compute_features(image, scales=(1.0,)).nbytes
    cache = FeatureCache(max_bytes=2 * one)
    a = cache.get_or_compute("a", image, settings)
    cache.get_or_compute("b", image, settings)
    assert cache.get("a", settings) is not None  # "a" now most recent
    cache.get_or_compute("c", image, settings)  # evicts "b"
    assert cache.get("b", settings) is None and cache.get("a", settings) is not None
    assert cache.nbytes <= 2 * one and len(cache) == 2
    assert not a.flags.writeable
    assert cache.get("a", FeatureSettings(scales=(2.0,))) is None  # settings are part of the key


# ---------------------------------------------------------------- classifier on synthetic data
def test_fit_predict_shapes_and_classes():
    image, truth = _blobs()
    labels = _scribbles(truth, 60, seed=0) * 3  # class values 3 and 6: returned as drawn
    clf = PixelClassifier(n_estimators=20, random_state=0).fit([image], [labels])
    assert list(clf.classes_) == [3, 6] and clf.n_features_in_ == len(clf.feature_names_) == 48
    assert clf.training_seconds_ > 0
    proba = clf.predict_proba(image)
    assert proba.shape == (96, 96, 2) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(-1), 1, atol=1e-5)
    pred = clf.predict(image)
    assert set(np.unique(pred)) <= {3, 6}
    assert _iou(pred == 6, truth) > 0.8
    feats = compute_features(image, intensity=clf.intensity_)  # precomputed features must match the classifier's
    np.testing.assert_allclose(clf.predict_proba(features=feats), proba, atol=1e-6)
    small_chunks = clone(clf).set_params(chunk_pixels=1000).fit([image], [labels])
    np.testing.assert_allclose(small_chunks.predict_proba(image), proba, atol=1e-6)


def test_fit_features_on_a_pixel_table():
    image, truth = _blobs()
    labels = _scribbles(truth, 60, seed=0)
    feats = compute_features(image)
    clf = PixelClassifier(n_estimators=20, random_state=0).fit_features(feats[labels > 0], labels[labels > 0])
    assert clf.autocontext and not clf.autocontext_  # a table holds no images: one stage, said so
    one_stage = PixelClassifier(n_estimators=20, random_state=0, autocontext=False).fit([image], [labels])
    np.testing.assert_allclose(clf.predict_proba(features=feats), one_stage.predict_proba(image), atol=1e-6)


def test_autocontext_trains_and_predicts():
    image, truth = _blobs()
    labels = _scribbles(truth, 80, seed=0)
    clf = PixelClassifier(n_estimators=20, autocontext=True, random_state=0).fit([image], [labels])
    assert clf.n_context_features_ == 2 * 3
    proba = clf.predict_proba(image)
    assert proba.shape == (96, 96, 2)
    assert _iou(clf.predict(image) == 2, truth) > 0.8
    # the cached stacks of the live view stand in for the images: the same model
    stack = compute_features(image, intensity=clf.intensity_)
    from_stacks = clone(clf).set_params(intensity=clf.intensity_).fit([None], [labels], features=[stack])
    np.testing.assert_allclose(from_stacks.predict_proba(image), proba, atol=1e-6)
    with pytest.raises(ValueError, match="image 0 is missing"):
        clone(clf).set_params(intensity="dtype").fit([None], [labels])


def test_autocontext_learns_its_second_stage_from_context_that_never_saw_the_pixels(monkeypatch):
    """Stage 2 is trained on stage-1 probabilities at the labelled pixels; if the trees that made them had seen
    those pixels, stage 2 would learn to trust stage 1 blindly. Labels here are random patches that nothing in
    the image predicts: honest context knows nothing about them, memorised context (the whole stage 1) does."""
    from labelloop.ml.pixel_classifier import _context_features

    rng = np.random.default_rng(0)
    image = cv2_blur(rng.random((192, 192)).astype(np.float32))
    patches = rng.integers(1, 3, (12, 12)).repeat(16, 0).repeat(16, 1)
    labels = np.where(rng.random((192, 192)) < 0.3, patches, 0).astype(np.uint8)
    seen = {}
    original = PixelClassifier._fit_stage1_with_context

    def spy(self, images, features, X, y, positions, *rest):
        seen.update(context=original(self, images, features, X, y, positions, *rest), y=y, positions=positions)
        return seen["context"]

    monkeypatch.setattr(PixelClassifier, "_fit_stage1_with_context", spy)
    clf = PixelClassifier(n_estimators=12, autocontext=True, intensity="dtype", random_state=0).fit([image], [labels])
    rows, cols = seen["positions"][:, 1], seen["positions"][:, 2]
    honest = seen["context"][:, :2].argmax(1) + 1  # the raw (unsmoothed) planes come first
    whole_stage1 = _context_features(clf._stage_proba(clf.forest_, image, None, refine=False))
    memorised = whole_stage1[rows, cols, :2].argmax(1) + 1
    assert len(clf.forest_.estimators_) == 12
    assert np.mean(memorised == seen["y"]) > 0.85  # what a leak would look like: the check can fail
    assert abs(np.mean(honest == seen["y"]) - 0.5) < 0.1


def test_autocontext_on_tiled_images_with_scribbles_in_some_tiles_only(monkeypatch):
    import labelloop.ml.pixel_classifier as module

    monkeypatch.setattr(module, "_UNTILED_MAX_PIXELS", 64 * 64)  # images over it go tile by tile, as over 2048²
    monkeypatch.setattr(module, "_TILE", (64, 64))
    image, truth = _blobs(seed=2, size=160)
    labels = _scribbles(truth, 120, seed=0)
    labels[:, 64:] = 0  # the tiles right of x = 64 hold no scribble
    clf = PixelClassifier(n_estimators=12, random_state=0).fit([image], [labels])
    assert clf.autocontext_ and _iou(clf.predict(image) == 2, truth) > 0.7


def cv2_blur(image: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(image, (0, 0), 2.0)


def test_deterministic_with_random_state():
    image, truth = _blobs()
    labels = _scribbles(truth, 60, seed=0)
    a = PixelClassifier(n_estimators=15, random_state=7).fit([image], [labels]).predict_proba(image)
    b = PixelClassifier(n_estimators=15, random_state=7).fit([image], [labels]).predict_proba(image)
    np.testing.assert_array_equal(a, b)


def test_sklearn_contract():
    clf = PixelClassifier(n_estimators=12, max_depth=5, autocontext=True, random_state=3)
    params = clf.get_params()
    assert params["n_estimators"] == 12 and params["autocontext"] is True
    twin = clone(clf)
    assert twin.get_params() == params and not hasattr(twin, "forest_")
    assert PixelClassifier().set_params(**params).get_params() == params
    image, truth = _blobs()
    assert clf.fit([image], [_scribbles(truth, 40, 0)]) is clf


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (lambda t: np.where(t, 0, 1).astype(np.uint8), "at least 2 classes, found only class 1"),
        (lambda t: np.zeros(t.shape, np.uint8), "no labelled pixels"),
        (lambda t: np.zeros((50, 40), np.uint8), r"label map 0 is 40×50 but its image is 96×96"),
        (lambda t: np.full(t.shape, -1), "negative"),
        (lambda t: t.astype(np.float32), "must hold integers"),
    ],
)
def test_bad_scribbles_raise_clear_errors(labels, message):
    image, truth = _blobs()
    with pytest.raises(ValueError, match=message) as info:
        PixelClassifier(n_estimators=5).fit([image], [labels(truth)])
    assert isinstance(info.value, InvalidTrainingData)


def test_other_bad_input():
    image, truth = _blobs()
    labels = _scribbles(truth, 30, 0)
    with pytest.raises(ValueError, match="list of arrays"):
        PixelClassifier().fit(image, labels)
    with pytest.raises(ValueError, match="2 label maps"):
        PixelClassifier().fit([image], [labels, labels])
    clf = PixelClassifier(n_estimators=5, scales=(1.0,), random_state=0).fit([image], [labels])
    with pytest.raises(ValueError, match="trained on 8"):
        clf.predict_proba(features=compute_features(image, scales=(1.0, 2.0)))
    with pytest.raises(ValueError, match="width×height"):
        clf.predict_proba(image[:50], features=compute_features(image, scales=(1.0,)))


# ---------------------------------------------------------------- real EM data
def _lucchi_crop(split: str, index: int, y0: int, x0: int, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    image = np.asarray(Image.open(LUCCHI / split / "images" / f"slice_{index:03d}.png"))
    mask = np.asarray(Image.open(LUCCHI / split / "masks" / f"slice_{index:03d}.png")) > 127
    return image[y0 : y0 + size, x0 : x0 + size], mask[y0 : y0 + size, x0 : x0 + size]


@pytest.mark.shared_data
def test_forest_beats_otsu_on_lucchi_crops():
    if not LUCCHI.is_dir():
        pytest.skip(f"Lucchi mitochondria data not found at {LUCCHI} (../shared/data beside the repo)")
    from skimage.filters import threshold_otsu

    # crops chosen to hold 15-25 % mitochondria
    train = [_lucchi_crop("train", 0, 256, 256), _lucchi_crop("train", 80, 256, 512)]
    test = [_lucchi_crop("test", 0, 256, 0), _lucchi_crop("test", 80, 0, 512)]
    labels = [_scribbles(mask, 300, seed=i) for i, (_, mask) in enumerate(train)]
    clf = PixelClassifier(n_estimators=40, n_jobs=2, random_state=0).fit([img for img, _ in train], labels)
    forest_iou = np.mean([_iou(clf.predict(img) == 2, mask) for img, mask in test])
    # Mitochondria are darker than the cytoplasm here (mean ~107 vs ~140); taking the better side of Otsu's
    # threshold per crop makes the baseline as strong as it can be.
    otsu_iou = np.mean(
        [max(_iou(img < threshold_otsu(img), mask), _iou(img > threshold_otsu(img), mask)) for img, mask in test]
    )
    assert forest_iou > otsu_iou + 0.1, (forest_iou, otsu_iou)


# ---------------------------------------------------------------- smoothing the probability map
def test_smoothing_removes_isolated_wrong_pixels_and_keeps_probabilities():
    # A forest decides each pixel alone: a speckle of confident "object" pixels inside background (and a hole in
    # an object) is what smoothing the map before the argmax removes; a large object survives it.
    proba = np.zeros((64, 64, 2), np.float32)
    proba[..., 0] = 0.8
    proba[20:44, 20:44, 0] = 0.1               # a 24x24 object
    proba[5, 5, 0] = proba[50, 8, 0] = 0.05    # two isolated speckles
    proba[30, 30, 0] = 0.9                     # a one-pixel hole in the object
    proba[..., 1] = 1 - proba[..., 0]
    from labelloop.ml.pixel_classifier import _smoothed

    before = proba.argmax(axis=2)
    after = _smoothed(proba.copy(), 2.0).argmax(axis=2)
    assert before[5, 5] == before[50, 8] == 1 and before[30, 30] == 0
    assert after[5, 5] == after[50, 8] == 0 and after[30, 30] == 1
    assert after[22:42, 22:42].all() and not after[:15, :15].any()
    assert np.allclose(_smoothed(proba.copy(), 2.0).sum(axis=2), 1.0, atol=1e-5)
    assert np.array_equal(_smoothed(proba.copy(), 0.0), proba)  # 0 turns it off


def test_smoothing_reaches_predictions_of_both_stages():
    from labelloop.ml.pixel_classifier import _smoothed

    image, truth = _blobs(seed=3)
    labels = [_scribbles(truth, 150, 1)]
    for autocontext in (False, True):
        # refine fixed: "auto" would refine the unsmoothed map only
        fixed = {"autocontext": autocontext, "refine": True, "random_state": 0}
        plain = PixelClassifier(smoothing=0.0, **fixed).fit([image], labels)
        smooth = PixelClassifier(smoothing=3.0, **fixed).fit([image], labels)
        # the same forests underneath (same seed): only the final map is smoothed, after the last stage
        assert np.allclose(smooth.predict_proba(image), _smoothed(plain.predict_proba(image), 3.0), atol=1e-6)
        assert not np.allclose(smooth.predict_proba(image), plain.predict_proba(image), atol=1e-3)


def test_models_pickled_before_smoothing_existed_still_predict():
    image, truth = _blobs()
    clf = PixelClassifier(smoothing=0.0, random_state=0).fit([image], [_scribbles(truth, 100, 0)])
    expected = clf.predict(image)
    del clf.smoothing  # what unpickling a model saved by an older labelloop gives
    assert np.array_equal(clf.predict(image), expected)


def test_auto_intensity_scales_per_image_only_when_the_images_differ_in_brightness():
    from labelloop.ml.features import bright_level, choose_intensity

    image, truth = _blobs(0)
    other, other_truth = _blobs(1)
    dim = (other.astype(np.float32) * 0.3).astype(np.uint8)  # the same scene at a third of the exposure
    assert choose_intensity([bright_level(image), bright_level(other)]) == "dtype"
    assert choose_intensity([bright_level(image), bright_level(dim)]) == "percentile"
    assert choose_intensity([bright_level(image)]) == "dtype"  # one image cannot disagree with itself

    labels = [_scribbles(truth, 60, seed=0), _scribbles(other_truth, 60, seed=1)]
    same = PixelClassifier(n_estimators=20, random_state=0).fit([image, other], labels)
    assert same.intensity_ == "dtype"
    mixed = PixelClassifier(n_estimators=20, random_state=0).fit([image, dim], labels)
    assert mixed.intensity_ == "percentile"
    # a dim image of a new scene: the per-image scaling segments it, the raw intensities do not
    test, test_truth = _blobs(2)
    dim_test = (test.astype(np.float32) * 0.3).astype(np.uint8)
    raw = PixelClassifier(n_estimators=20, random_state=0, intensity="dtype").fit([image, other], labels)
    assert _iou(mixed.predict(dim_test) == 2, test_truth) > 0.8
    assert _iou(raw.predict(dim_test) == 2, test_truth) < 0.5
    feats = compute_features(image)  # a pixel table holds no images: auto reads as the features' default, dtype
    table = PixelClassifier(n_estimators=5, random_state=0).fit_features(feats[labels[0] > 0], labels[0][labels[0] > 0])
    assert table.intensity_ == "dtype"


def test_the_forest_threads_give_scikit_learns_probabilities():
    from sklearn.ensemble import RandomForestClassifier

    from labelloop.ml.pixel_classifier import _forest_proba

    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 6)).astype(np.float32)
    y = (X[:, 0] + 0.5 * rng.normal(size=3000) > 0).astype(int) + (X[:, 1] > 1)  # 3 classes
    forest = RandomForestClassifier(n_estimators=7, n_jobs=2, random_state=0).fit(X, y)
    assert np.allclose(_forest_proba(forest, X), forest.predict_proba(X), atol=1e-12)
    forest.set_params(n_jobs=1)
    assert np.array_equal(_forest_proba(forest, X), forest.predict_proba(X))


def _forest_rows(clf: PixelClassifier) -> list[int]:
    """Watches clf's forest: the list it returns gets the pixel count of every call that follows."""
    rows: list[int] = []
    predict_rows = clf._predict_rows
    clf._predict_rows = lambda forest, table: rows.append(len(table)) or predict_rows(forest, table)
    return rows


def test_refine_off_predicts_only_the_coarse_grid_and_keeps_the_segmentation():
    image, truth = _blobs(seed=4, size=120)
    labels = [_scribbles(truth, 150, 2)]
    refined = PixelClassifier(refine=True, autocontext=False, random_state=0).fit([image], labels)
    coarse = PixelClassifier(refine=False, autocontext=False, random_state=0).fit([image], labels)
    refined_rows, coarse_rows = _forest_rows(refined), _forest_rows(coarse)
    fine, rough = refined.predict(image), coarse.predict(image)
    assert sum(coarse_rows) == 40 * 40  # every 3rd pixel of 120×120, nothing predicted again
    assert sum(refined_rows) > sum(coarse_rows) * 1.2
    assert np.mean(fine == rough) > 0.97
    assert abs(_iou(fine == 2, truth) - _iou(rough == 2, truth)) < 0.03
    del coarse.refine  # a model pickled before `refine` existed refines, as it did (the same forest: same seed)
    coarse_rows.clear()
    assert np.array_equal(coarse.predict(image), fine) and sum(coarse_rows) > 40 * 40 * 1.2


def test_refine_auto_refines_only_when_the_smoothing_is_narrower_than_the_coarse_grid():
    image, truth = _blobs(seed=5)
    labels = [_scribbles(truth, 150, 3)]
    for smoothing, refines in ((3.0, False), (2.0, True), (0.0, True)):
        clf = PixelClassifier(smoothing=smoothing, autocontext=False, random_state=0).fit([image], labels)  # "auto"
        rows = _forest_rows(clf)
        clf.predict(image)
        assert (sum(rows) > 32 * 32) is refines, (smoothing, sum(rows))
    with pytest.raises(InvalidTrainingData, match="refine must be"):
        PixelClassifier(refine="sometimes").fit([image], labels)
