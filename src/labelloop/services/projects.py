"""Projects and their label schema."""

from __future__ import annotations

import difflib
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from labelloop.domain import ClassDef, ProjectKind, default_colour
from labelloop.errors import Conflict, InvalidInput, NotFound
from labelloop.store.tables import AnnotationRow, ItemRow, ModelRow, PredictionRow, ProjectRow

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
COLOUR_RE = re.compile(r"^#[0-9A-Fa-f]{6}$")
DEFAULT_SETTINGS: dict[str, Any] = {"target_precision": 0.95, "sampling": "shuffled"}


def _number_between(low: float, high: float, integer: bool = False):
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
            return f"must be {'a whole number' if integer else 'a number'}"
        if not low <= value <= high:
            return f"must lie between {low} and {high}"
        return None

    return check


def _one_of(*choices: str):
    def check(value: Any) -> str | None:
        return None if value in choices else f"choose one of {', '.join(choices)}"

    return check


def _sampling_problem(value: Any) -> str | None:
    from labelloop.services.labelling.queue import ORDERS  # the queue's orders, sampling strategies included

    return None if isinstance(value, str) and value in ORDERS else f"choose one of {', '.join(ORDERS)}"


# Settings a client may change, each with a check that returns a problem or None.
SETTING_CHECKS: dict[str, Any] = {
    "target_precision": _number_between(0.5, 1.0),
    "sampling": lambda v: _sampling_problem(v),
    "overlap": _number_between(1, 10, integer=True),  # independent annotators per item (agreement needs 2)
    "lease_seconds": _number_between(10, 7 * 24 * 3600, integer=True),  # how long `next` reserves an item
    # Classification (services/assist/model_kinds/classifier.py, ml/calibration.py; the choices are spelled out here so
    # that this module does not import numpy: a test checks they match).
    "calibration_method": _one_of("estimate", "bound", "auto"),
    "calibration_confidence": _number_between(0.0, 0.999),
    "classifier_features": _one_of("imagenet", "pooled"),
    "retrain_every": _number_between(0, 1_000_000, integer=True),  # new labels between retrainings; 0 = off
}


@dataclass(frozen=True)
class ProjectInfo:
    id: int
    name: str
    kind: ProjectKind
    classes: list[ClassDef]
    settings: dict[str, Any] = field(default_factory=dict)

    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind.value,
            "classes": [{"name": c.name, "index": c.index, "colour": c.colour} for c in self.classes],
            "settings": self.settings,
        }


def info(row: ProjectRow) -> ProjectInfo:
    classes = [ClassDef(c["name"], i + 1, c["colour"]) for i, c in enumerate(row.classes)]
    return ProjectInfo(row.id, row.name, ProjectKind(row.kind), classes, dict(row.settings))


def parse_kind(kind: str | ProjectKind) -> ProjectKind:
    try:
        return ProjectKind(kind)
    except ValueError:
        raise InvalidInput(f"unknown project kind {kind!r}; choose one of: {', '.join(k.value for k in ProjectKind)}") from None


MAX_CLASS_NAME = 100


def check_class_names(names: list[str]) -> list[str]:
    cleaned = [n.strip() for n in names]
    for name in cleaned:
        if not name:
            raise InvalidInput("class names must not be empty")
        if len(name) > MAX_CLASS_NAME:
            raise InvalidInput(f"class name {name[:40]!r}… is {len(name)} characters long; a class name has at most "
                               f"{MAX_CLASS_NAME} characters")
        if any(ch in name for ch in ";\n\r\t"):
            raise InvalidInput(f"class name {name!r} is not allowed: no ';', tab or newline in a class name")
    duplicates = sorted({n for n in cleaned if cleaned.count(n) > 1})
    if duplicates:
        raise InvalidInput(f"class names must be unique; repeated: {', '.join(duplicates)}")
    return cleaned


