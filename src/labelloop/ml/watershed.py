"""Split touching objects of a foreground mask into instances (seeded watershed) and outline them as polygons."""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.segmentation import relabel_sequential, watershed

SeedSource = Literal["distance", "probability"]


def split_instances(
    foreground: np.ndarray,
    *,
    probability: np.ndarray | None = None,
    seeds: SeedSource = "distance",
    min_distance: int = 5,
    min_size: int = 20,
    footprint: np.ndarray | None = None,
    smoothing: float = 1.0,
) -> np.ndarray:
    """Instance labels (int32 H×W, 0 = background, 1..N) of a boolean foreground mask.

    Seeds are the local maxima of the Euclidean distance to the background (`seeds="distance"`) or of the
    probability map smoothed by a Gaussian of sigma `smoothing` (`seeds="probability"`), at least `min_distance`
    pixels apart; every connected component gets at least one seed. The watershed floods the negated seed map
    inside the foreground; instances under `min_size` pixels are dropped and the rest renumbered 1..N.
    """
    foreground = _as_mask(foreground)
    if min_distance < 1:
        raise ValueError(f"min_distance must be at least 1 pixel, got {min_distance}")
    if min_size < 0:
        raise ValueError(f"min_size must be 0 or more pixels, got {min_size}")
    if seeds == "distance":
        height = ndimage.distance_transform_edt(foreground)
    elif seeds == "probability":
        if probability is None:
            raise ValueError('seeds="probability" needs the probability map: pass probability=...')
        probability = np.asarray(probability, dtype=np.float64)
        if probability.shape != foreground.shape:
            raise ValueError(
                f"probability has shape {probability.shape} but foreground has {foreground.shape}; they must match"
            )
        height = ndimage.gaussian_filter(probability, smoothing) if smoothing > 0 else probability
        height = np.where(foreground, height, 0.0)
    else:
        raise ValueError(f'seeds must be "distance" or "probability", got {seeds!r}')

    components, n_components = ndimage.label(foreground)
    if n_components == 0:
        return np.zeros(foreground.shape, dtype=np.int32)
    peaks = peak_local_max(
        height,
        min_distance=min_distance,
        footprint=footprint,
        labels=components,
        exclude_border=False,
    )
    markers = np.zeros(foreground.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1, dtype=np.int32)
    # A component without a peak (flat or tiny) would be swallowed by a neighbour or lost: seed it at its maximum.
    seeded = np.zeros(n_components + 1, dtype=bool)
    seeded[components[tuple(peaks.T)]] = True
    missing = np.flatnonzero(~seeded[1:]) + 1
    if len(missing):
        positions = ndimage.maximum_position(height, components, missing)
        for offset, (row, col) in enumerate(positions, start=len(peaks) + 1):
            markers[row, col] = offset

    labels = watershed(-height, markers, mask=foreground)
    if min_size > 0:
        sizes = np.bincount(labels.ravel())
        small = sizes < min_size
        small[0] = False
        labels[small[labels]] = 0
    labels, _, _ = relabel_sequential(labels)
    return labels.astype(np.int32, copy=False)


def instances_to_polygons(labels: np.ndarray) -> list[tuple[int, list[tuple[float, float]]]]:
    """(label id, outer outline) pairs, one per connected piece of each instance, in label order.

    Points are the centres of the boundary pixels in the project's convention (pixel (c, r) covers
    [c, c+1) × [r, r+1), so its centre is (c + 0.5, r + 0.5)): OpenCV traces pixel indices and we add 0.5, as
    formats/yolo.py does. The outline therefore lies half a pixel inside the mask's edge. Holes are ignored and
    pieces thinner than a polygon (fewer than 3 points) are skipped.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be a 2-D array of instance ids, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must hold integer instance ids, got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError("labels must not be negative (0 is background, 1..N are instances)")
    result: list[tuple[int, list[tuple[float, float]]]] = []
    max_label = int(labels.max()) if labels.size else 0
    for label_id, window in enumerate(ndimage.find_objects(labels, max_label=max_label), start=1):
        if window is None:
            continue
        rows, cols = window
        piece = (labels[window] == label_id).astype(np.uint8)
        contours, _ = cv2.findContours(piece, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        for contour in contours:
            points = contour.reshape(-1, 2)
            if len(points) < 3:
                continue
            result.append(
                (label_id, [(float(x) + cols.start + 0.5, float(y) + rows.start + 0.5) for x, y in points])
            )
    return result


def _as_mask(foreground: np.ndarray) -> np.ndarray:
    foreground = np.asarray(foreground)
    if foreground.ndim != 2:
        raise ValueError(f"foreground must be a 2-D H×W mask, got shape {foreground.shape}")
    if foreground.dtype != bool:
        if not (np.issubdtype(foreground.dtype, np.integer) or np.issubdtype(foreground.dtype, np.floating)):
            raise ValueError(f"foreground must be boolean (or 0/1 numbers), got dtype {foreground.dtype}")
        foreground = foreground != 0
    return foreground
