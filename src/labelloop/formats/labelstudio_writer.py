"""labelloop shapes -> Label Studio results, tasks and a labelling config.

Label Studio stores geometry in percent of the image (0-100, origin at the top-left corner, as ours); the
conversion happens here and in the reader, nowhere else. `prediction_results` is what the ML backend and the
export share: a list of LS result dicts with a `score` on each region.
Docs: https://labelstud.io/guide/export#Label-Studio-JSON-format-of-annotated-tasks and
https://labelstud.io/guide/predictions (task and prediction JSON), https://labelstud.io/tags/ (result values).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import quoteattr

from labelloop.domain import Box, ClassLabel, Mask, Polygon, ProjectKind, Shape
from labelloop.errors import InvalidInput
from labelloop.formats.base import ExportContext, ExportRecord, ExportSummary
from labelloop.geometry import brush_rle, rle

_PROGRESS_EVERY = 256
DEFAULT_MODEL_VERSION = "labelloop"


@dataclass(frozen=True)
class ControlNames:
    """The `name`s of a labelling config's tags: results must name the control (from_name) and the image
    (to_name) of the project they go to. The defaults match `labeling_config`."""

    choices: str = "choice"
    rectangles: str = "label"
    polygons: str = "label"
    brush: str = "tag"
    image: str = "image"


DEFAULT_NAMES = ControlNames()


def _percent(value: float, size: int) -> float:
    return value / size * 100.0


def shape_results(shapes: Sequence[Shape], width: int, height: int, names: ControlNames = DEFAULT_NAMES,
                  *, id_prefix: str = "r", scores: bool = False) -> list[dict[str, Any]]:
    """Label Studio results for the shapes of one image (width × height px). Class labels become one `choices`
    result; a polygon part becomes one `polygonlabels` result (LS polygons have one ring); masks become
    `brushlabels` in LS's RLE. Scribbles have no LS counterpart and are left out. With `scores`, each result
    carries its shape's score (predictions)."""
    results: list[dict[str, Any]] = []
    geometry = {"original_width": int(width), "original_height": int(height), "image_rotation": 0}

    def add(kind: str, from_name: str, value: dict[str, Any], score: float | None, extra: dict | None = None) -> None:
        result = {"id": f"{id_prefix}{len(results)}", "type": kind, "from_name": from_name, "to_name": names.image,
                  **(extra or {}), "value": value}
        if scores and score is not None:
            result["score"] = float(score)
        results.append(result)

    classes = [s for s in shapes if isinstance(s, ClassLabel)]
    if classes:
        known = [s.score for s in classes if s.score is not None]
        add("choices", names.choices, {"choices": [s.label for s in classes]}, min(known) if known else None)
    for shape in shapes:
        if isinstance(shape, Box):
            value = {"x": _percent(shape.x0, width), "y": _percent(shape.y0, height),
                     "width": _percent(shape.x1 - shape.x0, width), "height": _percent(shape.y1 - shape.y0, height),
                     "rotation": 0, "rectanglelabels": [shape.label]}
            add("rectanglelabels", names.rectangles, value, shape.score, geometry)
        elif isinstance(shape, Polygon):
            for part in shape.parts:
                points = [[_percent(x, width), _percent(y, height)] for x, y in part]
                add("polygonlabels", names.polygons, {"points": points, "closed": True, "polygonlabels": [shape.label]},
                    shape.score, geometry)
        elif isinstance(shape, Mask):
            encoded = brush_rle.encode(rle.decode(shape))
            add("brushlabels", names.brush, {"format": "rle", "rle": encoded, "brushlabels": [shape.label]},
                shape.score, geometry)
    return results


def prediction_results(shapes: Sequence[Shape], width: int, height: int,
                       names: ControlNames = DEFAULT_NAMES) -> list[dict[str, Any]]:
    """Label Studio prediction results (each region with its `score`) for one image's predicted shapes."""
    return shape_results(shapes, width, height, names, id_prefix="p", scores=True)


def prediction_score(shapes: Sequence[Shape]) -> float | None:
    """One task-level score for a prediction (LS sorts tasks by it): the mean of its shapes' scores."""
    known = [s.score for s in shapes if getattr(s, "score", None) is not None]
    return sum(known) / len(known) if known else None


