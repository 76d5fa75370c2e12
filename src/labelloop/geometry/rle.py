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


def runs(counts: str) -> list[int]:
    """Run lengths of a compressed COCO RLE string (pycocotools' rleFrString, in Python, with checks)."""
    values: list[int] = []
    p, n = 0, len(counts)
    while p < n:
        x = k = 0
        more = True
        while more:
            if p >= n:
                raise ValueError("the RLE string ends in the middle of a number")
            c = ord(counts[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {counts[p]!r} is not part of COCO's compressed RLE alphabet")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(values) > 2:
            x += values[-2]
        values.append(x)
    return values


def check_counts(size: Sequence[int], counts: str) -> None:
    """Raise ValueError unless `counts` is a well-formed RLE covering exactly size[0]·size[1] pixels.

    pycocotools decodes without bounds checks, so a malformed string from a file or a client must be refused
    before it gets there."""
    height, width = int(size[0]), int(size[1])
    if height < 1 or width < 1:
        raise ValueError(f"mask size {height}×{width} is empty")
    values = runs(counts)
    if any(v < 0 for v in values):
        raise ValueError("the RLE has a negative run length")
    if sum(values) != height * width:
        raise ValueError(f"the RLE covers {sum(values)} pixels but a {width}×{height} mask has {height * width}")


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
