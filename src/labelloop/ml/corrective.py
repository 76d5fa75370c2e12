"""Corrective scribbles: where a simulated person would draw the next stroke, given the truth and a prediction.

The protocol of the "hold up on data never seen" issue (and of the simulated annotator): start from a seeded sample
of ground-truth pixels per class (`seed_pixels`); each round, for each class, draw one stroke of at most
``max_pixels`` pixels inside the largest 8-connected region that the current prediction gets wrong for that class
(`corrective_strokes`). A stroke follows the region's skeleton from its deepest point, so it is a thin line down the
middle of the region, as a person would draw it, never a blob and never touching the region's edge more than the
skeleton does.

Label maps use the project's scribble convention: 0 = unlabelled, k >= 1 = class k. Truth pixels of value 0 are
"unknown" and are never stroked. Everything here is deterministic (ties break by raster order).
"""

from __future__ import annotations

from collections import deque

import numpy as np
from scipy import ndimage
from skimage.morphology import skeletonize

from labelloop.errors import InvalidInput

_EIGHT = np.ones((3, 3), dtype=bool)
_STEPS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def largest_wrong_region(truth: np.ndarray, prediction: np.ndarray, cls: int) -> np.ndarray:
    """Boolean mask of the largest 8-connected region where truth == cls and prediction != cls (all False if none)."""
    truth, prediction = _check_pair(truth, prediction)
    wrong = (truth == cls) & (prediction != cls)
    labels, count = ndimage.label(wrong, structure=_EIGHT)
    if count == 0:
        return wrong
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0
    return labels == int(np.argmax(sizes))  # argmax: the first (raster-order) of equally large regions


def stroke_in(region_mask: np.ndarray, max_pixels: int) -> np.ndarray:
    """A connected line of at most max_pixels pixels inside region_mask, along its skeleton from its deepest point."""
    if max_pixels < 1:
        raise InvalidInput(f"a stroke needs max_pixels >= 1, got {max_pixels}")
    region = np.asarray(region_mask, dtype=bool)
    if region.ndim != 2:
        raise InvalidInput(f"region_mask must be a 2-D mask, got shape {region.shape}")
    stroke = np.zeros(region.shape, dtype=bool)
    if not region.any():
        return stroke
    # Padding makes the image border count as the region's edge, so the deepest point is deep inside the view.
    depth = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    skeleton = skeletonize(region) & region
    if not skeleton.any():
        skeleton = depth == depth.max()
    # Breadth-first along the skeleton only: the stroke stays on the start's own component and never jumps a gap.
    start = np.unravel_index(int(np.argmax(np.where(skeleton, depth, -1.0))), region.shape)
    height, width = region.shape
    stroke[start] = True
    queue = deque([start])
    taken = 1
    while queue and taken < max_pixels:
        y, x = queue.popleft()
        for dy, dx in _STEPS:
            ny, nx = y + dy, x + dx
            if 0 <= ny < height and 0 <= nx < width and skeleton[ny, nx] and not stroke[ny, nx]:
                stroke[ny, nx] = True
                taken += 1
                queue.append((ny, nx))
                if taken >= max_pixels:
                    break
    return stroke


def corrective_strokes(
    truth: np.ndarray, prediction: np.ndarray, max_pixels: int = 200, classes: list[int] | None = None
) -> np.ndarray:
    """Scribble map (0 = none, k = class k) with one stroke per class in that class's largest wrong region.

    ``classes``: the class values to correct (default: every value >= 1 in truth). A class the prediction gets
    entirely right gets no stroke; a perfect prediction gives an all-zero map. Count the strokes drawn with
    `stroke_count`.
    """
    truth, prediction = _check_pair(truth, prediction)
    values = _class_values(truth, classes)
    out = np.zeros(truth.shape, dtype=np.uint8 if (max(values, default=0) < 256) else np.uint16)
    for value in values:
        region = largest_wrong_region(truth, prediction, value)
        if region.any():
            out[stroke_in(region, max_pixels)] = value
    return out


def stroke_count(strokes: np.ndarray) -> int:
    """Strokes in a `corrective_strokes` map: one per class value present."""
    values = np.unique(strokes)
    return int(np.count_nonzero(values))


def seed_pixels(truth: np.ndarray, per_class: int, seed: int | np.random.Generator,
                classes: list[int] | None = None) -> np.ndarray:
    """Scribble map of ``per_class`` seeded random truth pixels of each class (all of a class's pixels if fewer)."""
    if per_class < 0:
        raise InvalidInput(f"per_class must be >= 0, got {per_class}")
    truth = np.asarray(truth)
    if truth.ndim != 2:
        raise InvalidInput(f"truth must be a 2-D label map, got shape {truth.shape}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    values = _class_values(truth, classes)
    out = np.zeros(truth.shape, dtype=np.uint8 if (max(values, default=0) < 256) else np.uint16)
    for value in values:
        idx = np.flatnonzero(truth == value)
        if idx.size:
            out.flat[rng.choice(idx, min(per_class, idx.size), replace=False)] = value
    return out


def _class_values(truth: np.ndarray, classes: list[int] | None) -> list[int]:
    if classes is None:
        return [int(v) for v in np.unique(truth) if v >= 1]
    bad = [c for c in classes if int(c) < 1]
    if bad:
        raise InvalidInput(f"class values must be >= 1 (0 means unlabelled), got {bad}")
    return sorted({int(c) for c in classes})


def _check_pair(truth: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    truth, prediction = np.asarray(truth), np.asarray(prediction)
    if truth.ndim != 2 or truth.shape != prediction.shape:
        raise InvalidInput(
            f"truth and prediction must be 2-D label maps of the same shape, got {truth.shape} and {prediction.shape}"
        )
    return truth, prediction
