"""Annotation shapes in the one geometry convention of the project.

Pixel coordinates, origin at the top-left corner of the top-left pixel, x right, y down, float.
Box = (x0, y0, x1, y1). Polygon = parts of (x, y) points, not closed. Masks are COCO RLE at rest
(`size` = [height, width], `counts` = the compressed RLE string). Formats convert at their own edge.
`label` is always a class name of the project's schema. `score` is set on predictions only.
`attributes` keeps format extras that a round trip should not lose (COCO iscrowd, VOC difficult).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

Point = tuple[float, float]


@dataclass(frozen=True)
class ClassLabel:
    label: str
    score: float | None = None
    attributes: dict[str, Any] = field(default_factory=dict, compare=False)
    type: str = field(default="class", init=False)


@dataclass(frozen=True)
class Box:
    label: str
    x0: float
    y0: float
    x1: float
    y1: float
    score: float | None = None
    attributes: dict[str, Any] = field(default_factory=dict, compare=False)
    type: str = field(default="box", init=False)

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0


@dataclass(frozen=True)
class Polygon:
    """One object outlined by one or more parts (COCO allows several polygons per object)."""

    label: str
    parts: tuple[tuple[Point, ...], ...]
    score: float | None = None
    attributes: dict[str, Any] = field(default_factory=dict, compare=False)
    type: str = field(default="polygon", init=False)

    def bounds(self) -> tuple[float, float, float, float]:
        xs = [x for part in self.parts for x, _ in part]
        ys = [y for part in self.parts for _, y in part]
        return min(xs), min(ys), max(xs), max(ys)


@dataclass(frozen=True)
class Mask:
    """A pixel mask as COCO RLE: one object (instance projects) or one class's region (semantic)."""

    label: str
    size: tuple[int, int]  # (height, width)
    counts: str
    score: float | None = None
    attributes: dict[str, Any] = field(default_factory=dict, compare=False)
    type: str = field(default="mask", init=False)


@dataclass(frozen=True)
class Scribble:
    """A sparse partial label: the pixels a person marked as this class (COCO RLE)."""

    label: str
    size: tuple[int, int]  # (height, width)
    counts: str
    attributes: dict[str, Any] = field(default_factory=dict, compare=False)
    type: str = field(default="scribble", init=False)


Shape = Union[ClassLabel, Box, Polygon, Mask, Scribble]

_TYPES: dict[str, type] = {
    "class": ClassLabel,
    "box": Box,
    "polygon": Polygon,
    "mask": Mask,
    "scribble": Scribble,
}


def shape_to_dict(shape: Shape) -> dict[str, Any]:
    """JSON-ready form used in the database and the API."""
    data: dict[str, Any] = {"type": shape.type, "label": shape.label}
    if isinstance(shape, Box):
        data.update(x0=shape.x0, y0=shape.y0, x1=shape.x1, y1=shape.y1)
    elif isinstance(shape, Polygon):
        data["parts"] = [[[x, y] for x, y in part] for part in shape.parts]
    elif isinstance(shape, (Mask, Scribble)):
        data.update(size=list(shape.size), counts=shape.counts)
    if getattr(shape, "score", None) is not None:
        data["score"] = shape.score
    if shape.attributes:
        data["attributes"] = dict(shape.attributes)
    return data


def shape_from_dict(data: dict[str, Any]) -> Shape:
    kind = data.get("type")
    if kind not in _TYPES:
        raise ValueError(f"unknown shape type {kind!r}; expected one of {sorted(_TYPES)}")
    common: dict[str, Any] = {"label": str(data["label"]), "attributes": dict(data.get("attributes") or {})}
    if kind != "scribble" and data.get("score") is not None:
        common["score"] = float(data["score"])
    if kind == "class":
        return ClassLabel(**common)
    if kind == "box":
        return Box(x0=float(data["x0"]), y0=float(data["y0"]), x1=float(data["x1"]), y1=float(data["y1"]), **common)
    if kind == "polygon":
        parts = tuple(tuple((float(x), float(y)) for x, y in part) for part in data["parts"])
        return Polygon(parts=parts, **common)
    height, width = data["size"]
    return _TYPES[kind](size=(int(height), int(width)), counts=str(data["counts"]), **common)
