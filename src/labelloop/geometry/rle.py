"""Masks <-> COCO RLE <-> polygons, in the project's pixel convention."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pycocotools import mask as cocomask

from labelloop.domain import Mask, Polygon, Scribble


def encode(mask: np.ndarray) -> tuple[tuple[int, int], str]:
    """Boolean H×W array -> ((height, width), compressed RLE counts string)."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    rle = cocomask.encode(np.asfortranarray(mask.astype(np.uint8, copy=False)))
    return (int(rle["size"][0]), int(rle["size"][1])), rle["counts"].decode("ascii")


def decode(shape: Mask | Scribble) -> np.ndarray:
    """A Mask or Scribble shape -> boolean H×W array."""
    rle = {"size": [shape.size[0], shape.size[1]], "counts": shape.counts.encode("ascii")}
    return cocomask.decode(rle).astype(bool)


def area(shape: Mask | Scribble) -> int:
    rle = {"size": [shape.size[0], shape.size[1]], "counts": shape.counts.encode("ascii")}
    return int(cocomask.area(rle))


def bbox(shape: Mask | Scribble) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of the set pixels; pixel (c, r) covers [c, c+1) × [r, r+1)."""
    rle = {"size": [shape.size[0], shape.size[1]], "counts": shape.counts.encode("ascii")}
    x, y, w, h = (float(v) for v in cocomask.toBbox(rle))
    return x, y, x + w, y + h


def uncompressed_to_counts(counts: Sequence[int], size: tuple[int, int]) -> str:
    """COCO's uncompressed RLE (a list of run lengths, column-major) -> compressed counts string."""
    rle = cocomask.frPyObjects({"counts": list(counts), "size": [size[0], size[1]]}, size[0], size[1])
    return rle["counts"].decode("ascii")


def polygon_to_mask(polygon: Polygon, size: tuple[int, int]) -> np.ndarray:
    """Rasterise like COCO does (pycocotools), so areas agree with COCO's own evaluation."""
    height, width = size
    rings = [[c for point in part for c in point] for part in polygon.parts if len(part) >= 3]
    if not rings:
        return np.zeros((height, width), dtype=bool)
    rles = cocomask.frPyObjects(rings, height, width)
    return cocomask.decode(cocomask.merge(rles)).astype(bool)


def polygon_area(polygon: Polygon) -> float:
    """Exact area of the parts by the shoelace formula (parts assumed not to overlap)."""
    total = 0.0
    for part in polygon.parts:
        if len(part) < 3:
            continue
        xs = np.asarray([p[0] for p in part], dtype=float)
        ys = np.asarray([p[1] for p in part], dtype=float)
        total += 0.5 * abs(float(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))))
    return total