def prediction(shapes: Sequence[Shape], width: int, height: int, model_version: str = DEFAULT_MODEL_VERSION,
               names: ControlNames = DEFAULT_NAMES) -> dict[str, Any]:
    """A whole Label Studio prediction: {model_version, score, result}."""
    result: dict[str, Any] = {"model_version": model_version, "result": prediction_results(shapes, width, height, names)}
    score = prediction_score(shapes)
    if score is not None:
        result["score"] = score
    return result


def labeling_config(kind: ProjectKind, classes: Iterable[str], names: ControlNames = DEFAULT_NAMES) -> str:
    """A Label Studio labelling config (XML) whose tag names match the exported results."""
    kind = ProjectKind(kind)
    classes = list(classes)
    labels = "".join(f"\n    <Label value={quoteattr(c)}/>" for c in classes)
    choices = "".join(f"\n    <Choice value={quoteattr(c)}/>" for c in classes)
    image = f'  <Image name="{names.image}" value="$image"/>'
    if kind in (ProjectKind.classification, ProjectKind.multilabel):
        choice = "multiple" if kind is ProjectKind.multilabel else "single"
        control = f'  <Choices name="{names.choices}" toName="{names.image}" choice="{choice}">{choices}\n  </Choices>'
    elif kind is ProjectKind.detection:
        control = f'  <RectangleLabels name="{names.rectangles}" toName="{names.image}">{labels}\n  </RectangleLabels>'
    elif kind is ProjectKind.instance:
        control = (f'  <PolygonLabels name="{names.polygons}" toName="{names.image}">{labels}\n  </PolygonLabels>\n'
                   f'  <BrushLabels name="{names.brush}" toName="{names.image}">{labels}\n  </BrushLabels>')
    else:
        control = f'  <BrushLabels name="{names.brush}" toName="{names.image}">{labels}\n  </BrushLabels>'
    return f"<View>\n{image}\n{control}\n</View>\n"


def write_tasks(records: Iterable[ExportRecord], ctx: ExportContext) -> ExportSummary:
    """OUT/tasks.json (a JSON list of LS tasks, streamed), OUT/images/, OUT/labeling_config.xml."""
    images_dir = ctx.out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    classes = {c.name for c in ctx.classes}
    ordered = [c.name for c in sorted(ctx.classes, key=lambda c: c.index)]
    (ctx.out / "labeling_config.xml").write_text(labeling_config(ctx.kind, ordered), encoding="utf-8")
    summary = ExportSummary(files=["tasks.json", "images/", "labeling_config.xml"])
    final, partial = ctx.out / "tasks.json", ctx.out / ".tasks.json.part"
    left_out = pending = 0
    try:
        with partial.open("w", encoding="utf-8") as out:
            out.write("[")
            for record in records:
                item = record.item
                file_name = ctx.save_image(item, images_dir)
                people, model = [], []
                for shape in record.shapes:
                    if shape.type == "scribble":
                        left_out += 1
                        continue
                    if shape.label not in classes:
                        raise InvalidInput(f"{item.name}: shape label {shape.label!r} is not a class of the project")
                    (model if shape.attributes.get("source") == "model" else people).append(shape)
                task: dict[str, Any] = {"id": item.id, "data": {"image": f"images/{file_name}"},
                                        "meta": {"labelloop_item": item.id, "source": item.name,
                                                 "split": item.split.value}}
                if people:
                    task["annotations"] = [{"result": shape_results(people, item.width, item.height, id_prefix=f"{item.id}-"),
                                            "was_cancelled": False, "ground_truth": False}]
                    summary.shapes += len(people)
                if model:
                    version = str(model[0].attributes.get("model_version") or DEFAULT_MODEL_VERSION)
                    task["predictions"] = [prediction(model, item.width, item.height, version)]
                    summary.shapes += len(model)
                out.write(("\n" if summary.items == 0 else ",\n") + json.dumps(task))
                summary.items += 1
                pending += 1
                if pending == _PROGRESS_EVERY:
                    ctx.progress(pending)
                    pending = 0
            out.write("\n]\n")
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)
    if pending:
        ctx.progress(pending)
    if left_out:
        summary.warnings.append(f"{left_out} scribble(s) left out: Label Studio has no partial-label shape")
    return summary
