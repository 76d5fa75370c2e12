"""Corrective scribbles (ml/corrective.py) on hand-made label maps."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from labelloop.errors import InvalidInput
from labelloop.ml.corrective import (
    corrective_strokes,
    largest_wrong_region,
    seed_pixels,
    stroke_count,
    stroke_in,
)


def _connected(mask: np.ndarray) -> bool:
    _, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    return count == 1


def _truth_two_blobs() -> np.ndarray:
    """Background 1 with two class-2 rectangles: a big one (20x40) and a small one (5x5)."""
    truth = np.ones((64, 64), np.uint8)
    truth[10:30, 10:50] = 2
    truth[50:55, 50:55] = 2
    return truth


def test_largest_wrong_region_picks_the_biggest_missed_area():
    truth = _truth_two_blobs()
    prediction = np.ones_like(truth)  # misses both objects
    region = largest_wrong_region(truth, prediction, 2)
    assert region.sum() == 20 * 40
    assert region[10:30, 10:50].all()
    assert not region[50:55, 50:55].any()


def test_largest_wrong_region_counts_only_pixels_of_that_class_predicted_wrong():
    truth = _truth_two_blobs()
    prediction = truth.copy()
    prediction[10:30, 10:50] = 1
    prediction[0:5, 0:64] = 2  # background predicted as object: wrong for class 1, not for class 2
    assert largest_wrong_region(truth, prediction, 2).sum() == 800
    background = largest_wrong_region(truth, prediction, 1)
    assert background.sum() == 5 * 64
    assert (truth[background] == 1).all()


def test_largest_wrong_region_is_eight_connected():
    truth = np.ones((10, 10), np.uint8)
    for i in range(6):  # a diagonal line: one region under 8-connectivity, six under 4
        truth[i, i] = 2
    region = largest_wrong_region(truth, np.ones_like(truth), 2)
    assert region.sum() == 6


def test_stroke_is_a_connected_line_inside_the_region_of_at_most_max_pixels():
    region = np.zeros((80, 200), bool)
    region[20:40, 10:190] = True  # a long bar, 20 px thick
    stroke = stroke_in(region, 50)
    assert 0 < stroke.sum() <= 50
    assert stroke.sum() == 50  # the skeleton is longer than 50 px
    assert (region[stroke]).all()
    assert _connected(stroke)
    rows = np.flatnonzero(stroke.any(axis=1))
    assert rows.max() - rows.min() <= 2, "a line along the bar, not a blob"
    assert 25 <= rows.mean() <= 34, "down the middle of the bar"


def test_stroke_starts_at_the_deepest_point():
    region = np.zeros((60, 60), bool)
    region[5:55, 5:55] = True
    stroke = stroke_in(region, 1)
    (y, x), = np.argwhere(stroke)
    assert abs(y - 29.5) <= 1.5 and abs(x - 29.5) <= 1.5


def test_stroke_in_a_tiny_region_and_an_empty_one():
    region = np.zeros((9, 9), bool)
    region[4, 4] = True
    assert stroke_in(region, 200).sum() == 1
    assert stroke_in(np.zeros((9, 9), bool), 200).sum() == 0


def test_corrective_strokes_one_stroke_per_wrong_class_inside_its_wrong_region():
    truth = _truth_two_blobs()
    prediction = np.ones_like(truth)
    prediction[0:8, :] = 2  # a false object band at the top: background wrong there
    strokes = corrective_strokes(truth, prediction, max_pixels=30)
    assert stroke_count(strokes) == 2
    for value in (1, 2):
        drawn = strokes == value
        assert 0 < drawn.sum() <= 30
        assert _connected(drawn)
        assert (truth[drawn] == value).all(), "a stroke carries the truth's class"
        assert (prediction[drawn] != value).all(), "a stroke lies where the prediction is wrong"
    assert (strokes == 2)[10:30, 10:50].sum() == (strokes == 2).sum(), "in the largest missed object"


def test_no_strokes_when_the_prediction_is_right():
    truth = _truth_two_blobs()
    strokes = corrective_strokes(truth, truth.copy())
    assert not strokes.any()
    assert stroke_count(strokes) == 0


def test_classes_limits_which_classes_get_strokes_and_is_deterministic():
    truth = _truth_two_blobs()
    prediction = np.where(truth == 2, 1, 2).astype(np.uint8)
    only_objects = corrective_strokes(truth, prediction, classes=[2])
    assert set(np.unique(only_objects)) == {0, 2}
    assert np.array_equal(corrective_strokes(truth, prediction), corrective_strokes(truth, prediction))


def test_seed_pixels_samples_each_class_seeded():
    truth = _truth_two_blobs()
    a = seed_pixels(truth, 100, seed=3)
    assert np.array_equal(a, seed_pixels(truth, 100, seed=3))
    assert not np.array_equal(a, seed_pixels(truth, 100, seed=4))
    for value in (1, 2):
        assert (a == value).sum() == 100
        assert (truth[a == value] == value).all()
    small = np.ones((4, 4), np.uint8)
    small[0, 0] = 2
    assert (seed_pixels(small, 5, seed=0) == 2).sum() == 1  # fewer pixels than asked: all of them


def test_bad_input_is_refused():
    with pytest.raises(InvalidInput):
        corrective_strokes(np.ones((4, 4)), np.ones((4, 5)))
    with pytest.raises(InvalidInput):
        stroke_in(np.ones((4, 4), bool), 0)
    with pytest.raises(InvalidInput):
        corrective_strokes(np.ones((4, 4)), np.ones((4, 4)), classes=[0])