def create_project(
    session: Session,
    name: str,
    kind: str | ProjectKind,
    classes: list[str] | None = None,
    colours: list[str] | None = None,
    settings: dict[str, Any] | None = None,
) -> ProjectInfo:
    if not NAME_RE.match(name or ""):
        raise InvalidInput(
            f"project name {name!r} is not valid: use 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    kind = parse_kind(kind)
    names = check_class_names(classes or [])
    colours = list(colours or [])
    for colour in colours:
        if not COLOUR_RE.match(colour):
            raise InvalidInput(f"colour {colour!r} is not a #RRGGBB hex colour")
    if session.scalar(select(ProjectRow.id).where(ProjectRow.name == name)) is not None:
        raise Conflict(f"a project named {name!r} already exists")
    row = ProjectRow(
        name=name,
        kind=kind.value,
        classes=[{"name": n, "colour": colours[i] if i < len(colours) else default_colour(i)} for i, n in enumerate(names)],
        settings={**DEFAULT_SETTINGS, **(settings or {})},
        seed=secrets.randbits(62),
    )
    session.add(row)
    session.flush()
    return info(row)


def get_row(session: Session, name: str, *, lock: bool = False) -> ProjectRow:
    query = select(ProjectRow).where(ProjectRow.name == name)
    if lock:
        query = query.with_for_update()
    row = session.scalar(query)
    if row is None:
        known = session.scalars(select(ProjectRow.name)).all()
        hint = difflib.get_close_matches(name, known, n=1)
        suffix = f"; did you mean {hint[0]!r}?" if hint else ("" if known else "; create it with `labelloop project create`")
        raise NotFound(f"no project named {name!r}{suffix}")
    return row


def get_project_by_id(session: Session, project_id: int) -> ProjectInfo:
    row = session.get(ProjectRow, project_id)
    if row is None:
        raise NotFound(f"no project {project_id}")
    return info(row)


def update_settings(session: Session, row: ProjectRow, changes: dict[str, Any]) -> dict[str, Any]:
    """Merge checked settings into the project's; unknown keys are refused so typos do not pass silently."""
    unknown = sorted(set(changes) - set(SETTING_CHECKS))
    if unknown:
        raise InvalidInput(f"unknown project setting(s) {', '.join(unknown)}; known: {', '.join(sorted(SETTING_CHECKS))}")
    for key, value in changes.items():
        problem = SETTING_CHECKS[key](value)
        if problem:
            raise InvalidInput(f"setting {key}={value!r}: {problem}")
    row.settings = {**row.settings, **changes}
    return dict(row.settings)


def get_project(session: Session, name: str) -> ProjectInfo:
    return info(get_row(session, name))


def list_projects(session: Session) -> list[ProjectInfo]:
    return [info(row) for row in session.scalars(select(ProjectRow).order_by(ProjectRow.name))]


def add_classes(session: Session, row: ProjectRow, names: list[str]) -> list[str]:
    """Append classes not yet in the schema; returns the ones added."""
    existing = [c["name"] for c in row.classes]
    new = [n for n in check_class_names(names) if n not in existing]
    if new:
        row.classes = [*row.classes, *({"name": n, "colour": default_colour(len(existing) + i)} for i, n in enumerate(new))]
    return new


def set_class_colours(row: ProjectRow, colours: dict[str, str]) -> None:
    """Change the display colour of existing classes (shapes refer to classes by name, so nothing else moves)."""
    _check_known(row, colours, "change the colour of")
    for name, colour in colours.items():
        if not COLOUR_RE.match(colour):
            raise InvalidInput(f"colour {colour!r} for class {name!r} is not a #RRGGBB hex colour")
    row.classes = [{**c, "colour": colours.get(c["name"], c["colour"])} for c in row.classes]


def class_usage(session: Session, project_id: int, names: set[str]) -> dict[str, int]:
    """How many annotation revisions and predictions of the project name each of these classes."""
    counts = dict.fromkeys(names, 0)
    for model in (AnnotationRow, PredictionRow):
        query = (select(model.shapes).join(ItemRow, ItemRow.id == model.item_id)
                 .where(ItemRow.project_id == project_id).execution_options(yield_per=500))
        for shapes in session.scalars(query):
            for label in {s.get("label") for s in shapes or []} & names:
                counts[label] += 1
    return counts


def rename_classes(session: Session, row: ProjectRow, renames: dict[str, str]) -> None:
    """Rename classes no annotation or prediction uses yet (stored shapes name their class)."""
    _check_known(row, renames, "rename")
    new_names = check_class_names(list(renames.values()))
    kept = [c["name"] for c in row.classes if c["name"] not in renames]
    clashes = sorted(set(new_names) & set(kept))
    if clashes:
        raise Conflict(f"class {clashes[0]!r} already exists; choose another name")
    _refuse_used(session, row, set(renames), "renamed", "add a class with the new name instead")
    row.classes = [{**c, "name": renames.get(c["name"], c["name"]).strip()} for c in row.classes]


def remove_classes(session: Session, row: ProjectRow, names: list[str]) -> None:
    """Drop unused classes, only before any model is trained (models and masks number classes by position)."""
    _check_known(row, names, "remove")
    if session.scalar(select(ModelRow.id).where(ModelRow.project_id == row.id).limit(1)) is not None:
        raise Conflict("classes cannot be removed once the project has a trained model: models and exported masks "
                       "number classes by their position")
    _refuse_used(session, row, set(names), "removed", "keep it (you may change its colour)")
    row.classes = [c for c in row.classes if c["name"] not in set(names)]


def _check_known(row: ProjectRow, names, verb: str) -> None:
    existing = {c["name"] for c in row.classes}
    unknown = sorted(set(names) - existing)
    if unknown:
        raise InvalidInput(f"cannot {verb} class {unknown[0]!r}: the project's classes are "
                           f"{', '.join(c['name'] for c in row.classes) or '(none)'}")


def _refuse_used(session: Session, row: ProjectRow, names: set[str], done: str, instead: str) -> None:
    used = {n: k for n, k in class_usage(session, row.id, names).items() if k}
    if used:
        name, count = sorted(used.items())[0]
        raise Conflict(f"class {name!r} is used by {count} annotation revision(s) or prediction(s) and cannot be "
                       f"{done}: stored shapes refer to classes by name; {instead}")


def delete_project(session: Session, name: str) -> None:
    session.delete(get_row(session, name))
