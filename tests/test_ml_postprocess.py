"""Cleaning a predicted class map: specks dropped, pinholes filled, everything else as it was."""

import numpy as np
import pytest

from labelloop.ml.postprocess import clean_classes


def scene() -> np.ndarray:
    classes = np.zeros((60, 80), np.uint8)
    classes[5:35, 5:35] = 1          # an object of class 1 (900 px)...
    classes[15:17, 15:17] = 0        # ...with a 4-pixel pinhole
    classes[22:30, 22:30] = 0        # ...and a 64-pixel hole
    classes[50, 50] = 1              # a 1-pixel speck of class 1
    classes[40:43, 60:63] = 2        # 9 pixels of class 2
    classes[10:30, 50:70] = 2        # 400 pixels of class 2...
    classes[18:20, 58:60] = 1        # ...enclosing 4 pixels of class 1
    return classes


def test_specks_under_min_size_go_to_background_and_holes_under_max_hole_take_the_class():
    classes = scene()
    cleaned = clean_classes(classes, min_size=10, max_hole=10)
    assert cleaned[50, 50] == 0 and (cleaned[40:43, 60:63] == 0).all()   # under 10 px: gone, whatever the class
    assert (cleaned[15:17, 15:17] == 1).all()                             # the pinhole is filled
    assert (cleaned[22:30, 22:30] == 0).all()                             # the 64-pixel hole stays
    assert (cleaned[18:20, 58:60] == 2).all()    # the class-1 speck inside class 2: dropped, then filled by class 2
    changed = cleaned != classes
    assert changed.sum() == 1 + 9 + 4 + 4 and classes.dtype == cleaned.dtype
    assert (classes == scene()).all()                                     # the input is not modified


def test_zero_turns_cleaning_off_and_sizes_are_strict_bounds():
    classes = scene()
    assert (clean_classes(classes) == classes).all()
    assert clean_classes(classes, min_size=9)[41, 61] == 2                # exactly 9 px is not under 9
    assert clean_classes(classes, max_hole=4)[15, 15] == 0
    assert clean_classes(classes, max_hole=5)[15, 15] == 1


def test_diagonal_pixels_count_as_one_piece():
    classes = np.zeros((10, 10), np.uint8)
    classes[[2, 3, 4], [2, 3, 4]] = 1
    assert (clean_classes(classes, min_size=3) == classes).all()
    assert not clean_classes(classes, min_size=4).any()


@pytest.mark.parametrize("kwargs, message", [({"min_size": -1}, "min_size"), ({"max_hole": -5}, "max_hole")])
def test_negative_sizes_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        clean_classes(scene(), **kwargs)


def test_a_float_map_is_refused():
    with pytest.raises(ValueError, match="integer class indices"):
        clean_classes(np.zeros((4, 4)))
