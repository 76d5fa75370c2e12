"""Plain data for the whole system: no I/O, no third-party framework."""

from labelloop.domain.project import CLASS_KINDS, ClassDef, ProjectKind, Split, default_colour
from labelloop.domain.shapes import (
    Box,
    ClassLabel,
    Mask,
    Polygon,
    Scribble,
    Shape,
    shape_from_dict,
    shape_to_dict,
)

__all__ = [
    "CLASS_KINDS",
    "Box",
    "ClassDef",
    "ClassLabel",
    "Mask",
    "Polygon",
    "ProjectKind",
    "Scribble",
    "Shape",
    "Split",
    "default_colour",
    "shape_from_dict",
    "shape_to_dict",
]
