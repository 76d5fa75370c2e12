"""Label Studio configs and results for the ML backend: which tags of the labelling config to answer (the results
themselves are written by formats/labelstudio_writer.py), and an annotation's `choices` / `rectanglelabels` regions
read back as shapes, percent of the image converted to pixels here, at the edge.

Label Studio's result format: https://labelstud.io/guide/task_format (regions with `from_name`, `to_name`, `type`,
`value`; rectangles in percent of `original_width` × `original_height`).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from labelloop.domain import Box, ClassLabel, ProjectKind, Shape
from labelloop.errors import InvalidInput
from labelloop.formats.labelstudio_writer import ControlNames

MAX_CONFIG_CHARS = 1_000_000
# The control tag that carries each project kind's labels in a Label Studio config, and its result type.
CONTROLS = {ProjectKind.classification: ("Choices", "choices"), ProjectKind.multilabel: ("Choices", "choices"),
            ProjectKind.detection: ("RectangleLabels", "rectanglelabels")}
VALUE_TAGS = {"Choices": "Choice", "RectangleLabels": "Label"}


@dataclass(frozen=True)
class Targets:
    """Where predictions go: the control tag's name (`from_name`), the image tag's name (`to_name`), the result
    `type`, the task data key that holds the image URL, and the class names the control offers (None: unknown)."""

    from_name: str
    to_name: str
    type: str
    data_key: str
    labels: tuple[str, ...] | None = None


def served_kinds() -> list[str]:
    return [k.value for k in CONTROLS]


def targets(config: str | None, kind: ProjectKind) -> Targets:
    """Read the labelling config; without one, Label Studio's usual names (`label`/`choice` over `image`)."""
    if kind not in CONTROLS:
        raise InvalidInput(f"the Label Studio backend serves {', '.join(served_kinds())} projects; this is a "
                           f"{kind.value} project")
    tag, result_type = CONTROLS[kind]
    if not config:
        return Targets("choice" if result_type == "choices" else "label", "image", result_type, "image")
    if len(config) > MAX_CONFIG_CHARS:
        raise InvalidInput(f"the labelling config is longer than {MAX_CONFIG_CHARS} characters")
    try:
        root = ET.fromstring(config)
    except ET.ParseError as exc:
        raise InvalidInput(f"the labelling config is not valid XML: {exc}") from None
    images = {e.get("name"): (e.get("value") or "").lstrip("$") for e in root.iter("Image") if e.get("name")}
    for control in root.iter(tag):
        to_name = control.get("toName", "")
        if control.get("name") and to_name in images:
            labels = tuple(v.get("value") or v.get("alias") or "" for v in control.iter(VALUE_TAGS[tag]))
            return Targets(control.get("name"), to_name, result_type, images[to_name] or "image", labels)
    raise InvalidInput(f"the labelling config has no <{tag}> tag bound to an <Image> (toName): a labelloop "
                       f"{kind.value} project answers with {result_type}")


def check_labels(found: Targets, class_names: Sequence[str]) -> None:
    """Every class of the project must be offered by the config, or Label Studio would refuse its pre-labels."""
    if found.labels is None:
        return
    missing = [n for n in class_names if n not in found.labels]
    if missing:
        raise InvalidInput(f"the labelling config's <{found.from_name}> does not offer the project's class(es) "
                           f"{', '.join(missing)}; add them as values (it offers {', '.join(found.labels) or 'none'})")


def control_names(found: Targets) -> ControlNames:
    """The writer's tag names (formats/labelstudio_writer.py) for this config: results go to its control and image."""
    return ControlNames(choices=found.from_name, rectangles=found.from_name, image=found.to_name)


def shapes_from_results(results: Any, kind: ProjectKind, width: int, height: int) -> list[Shape]:
    """An annotation's `result` list -> shapes of the project's kind (other tags' regions are left out)."""
    if not isinstance(results, list):
        raise InvalidInput("the annotation's 'result' must be a list of regions")
    tag, wanted = CONTROLS[kind]
    shapes: list[Shape] = []
    for n, region in enumerate(results):
        if not isinstance(region, dict) or not isinstance(region.get("value"), dict):
            raise InvalidInput(f"region {n + 1} of the annotation has no 'value' object")
        if region.get("type") != wanted:
            continue
        value = region["value"]
        labels = value.get(wanted)
        if not isinstance(labels, list) or not all(isinstance(v, str) for v in labels):
            raise InvalidInput(f"region {n + 1}: value.{wanted} must be a list of class names")
        if wanted == "choices":
            shapes.extend(ClassLabel(label) for label in labels)
            continue
        shapes.extend(_box(region, value, label, width, height, n) for label in labels)
    return shapes


def _box(region: dict, value: dict, label: str, width: int, height: int, n: int) -> Box:
    try:
        x, y, w, h = (float(value[k]) for k in ("x", "y", "width", "height"))
    except (KeyError, TypeError, ValueError):
        raise InvalidInput(f"region {n + 1}: a rectangle needs numbers x, y, width and height (percent)") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise InvalidInput(f"region {n + 1}: rectangle values must be finite numbers")
    if float(value.get("rotation") or 0) != 0:
        raise InvalidInput(f"region {n + 1}: rotated rectangles are not supported; labelloop boxes are axis-aligned")
    # Percent of the image Label Studio showed; the item's own size when the region does not say.
    width = int(region.get("original_width") or width)
    height = int(region.get("original_height") or height)
    return Box(label, x * width / 100, y * height / 100, (x + w) * width / 100, (y + h) * height / 100)
