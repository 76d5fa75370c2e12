"""Label Studio JSON tasks: choices, rectangles, polygons and brush masks; annotations and scored predictions.

A task is {"data": {"image": ...}, "annotations": [{"result": [...]}], "predictions": [{"result": [...],
"score", "model_version"}]}. Results give geometry in percent of `original_width` × `original_height` (origin at
the top-left corner, as ours): x_px = x / 100 · width. Brush masks are LS's RLE (geometry/brush_rle.py). The
newest annotation of a task that was not cancelled is imported as the label; every prediction becomes a
prediction with its scores. Docs: https://labelstud.io/guide/export#Label-Studio-JSON-format-of-annotated-tasks,
https://labelstud.io/guide/predictions, https://labelstud.io/tags/ (the result value of each control tag).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np

from labelloop import media
from labelloop.domain import Box, ClassLabel, Mask, Polygon, ProjectKind, Shape, Split
from labelloop.errors import InvalidInput
from labelloop.formats.base import load_json, peek_json, ExportContext, ExportRecord, ExportSummary, ImportBundle, ImportEntry, ImportedPrediction
from labelloop.formats.labelstudio_writer import write_tasks
from labelloop.formats.paths import first_names, safe_name, shown_path
from labelloop.formats.registry import register
from labelloop.geometry import brush_rle, rle

READABLE = ("choices", "rectanglelabels", "polygonlabels", "brushlabels")
_UPLOAD_PREFIX_LENGTH = 8  # LS stores uploads as /data/upload/<project>/<8 hex>-<original name>


@register
class LabelStudioFormat:
    name = "labelstudio"
    description = "Label Studio JSON tasks (choices, rectangles, polygons, brush masks; annotations and predictions)"
    can_read = True
    can_write = True
    detect_priority = 12

    def detect(self, path: Path) -> bool:
        file = _tasks_file(path)
        return file is not None and _looks_like_tasks(peek_json(file))

    def read(self, path: Path, kind: ProjectKind) -> ImportBundle:
        file = _tasks_file(path)
        if file is None:
            raise InvalidInput(f"{path}: no Label Studio JSON found (a .json file, or a folder with tasks.json)")
        shown = file.name
        data = _load(file, shown)
        return _Reader(ProjectKind(kind), file.parent, shown).read(data)

    def write(self, records: Iterable[ExportRecord], ctx: ExportContext) -> ExportSummary:
        return write_tasks(records, ctx)


def _tasks_file(path: Path) -> Path | None:
    if path.is_file():
        return path if path.suffix.lower() == ".json" else None
    if (path / "tasks.json").is_file():
        return path / "tasks.json"
    found = [p for p in sorted(path.glob("*.json")) if not p.name.startswith(".")] if path.is_dir() else []
    return found[0] if len(found) == 1 else None


def _looks_like_tasks(data: Any) -> bool:
    tasks = data if isinstance(data, list) else [data]
    first = tasks[0] if tasks else None
    return isinstance(first, dict) and isinstance(first.get("data"), dict)


def _load(file: Path, shown: str) -> list:
    data = load_json(file, shown)
    tasks = [data] if isinstance(data, dict) else data
    if not isinstance(tasks, list):
        raise InvalidInput(f"{shown}: expected a JSON list of Label Studio tasks, got {type(data).__name__}")
    return tasks


def _image_names(value: str) -> list[str]:
    """Where an LS image reference may point inside the imported folder, most specific first."""
    parsed = urlparse(value)
    if parsed.path.endswith("/data/local-files/") or parsed.path == "/data/local-files":
        return [unquote(d) for d in parse_qs(parsed.query).get("d", [])][:1]
    path = unquote(parsed.path)
    names = []
    if not parsed.scheme and not path.startswith("/"):
        names.append(path)
    base = PurePosixPath(path).name
    names.append(base)
    head, _, rest = base.partition("-")
    if "/data/upload/" in path and len(head) == _UPLOAD_PREFIX_LENGTH and rest:
        names.append(rest)  # LS prefixes uploaded files with 8 hex digits and '-'
    return names


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInput(f"{where} must be a finite number, got {value!r}")
    return float(value)


class _Reader:
    def __init__(self, kind: ProjectKind, base: Path, shown: str) -> None:
        self.kind, self.base, self.shown = kind, base, shown
        self.classes: list[str] = []
        self.warnings: list[str] = []
        self.several = self.cancelled = 0

    def read(self, tasks: list) -> ImportBundle:
        entries: list[ImportEntry] = []
        missing: list[str] = []
        seen: dict[Path, str] = {}
        for t, task in enumerate(tasks):
            where = f"{self.shown}: task[{t}]" + (f" (id {task['id']})" if isinstance(task, dict) and "id" in task else "")
            entry = self._task(task, where, missing)
            if entry is None:
                continue
            resolved = entry.path.resolve()
            if resolved in seen:
                raise InvalidInput(f"{where}: the image {entry.name} is also the image of {seen[resolved]}; "
                                   "one task per image")
            seen[resolved] = where
            entries.append(entry)
        if missing:
            raise InvalidInput(f"{self.shown}: {len(missing)} image file(s) not found (looked beside the JSON and in "
                               f"images/): {first_names(missing, 10)}")
        if self.several:
            self.warnings.append(f"{self.several} task(s) have several annotations: the newest of each was imported")
        if self.cancelled:
            self.warnings.append(f"{self.cancelled} cancelled (skipped) annotation(s) were not imported")
        return ImportBundle(entries=entries, classes=self.classes, warnings=self.warnings)

    def _task(self, task: Any, where: str, missing: list[str]) -> ImportEntry | None:
        if not isinstance(task, dict):
            raise InvalidInput(f"{where} must be an object, got {type(task).__name__}")
        if "completions" in task and "annotations" not in task:
            raise InvalidInput(f"{where}: 'completions' is Label Studio 0.x's export; export the project again from "
                               "Label Studio 1.x (JSON), whose tasks hold 'annotations'")
        if not isinstance(task.get("data"), dict):
            raise InvalidInput(f"{where}: missing 'data' object (a Label Studio JSON task; the JSON-MIN, CSV and "
                               "other exports cannot be read: export as JSON)")
        path, name = self._image(task["data"], where)
        if path is None:
            missing.append(name)
            return None
        size = self._size(task, path, name, where)
        meta = task.get("meta") if isinstance(task.get("meta"), dict) else {}
        split = Split(meta["split"]) if meta.get("split") in {s.value for s in Split} else None
        entry = ImportEntry(path=path, name=name, split=split, declared_size=size, origin=where)
        annotations = task.get("annotations") or []
        if not isinstance(annotations, list):
            raise InvalidInput(f"{where}: 'annotations' must be a list")
        kept = []
        for a, annotation in enumerate(annotations):
            here = f"{where}: annotations[{a}]"
            if not isinstance(annotation, dict) or not isinstance(annotation.get("result", []), list):
                raise InvalidInput(f"{here} must be an object with a 'result' list")
            if annotation.get("was_cancelled"):
                self.cancelled += 1
                continue
            kept.append((here, annotation, a))
        if kept:
            self.several += len(kept) > 1
            here, newest, _ = max(kept, key=lambda found: (*_order(found[1]), found[2]))
            entry.shapes = self._results(newest.get("result", []), size, here, score=None)
        predictions = task.get("predictions") or []
        if not isinstance(predictions, list):
            raise InvalidInput(f"{where}: 'predictions' must be a list")
        for p, predicted in enumerate(predictions):
            here = f"{where}: predictions[{p}]"
            if not isinstance(predicted, dict) or not isinstance(predicted.get("result", []), list):
                raise InvalidInput(f"{here} must be an object with a 'result' list")
            score = predicted.get("score")
            score = None if score is None else _number(score, f"{here}: score")
            shapes = self._results(predicted.get("result", []), size, here, score=score)
            version = predicted.get("model_version") or "label-studio"
            entry.predictions.append(ImportedPrediction(str(version), shapes, score))
        return entry

    def _image(self, data: dict, where: str) -> tuple[Path | None, str]:
        value = data.get("image")
        if value is None:
            strings = [v for v in data.values() if isinstance(v, str)]
            if len(strings) != 1:
                raise InvalidInput(f"{where}: data has no 'image' key (the image's URL or path)")
            value = strings[0]
        if not isinstance(value, str) or not value.strip():
            raise InvalidInput(f"{where}: data.image must be a non-empty string, got {value!r}")
        names = [safe_name(n, f"{where}: data.image", noun="path") for n in _image_names(value.strip()) if n]
        if not names:
            raise InvalidInput(f"{where}: data.image {value!r} names no file")
        for name in names:
            for root in (self.base, self.base / "images"):
                if (root / name).is_file():
                    return root / name, shown_path(root / name, self.base)
        return None, names[0]

    def _size(self, task: dict, path: Path, name: str, where: str) -> tuple[int, int]:
        """(width, height) the results state; the image's own when none does (predictions often leave it out)."""
        sizes = set()
        for group in ("annotations", "predictions"):
            for block in task.get(group) or []:
                for result in (block.get("result") or []) if isinstance(block, dict) else []:
                    if isinstance(result, dict) and "original_width" in result and "original_height" in result:
                        w, h = result["original_width"], result["original_height"]
                        if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0):
                            raise InvalidInput(f"{where}: original_width and original_height must be positive "
                                               f"integers, got {w!r} × {h!r}")
                        sizes.add((w, h))
        if len(sizes) > 1:
            raise InvalidInput(f"{where}: results disagree on the image size: {sorted(sizes)}")
        if sizes:
            return sizes.pop()
        page = media.probe(path, name=name)[0]
        return page.width, page.height

    def _results(self, results: list, size: tuple[int, int], where: str, score: float | None) -> list[Shape]:
        width, height = size
        shapes: list[Shape] = []
        for r, result in enumerate(results):
            here = f"{where}: result[{r}]"
            if not isinstance(result, dict) or not isinstance(result.get("value"), dict):
                raise InvalidInput(f"{here} must be an object with a 'value' object")
            kind = result.get("type")
            if kind not in READABLE:
                raise InvalidInput(f"{here}: result type {kind!r} cannot be imported; labelloop reads "
                                   f"{', '.join(READABLE)}")
            value = result["value"]
            region_score = result.get("score", score)
            region_score = None if region_score is None else _number(region_score, f"{here}: score")
            labels = value.get(kind)
            if not isinstance(labels, list) or not labels or not all(isinstance(v, str) and v for v in labels):
                raise InvalidInput(f"{here}: value.{kind} must be a non-empty list of class names, got {labels!r}")
            for label in labels:
                if label not in self.classes:
                    self.classes.append(label)
            if kind == "choices":
                shapes.extend(ClassLabel(label, score=region_score) for label in labels)
                continue
            if len(labels) > 1:
                raise InvalidInput(f"{here}: a region with {len(labels)} labels ({', '.join(labels)}); labelloop "
                                   "gives each shape one class")
            label = labels[0]
            if kind == "rectanglelabels":
                shapes.append(self._box(value, label, region_score, width, height, here))
            elif kind == "polygonlabels":
                points = value.get("points")
                if not isinstance(points, list) or len(points) < 3 or not all(
                        isinstance(p, list) and len(p) == 2 for p in points):
                    raise InvalidInput(f"{here}: value.points must be a list of at least 3 [x, y] pairs")
                part = tuple((_number(x, f"{here}: points") / 100 * width, _number(y, f"{here}: points") / 100 * height)
                             for x, y in points)
                shapes.append(Polygon(label, (part,), score=region_score))
            else:
                shapes.append(self._brush(value, label, region_score, width, height, here))
        if self.kind is ProjectKind.semantic:
            shapes = merge_masks(shapes)
        return shapes

    def _box(self, value: dict, label: str, score: float | None, width: int, height: int, where: str) -> Box:
        x, y, w, h = (_number(value.get(k), f"{where}: value.{k}") for k in ("x", "y", "width", "height"))
        rotation = _number(value.get("rotation", 0), f"{where}: value.rotation")
        if abs(rotation) > 1e-6:
            raise InvalidInput(f"{where}: a rectangle rotated by {rotation:g}°; labelloop boxes are axis-aligned")
        if w < 0 or h < 0:
            raise InvalidInput(f"{where}: rectangle width and height must not be negative, got {w:g} × {h:g}")
        x0, y0 = x / 100 * width, y / 100 * height
        return Box(label, x0, y0, x0 + w / 100 * width, y0 + h / 100 * height, score=score)

    def _brush(self, value: dict, label: str, score: float | None, width: int, height: int, where: str) -> Mask:
        if value.get("format", "rle") != "rle" or not isinstance(value.get("rle"), list):
            raise InvalidInput(f"{where}: a brush mask needs value.format 'rle' and value.rle (a list of bytes)")
        try:
            mask = brush_rle.decode(value["rle"], height, width)
        except ValueError as exc:
            raise InvalidInput(f"{where}: malformed brush RLE: {exc}") from None
        size, counts = rle.encode(mask)
        return Mask(label, size, counts, score=score)


def _order(annotation: dict) -> tuple:
    """Newest last: by update time, then creation time, then id (LS writes ISO timestamps)."""
    return (str(annotation.get("updated_at") or ""), str(annotation.get("created_at") or ""),
            annotation.get("id") if isinstance(annotation.get("id"), int) else 0)


def merge_masks(shapes: list[Shape]) -> list[Shape]:
    """A semantic project has one mask per class: brush strokes of one class are joined."""
    by_label: dict[str, list[Mask]] = {}
    for shape in shapes:
        if isinstance(shape, Mask):
            by_label.setdefault(shape.label, []).append(shape)
    merged: list[Shape] = [s for s in shapes if not isinstance(s, Mask)]
    for label, masks in by_label.items():
        if len(masks) == 1:
            merged.append(masks[0])
            continue
        union = np.logical_or.reduce([rle.decode(m) for m in masks])
        size, counts = rle.encode(union)
        scores = [m.score for m in masks if m.score is not None]
        merged.append(Mask(label, size, counts, score=max(scores) if scores else None))
    return merged
