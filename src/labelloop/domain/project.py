"""Project kinds, splits and the label schema."""

from __future__ import annotations

import enum
from dataclasses import dataclass

# A colour-blind-safe palette (Okabe-Ito, then Tableau) so default class colours stay distinct.
_PALETTE = (
    "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7",
    "#4E79A7", "#F28E2B", "#E15759", "#76B7B2", "#59A14F", "#EDC948", "#B07AA1",
    "#FF9DA7", "#9C755F", "#BAB0AC",
)


def default_colour(index: int) -> str:
    return _PALETTE[index % len(_PALETTE)]


class ProjectKind(str, enum.Enum):
    classification = "classification"
    multilabel = "multilabel"
    detection = "detection"
    instance = "instance"
    semantic = "semantic"


# Kinds whose label is a class: a prediction or revision naming no class is no answer there
CLASS_KINDS = (ProjectKind.classification, ProjectKind.multilabel)


class Split(str, enum.Enum):
    train = "train"
    val = "val"
    test = "test"
    none = "none"


@dataclass(frozen=True)
class ClassDef:
    """One class of a project's label schema; `index` is 1-based (0 is background in masks)."""

    name: str
    index: int
    colour: str
