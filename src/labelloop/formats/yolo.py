"""Ultralytics YOLO: data.yaml + images/<split>/*.jpg + labels/<split>/<stem>.txt.

A label line is `class cx cy w h` (a box) or `class x1 y1 x2 y2 x3 y3 ...` (a polygon), every coordinate
normalised by the image's width or height, so reading needs each labelled image's size (a header read).
Conversions at this edge: a box is x0 = (cx - w/2)·W ... in our corner-origin pixels. Instance projects get
polygons; a box line there becomes a 4-point rectangle (lossless, with a warning). The writer keeps one polygon
per object as YOLO-seg does: the largest part of a multi-part polygon, and for a mask the largest outer contour
traced through the centres of its boundary pixels (so a mask loses holes, small islands and about half a pixel
along its border).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from labelloop import media
from labelloop.domain import Box, Mask, Polygon, ProjectKind, Shape, Split
from labelloop.errors import InvalidInput
from labelloop.formats.base import ExportContext, ExportRecord, ExportSummary, ImportBundle, ImportEntry, iter_files
from labelloop.formats.paths import shown_path, split_in_name
from labelloop.formats.registry import register
from labelloop.geometry import rle

_KINDS = (ProjectKind.detection, ProjectKind.instance)
_TOLERANCE = 1e-3  # normalised coordinates may stray this far outside [0, 1] (rounding by other tools)
_SPLIT_KEYS = {"train": Split.train, "val": Split.val, "test": Split.test}
_NAMES_FILES = ("classes.txt", "obj.names")  # darknet-style class lists, one name per line
_PROGRESS_EVERY = 256


@register
class YoloFormat:
    name = "yolo"
    description = "Ultralytics YOLO: data.yaml, images/<split>/, labels/<split>/*.txt (boxes or polygons)"
    can_read = True
    can_write = True
    detect_priority = 30

    def detect(self, path: Path) -> bool:
        if path.is_file():
            return path.suffix.lower() in {".yaml", ".yml"} and _config_names(path) is not None
        if not path.is_dir():
            return False
        if _find_config(path) is not None:
            return True
        # labels/ must hold text files: mask datasets use the same folder names for PNG label images.
        labels = path / "labels"
        return (path / "images").is_dir() and labels.is_dir() and next(labels.rglob("*.txt"), None) is not None

    def read(self, path: Path, kind: ProjectKind) -> ImportBundle:
        kind = ProjectKind(kind)
        if kind not in _KINDS:
            raise InvalidInput(
                f"{path.name}: YOLO labels hold boxes and polygons; they cannot import a project of kind {kind.value}"
            )
        layout = _layout(path)
        reader = _LabelReader(kind, layout.names, layout.base)
        entries: list[ImportEntry] = []
        orphans: list[str] = []
        for source in layout.sources:
            used: set[Path] = set()
            for image in iter_files(source.images, set(media.SUFFIXES)):
                rel = image.relative_to(source.images)
                split = source.split or (split_in_name(rel.parts[0]) if len(rel.parts) > 1 else None)
                entry = ImportEntry(path=image, name=source.prefix + rel.as_posix(), split=split)
                if source.labels is not None:
                    label = source.labels / rel.with_suffix(".txt")
                    used.add(label)
                    if label.is_file():
                        entry.shapes = reader.read(label, image)
                        entry.origin = shown_path(label, layout.base)
                entries.append(entry)
            if source.labels is not None:
                labels = iter_files(source.labels, {".txt"})
                orphans += [shown_path(p, layout.base) for p in labels if p not in used and p.name not in _NAMES_FILES]
        warnings = list(layout.warnings)
        if orphans:
            examples = ", ".join(orphans[:3])
            warnings.append(f"{len(orphans)} label file(s) have no image and were skipped, e.g. {examples}")
        if reader.rectangles:
            warnings.append(f"{reader.rectangles} box line(s) were imported as 4-point rectangles (instance project)")
        classes = layout.classes or [str(i) for i in sorted(reader.ids_seen)]
        numbered = None if layout.classes else {str(i): i + 1 for i in reader.ids_seen}
        return ImportBundle(entries=entries, classes=classes, warnings=warnings, class_numbers=numbered)

    def write(self, records: Iterable[ExportRecord], ctx: ExportContext) -> ExportSummary:
        return _write(records, ctx)


# --- layout ------------------------------------------------------------------------------------------------


@dataclass
class _Source:
    images: Path
    labels: Path | None
    split: Split | None
    prefix: str  # put before the path inside `images` to make the entry's name


@dataclass
class _Layout:
    base: Path  # where names in messages are relative to
    names: dict[int, str] | None
    classes: list[str]
    sources: list[_Source]
    warnings: list[str]


def _find_config(folder: Path) -> Path | None:
    candidates = [folder / "data.yaml", *sorted(folder.glob("*.yaml")), *sorted(folder.glob("*.yml"))]
    return next((p for p in candidates if p.is_file() and _config_names(p) is not None), None)


def _load_config(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise InvalidInput(f"{path.name}{where}: malformed YAML ({getattr(exc, 'problem', None) or exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path.name}: cannot read ({exc})") from None


def _config_names(path: Path) -> Any:
    try:
        config = _load_config(path)
    except InvalidInput:
        return None
    return config.get("names") if isinstance(config, dict) else None


def _parse_names(raw: Any, shown: str) -> dict[int, str]:
    if isinstance(raw, list):
        raw = dict(enumerate(raw))
    if not isinstance(raw, dict) or not raw:
        raise InvalidInput(f"{shown}: names must be a list of class names or a mapping {{id: name}}")
    names: dict[int, str] = {}
    for key, value in raw.items():
        try:
            cid = int(key)
        except (TypeError, ValueError):
            raise InvalidInput(f"{shown}: names key {key!r} is not an integer class id") from None
        if cid < 0 or not str(value).strip():
            raise InvalidInput(f"{shown}: names entry {key!r}: {value!r} needs a class id >= 0 and a non-empty name")
        names[cid] = str(value)
    return dict(sorted(names.items()))


def _labels_for(images: Path, base: Path) -> Path | None:
    """Ultralytics swaps the last 'images' folder for 'labels'; also try base/labels/<what follows 'images'>."""
    parts = images.parts
    if "images" in parts:
        at = len(parts) - 1 - parts[::-1].index("images")
        tail = parts[at + 1:]
        candidates = [Path(*parts[:at], "labels", *tail), base / "labels" / Path(*tail) if tail else base / "labels"]
    else:
        candidates = [base / "labels" / images.name, base / "labels"]
    return next((p for p in candidates if p.is_dir()), None)


def _layout(path: Path) -> _Layout:
    config_path = path if path.is_file() else _find_config(path)
    base = config_path.parent if config_path else path
    if not base.is_dir():
        raise InvalidInput(f"{path}: not a YOLO dataset (a data.yaml with names, or a folder with images/ and labels/)")
    names: dict[int, str] | None = None
    config: dict = {}
    warnings: list[str] = []
    if config_path:
        loaded = _load_config(config_path)
        if not isinstance(loaded, dict) or "names" not in loaded:
            raise InvalidInput(f"{config_path.name}: expected a mapping with 'names' (and path/train/val/test)")
        config = loaded
        names = _parse_names(config["names"], config_path.name)
    else:
        names_file = next((p for p in (base / n for n in _NAMES_FILES) if p.is_file()), None)
        if names_file:
            lines = names_file.read_text(encoding="utf-8").splitlines()
            names = dict(enumerate(line.strip() for line in lines if line.strip()))
        else:
            warnings.append(f"{path.name}: no data.yaml or classes.txt; classes are named by their YOLO ids")
    root = base / str(config.get("path") or ".")
    sources = []
    for key in _SPLIT_KEYS:
        values = config.get(key) or []
        for value in values if isinstance(values, list) else [values]:
            sources.append(_config_source(config_path, key, value, root, base))
    if not sources:
        images = base / "images"
        if not images.is_dir():
            raise InvalidInput(f"{shown_path(images, base)}: no images folder (YOLO expects images/ beside labels/)")
        sources = [_Source(images, _labels_for(images, base), None, "images/")]
    for source in sources:
        if source.labels is None:
            warnings.append(f"{shown_path(source.images, base)}: no labels folder found; its images have no objects")
    return _Layout(base, names, list(names.values()) if names else [], sources, warnings)


def _config_source(config_path: Path | None, key: str, value: Any, root: Path, base: Path) -> _Source:
    shown = config_path.name if config_path else "data.yaml"
    if not isinstance(value, str) or value.lower().endswith(".txt"):
        raise InvalidInput(f"{shown}: {key}: {value!r} is not supported; point {key} at a folder of images")
    # A dataset's yaml often sits beside its images rather than above them (path: . with images/ one level up).
    candidates = list(dict.fromkeys(Path(os.path.normpath(p / value)) for p in (root, root.parent, base)))
    images = next((p for p in candidates if p.is_dir()), None)
    if images is None:
        tried = ", ".join(str(p) for p in candidates)
        raise InvalidInput(f"{shown}: {key} folder {value!r} not found (looked for {tried})")
    # Entry names stay relative and free of '..' whatever the yaml says: relative to the dataset, else the folder.
    prefix = images.name + "/"
    for top in (Path(os.path.normpath(root)), Path(os.path.normpath(root.parent))):
        if images.is_relative_to(top):
            inside = images.relative_to(top).as_posix()
            prefix = "" if inside == "." else inside + "/"
            break
    return _Source(images, _labels_for(images, base), _SPLIT_KEYS[key], prefix)


# --- label files ---------------------------------------------------------------------------------------------


class _LabelReader:
    def __init__(self, kind: ProjectKind, names: dict[int, str] | None, base: Path) -> None:
        self.kind = kind
        self.names = names
        self.base = base
        self.ids_seen: set[int] = set()
        self.rectangles = 0

    def read(self, label: Path, image: Path) -> list[Shape]:
        shown = shown_path(label, self.base)
        try:
            lines = label.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"{shown}: cannot read ({exc})") from None
        shapes: list[Shape] = []
        size: tuple[int, int] | None = None
        for number, line in enumerate(lines, start=1):
            tokens = line.split()
            if not tokens:
                continue
            where = f"{shown} line {number}"
            label_name, values = self._parse(tokens, where)
            if size is None:
                page = media.probe(image)[0]
                size = (page.width, page.height)
            shapes.append(self._shape(label_name, values, size, where))
        return shapes

    def _parse(self, tokens: list[str], where: str) -> tuple[str, list[float]]:
        count = len(tokens)
        if count != 5 and (count < 7 or count % 2 == 0):
            raise InvalidInput(
                f"{where}: expected 5 numbers (class cx cy w h) or a polygon (class x1 y1 x2 y2 x3 y3 ...), got {count}"
            )
        try:
            cid_value = float(tokens[0])
        except ValueError:
            raise InvalidInput(f"{where}: class id {tokens[0]!r} is not a number") from None
        if not cid_value.is_integer():
            raise InvalidInput(f"{where}: class id {tokens[0]!r} is not an integer")
        cid = int(cid_value)
        if self.names is not None and cid not in self.names:
            ids = list(self.names)
            contiguous = len(ids) == ids[-1] - ids[0] + 1
            known = f"{ids[0]}..{ids[-1]}" if contiguous else f"{len(ids)} ids from {ids[0]} to {ids[-1]}"
            raise InvalidInput(f"{where}: class id {cid} is out of range (the names define {known})")
        try:
            values = [float(t) for t in tokens[1:]]
        except ValueError:
            bad = next(t for t in tokens[1:] if not _is_float(t))
            raise InvalidInput(f"{where}: {bad!r} is not a number") from None
        if not all(math.isfinite(v) for v in values):
            raise InvalidInput(f"{where}: coordinates must be finite numbers, got {' '.join(tokens[1:])}")
        self.ids_seen.add(cid)
        return (self.names[cid] if self.names is not None else str(cid)), values

    def _shape(self, label: str, values: list[float], size: tuple[int, int], where: str) -> Shape:
        width, height = size
        if len(values) == 4:
            cx, cy, w, h = values
            if w < 0 or h < 0:
                raise InvalidInput(f"{where}: box width and height must not be negative (w {w:g}, h {h:g})")
            x0, y0, x1, y1 = (_unit(v, where) for v in (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
            box = (x0 * width, y0 * height, x1 * width, y1 * height)
            if self.kind is ProjectKind.detection:
                return Box(label, *box)
            self.rectangles += 1
            bx0, by0, bx1, by1 = box
            return Polygon(label, (((bx0, by0), (bx1, by0), (bx1, by1), (bx0, by1)),))
        points = tuple((_unit(x, where) * width, _unit(y, where) * height) for x, y in zip(values[0::2], values[1::2]))
        polygon = Polygon(label, (points,))
        return Box(label, *polygon.bounds()) if self.kind is ProjectKind.detection else polygon


def _is_float(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _unit(value: float, where: str) -> float:
    """A normalised coordinate clipped to [0, 1]; beyond the rounding tolerance it is an error."""
    if value < -_TOLERANCE or value > 1 + _TOLERANCE:
        raise InvalidInput(f"{where}: coordinate {value:g} is outside the image (normalised values must lie in [0, 1])")
    return min(max(value, 0.0), 1.0)


# --- writing ---------------------------------------------------------------------------------------------------


def _write(records: Iterable[ExportRecord], ctx: ExportContext) -> ExportSummary:
    kind = ProjectKind(ctx.kind)
    if kind not in _KINDS:
        raise InvalidInput(f"YOLO export holds boxes or polygons; it cannot export a project of kind {kind.value}")
    ordered = sorted(ctx.classes, key=lambda c: c.index)
    ids = {c.name: i for i, c in enumerate(ordered)}
    summary = ExportSummary()
    splits: set[Split] = set()
    lossy = pending = 0
    for record in records:
        item = record.item
        split = Split(item.split) if Split(item.split) is not Split.none else Split.train
        if split not in splits:
            (ctx.out / "images" / split.value).mkdir(parents=True, exist_ok=True)
            splits.add(split)
        file_name = ctx.save_image(item, ctx.out / "images" / split.value)
        label = ctx.out / "labels" / split.value / Path(file_name).with_suffix(".txt")
        if label.exists():
            raise InvalidInput(
                f"{item.name}: another image in split {split.value} has the stem of {file_name!r}; "
                "YOLO matches labels to images by stem"
            )
        label.parent.mkdir(parents=True, exist_ok=True)
        lines = []
        for shape in record.shapes:
            if not isinstance(shape, (Box, Polygon, Mask)):
                continue
            if shape.label not in ids:
                raise InvalidInput(f"{item.name}: shape label {shape.label!r} is not a class of the project")
            coords, lost = _coords(shape, kind)
            lossy += lost
            if coords:
                sides = (item.width, item.height)
                scaled = [min(max(v / sides[i % 2], 0.0), 1.0) for i, v in enumerate(coords)]
                confidence = [f"{shape.score:.4f}"] if ctx.scores and shape.score is not None else []
                lines.append(" ".join([str(ids[shape.label]), *(f"{v:.6f}" for v in scaled), *confidence]))
        label.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        summary.items += 1
        summary.shapes += len(lines)
        pending += 1
        if pending == _PROGRESS_EVERY:
            ctx.progress(pending)
            pending = 0
    if pending:
        ctx.progress(pending)
    config: dict[str, Any] = {"path": "."}
    config.update({s.value: f"images/{s.value}" for s in (Split.train, Split.val, Split.test) if s in splits})
    config["names"] = {i: c.name for i, c in enumerate(ordered)}
    ctx.out.mkdir(parents=True, exist_ok=True)
    (ctx.out / "data.yaml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    summary.files = ["data.yaml", "images/", "labels/"]
    if lossy:
        summary.warnings.append(
            f"{lossy} shape(s) were simplified to one polygon (YOLO-seg keeps one outline per object: "
            "holes and extra parts are dropped)"
        )
    return summary


def _coords(shape: Box | Polygon | Mask, kind: ProjectKind) -> tuple[list[float], bool]:
    """Pixel coordinates to write ([cx, cy, w, h] or a flat polygon) and whether something was lost."""
    if isinstance(shape, Box):
        x0, y0, x1, y1 = shape.x0, shape.y0, shape.x1, shape.y1
    elif isinstance(shape, Polygon):
        x0, y0, x1, y1 = shape.bounds()
    else:
        x0, y0, x1, y1 = rle.bbox(shape)
        if x1 <= x0:
            return [], True  # empty mask
    if kind is ProjectKind.detection:
        return [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], False
    rectangle = [x0, y0, x1, y0, x1, y1, x0, y1]
    if isinstance(shape, Box):
        return rectangle, False
    if isinstance(shape, Polygon):
        parts = [p for p in shape.parts if len(p) >= 3]
        if not parts:
            return rectangle, True
        largest = max(parts, key=lambda p: rle.polygon_area(Polygon(shape.label, (p,))))
        return [c for point in largest for c in point], len(parts) > 1
    return _mask_outline(shape) or rectangle, True


def _mask_outline(shape: Mask) -> list[float]:
    import cv2  # heavy import, only needed for masks

    mask = rle.decode(shape).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return []
    largest = max(contours, key=cv2.contourArea)
    if len(largest) < 3:
        return []
    # Contour points are pixel indices; the pixel (c, r) has its centre at (c + 0.5, r + 0.5) in our convention.
    return [float(v) + 0.5 for v in largest.reshape(-1)]
