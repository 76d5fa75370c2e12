"""One registry of model kinds: a model is one module here and one `@register_model_kind` line.

A model kind knows which project kinds it serves, how to gather training data from a project and train
(returning a stored Model), and how to turn its output into Predictions."""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

from labelloop.domain import ProjectKind
from labelloop.errors import InvalidInput
from labelloop.jobs.registry import JobContext

_KINDS: dict[str, type] = {}


class ModelKind(Protocol):
    name: ClassVar[str]
    description: ClassVar[str]
    project_kinds: ClassVar[tuple[ProjectKind, ...]]
    # What a model card shows (services/assist/model_cards.py): (metric key, words, how to show it), and a note
    figures: ClassVar[tuple[tuple[str, str, str], ...]]
    card_note: ClassVar[str]

    def train(self, workspace, project, params: dict[str, Any], ctx: JobContext):
        """Fit on the project's labels and save a new Model version; returns its ModelInfo."""

    def predict(self, workspace, project, model, item_ids: list[int], params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
        """Write Predictions for the items; returns a summary."""


def register_model_kind(cls: type) -> type:
    _KINDS[cls.name] = cls
    return cls


def _load() -> None:
    from labelloop.services.assist.model_kinds import pixel_rf  # noqa: F401
    from labelloop.services.assist.model_kinds import unet  # noqa: F401
    from labelloop.services.assist.model_kinds import classifier  # noqa: F401
    from labelloop.services.assist.model_kinds import detector  # noqa: F401
    from labelloop.services.assist.model_kinds import micro  # noqa: F401


def get_model_kind(name: str) -> ModelKind:
    _load()
    name = name.partition(":")[0]  # a per-class kind (micro:CLASS) belongs to its family's kind
    if name not in _KINDS:
        raise InvalidInput(f"unknown model {name!r}; choose one of: {', '.join(sorted(_KINDS))}")
    return _KINDS[name]()


def model_kind_names() -> list[str]:
    _load()
    return sorted(_KINDS)
