"""COCO "instances" JSON: boxes as [x, y, w, h], polygons as flat lists, masks as RLE.

COCO's pixel convention is ours (origin at the top-left corner of the top-left pixel, float), so boxes convert
by x1 = x + w, y1 = y + h and nothing else. Categories are matched by NAME: a category id is only a detail of
one file. The writer streams: images go straight to the output while annotations go to a side file that is
appended at the end, so memory does not grow with the number of records.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from labelloop.domain import Box, Mask, Polygon, ProjectKind, Shape, Split
from labelloop.errors import InvalidInput
from labelloop.formats.base import load_json, peek_json, ExportContext, ExportRecord, ExportSummary, ImportBundle, ImportEntry
from labelloop.formats.paths import first_names, safe_name, shown_path, split_in_name
from labelloop.formats.registry import register
from labelloop.geometry import rle

_KINDS = (ProjectKind.detection, ProjectKind.instance)
_REQUIRED_KEYS = ("images", "annotations", "categories")
_BOUNDS_TOLERANCE = 1.0  # px a bbox or polygon may stick out of its image (rounding in real annotation tools)
_PROGRESS_EVERY = 256


@register
class CocoFormat:
    name = "coco"
    description = "COCO instances JSON (boxes, polygons, RLE masks) with an images/ folder"
    can_read = True
    can_write = True
    detect_priority = 10

    def detect(self, path: Path) -> bool:
        if path.is_file():
            return path.suffix.lower() == ".json" and _looks_like_coco(peek_json(path))
        return any(_looks_like_coco(peek_json(p)) for p in _candidates(path))

    def read(self, path: Path, kind: ProjectKind) -> ImportBundle:
        kind = ProjectKind(kind)
        if kind not in _KINDS:
            raise InvalidInput(
                f"{path.name}: COCO holds boxes and instance outlines; it cannot import a project of kind {kind.value}"
            )
        base = path if path.is_dir() else path.parent
        if path.is_file():
            documents = [(path, _load_json(path, path.name))]
        else:
            # A malformed JSON file is reported; well-formed JSON of another kind (captions, configs) is skipped.
            loaded = [(p, _load_json(p, shown_path(p, base), require_object=False)) for p in _candidates(path)]
            documents = [(p, data) for p, data in loaded if _looks_like_coco(data)]
        if not documents:
            raise InvalidInput(f"{path}: no COCO JSON found (a .json file with images, annotations and categories)")
        reader = _Reader(kind)
        for file, data in documents:
            reader.read_document(data, file, shown_path(file, base))
        return ImportBundle(entries=list(reader.entries.values()), classes=reader.classes, warnings=reader.warnings)

    def write(self, records: Iterable[ExportRecord], ctx: ExportContext) -> ExportSummary:
        return _write(records, ctx)


# --- reading -------------------------------------------------------------------------------------------------


def _candidates(folder: Path) -> list[Path]:
    """annotations/*.json, or else *.json of a folder."""
    if not folder.is_dir():
        return []
    for where in (folder / "annotations", folder):
        found = [p for p in sorted(where.glob("*.json")) if p.is_file() and not p.name.startswith(".")]
        if found:
            return found
    return []


def _looks_like_coco(data: Any) -> bool:
    if not (isinstance(data, dict) and all(key in data for key in _REQUIRED_KEYS)):
        return False
    # COCO panoptic files share the three keys, but their annotations are per image with segments_info.
    first = data["annotations"][0] if isinstance(data["annotations"], list) and data["annotations"] else {}
    return not (isinstance(first, dict) and "segments_info" in first)


def _missing_error(shown: str, missing: list[str], looked: str) -> InvalidInput:
    listed = first_names(missing, 10)
    return InvalidInput(f"{shown}: {len(missing)} image file(s) not found (looked in {looked}): {listed}")


def _check_id(value: Any, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InvalidInput(f"{where} must be an integer or a string, got {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Reader:
    """Reads one or more COCO files into entries keyed by image path (several files may share images)."""

    def __init__(self, kind: ProjectKind) -> None:
        self.kind = kind
        self.entries: dict[Path, ImportEntry] = {}
        self.classes: list[str] = []
        self.warnings: list[str] = []
        self._names: dict[str, tuple[Path, str]] = {}

    def read_document(self, data: dict, file: Path, shown: str) -> None:
        for key in _REQUIRED_KEYS:
            if key not in data:
                raise InvalidInput(f"{shown}: missing key {key!r} (a COCO file has images, annotations and categories)")
            if not isinstance(data[key], list):
                raise InvalidInput(f"{shown}: {key!r} must be a list, got {type(data[key]).__name__}")
        if not _looks_like_coco(data):
            raise InvalidInput(f"{shown}: a COCO panoptic file (segments_info); the coco format reads instances files")
        categories = self._categories(data["categories"], shown)
        images = self._images(data["images"], file, shown)
        boxes_only = 0
        for i, ann in enumerate(data["annotations"]):
            where = f"{shown}: annotations[{i}]"
            if isinstance(ann, dict) and "id" in ann:
                where += f" (id {ann['id']})"
            if not isinstance(ann, dict):
                raise InvalidInput(f"{where} must be an object, got {type(ann).__name__}")
            for key in ("image_id", "category_id"):
                if key not in ann:
                    raise InvalidInput(f"{where}: missing key {key!r}")
                _check_id(ann[key], f"{where}: {key}")
            if ann["category_id"] not in categories:
                raise InvalidInput(
                    f"{where}: missing category: category_id {ann['category_id']!r} is not in categories"
                )
            if ann["image_id"] not in images:
                raise InvalidInput(f"{where}: unknown image_id {ann['image_id']!r} (not in images)")
            entry = images[ann["image_id"]]
            shape = self._shape(ann, categories[ann["category_id"]], entry.declared_size, where)
            boxes_only += self.kind is ProjectKind.instance and isinstance(shape, Box)
            entry.shapes.append(shape)
        if boxes_only:
            self.warnings.append(f"{shown}: {boxes_only} annotation(s) have no segmentation; imported as boxes")

    def _categories(self, raw: list, shown: str) -> dict[Any, str]:
        by_id: dict[Any, str] = {}
        for i, cat in enumerate(raw):
            where = f"{shown}: categories[{i}]"
            if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
                raise InvalidInput(f"{where} must be an object with 'id' and 'name'")
            _check_id(cat["id"], f"{where}: id")
            if not isinstance(cat["name"], str) or not cat["name"].strip():
                raise InvalidInput(f"{where}: name must be a non-empty string, got {cat['name']!r}")
            if cat["id"] in by_id:
                raise InvalidInput(f"{where}: duplicate category id {cat['id']!r}")
            by_id[cat["id"]] = cat["name"]
        ids = list(by_id)
        if all(_is_number(i) for i in ids):
            ids.sort()
        for name in (by_id[i] for i in ids):
            if name not in self.classes:
                self.classes.append(name)
        return by_id

    def _images(self, raw: list, file: Path, shown: str) -> dict[Any, ImportEntry]:
        split = split_in_name(file.stem)
        json_dir = file.parent
        roots = [json_dir, json_dir / "images", json_dir.parent / "images"]
        nested = sorted(p for p in roots[2].iterdir() if p.is_dir()) if roots[2].is_dir() else []
        by_id: dict[Any, ImportEntry] = {}
        missing: list[str] = []
        for i, image in enumerate(raw):
            where = f"{shown}: images[{i}]"
            if not isinstance(image, dict):
                raise InvalidInput(f"{where} must be an object, got {type(image).__name__}")
            for key in ("id", "file_name"):
                if key not in image:
                    raise InvalidInput(f"{where}: missing key {key!r}")
            _check_id(image["id"], f"{where}: id")
            if image["id"] in by_id:
                raise InvalidInput(f"{where}: duplicate image id {image['id']!r}")
            name = safe_name(image["file_name"], f"{where}.file_name", noun="path", strip=False)
            declared = None
            if "width" in image or "height" in image:
                width, height = image.get("width"), image.get("height")
                if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
                    raise InvalidInput(
                        f"{where}: width and height must be positive integers, got {width!r} × {height!r}"
                    )
                declared = (width, height)
            found = next((r / name for r in [*roots, *nested] if (r / name).is_file()), None)
            if found is None:
                missing.append(name)
                continue
            by_id[image["id"]] = self._entry(found, name, split, declared, where, shown)
        if missing:
            looked = ", ".join(shown_path(r, json_dir.parent) + "/" for r in roots) + (", images/*/" if nested else "")
            raise _missing_error(shown, missing, looked)
        return by_id

    def _entry(
        self, path: Path, name: str, split: Split | None, declared: tuple[int, int] | None, where: str, shown: str
    ) -> ImportEntry:
        resolved = path.resolve()
        if name in self._names and self._names[name][0] != resolved:
            raise InvalidInput(
                f"{where}: file_name {name!r} names a different file than in {self._names[name][1]}; "
                "import these JSON files one at a time"
            )
        self._names[name] = (resolved, shown)
        entry = self.entries.get(resolved)
        if entry is None:
            entry = ImportEntry(path=path, name=name, split=split, declared_size=declared, origin=where)
            self.entries[resolved] = entry
        elif declared and entry.declared_size and declared != entry.declared_size:
            raise InvalidInput(f"{where}: size {declared} disagrees with {entry.origin} {entry.declared_size}")
        return entry

    def _shape(self, ann: dict, label: str, size: tuple[int, int] | None, where: str) -> Shape:
        attributes = {"iscrowd": 1} if ann.get("iscrowd") else {}
        segmentation = ann.get("segmentation")
        if self.kind is ProjectKind.instance and segmentation:
            if isinstance(segmentation, dict):
                return _mask(segmentation, label, attributes, size, where)
            if isinstance(segmentation, list):
                return _polygon(segmentation, label, attributes, size, where)
            raise InvalidInput(
                f"{where}: segmentation must be a list of polygons or an RLE object, got {type(segmentation).__name__}"
            )
        if "bbox" not in ann:
            raise InvalidInput(f"{where}: missing key 'bbox'")
        x0, y0, x1, y1 = _bbox(ann["bbox"], size, where)
        return Box(label=label, x0=x0, y0=y0, x1=x1, y1=y1, attributes=attributes)


def _load_json(file: Path, shown: str, require_object: bool = True) -> Any:
    data = load_json(file, shown)
    if require_object and not isinstance(data, dict):
        raise InvalidInput(
            f"{shown}: expected a JSON object with images, annotations and categories, got {type(data).__name__}"
        )
    return data


def _check_inside(xs: list[float], ys: list[float], size: tuple[int, int] | None, what: str, where: str) -> None:
    low = -_BOUNDS_TOLERANCE
    width, height = size if size else (math.inf, math.inf)
    if min(xs) < low or min(ys) < low or max(xs) > width + _BOUNDS_TOLERANCE or max(ys) > height + _BOUNDS_TOLERANCE:
        extent = f"the {width}×{height} image" if size else "the image (negative coordinates)"
        raise InvalidInput(
            f"{where}: {what} spans x {min(xs):g}..{max(xs):g}, y {min(ys):g}..{max(ys):g}, "
            f"outside {extent} by more than {_BOUNDS_TOLERANCE:g} px"
        )


def _bbox(raw: Any, size: tuple[int, int] | None, where: str) -> tuple[float, float, float, float]:
    if not isinstance(raw, list) or len(raw) != 4 or not all(_is_number(v) for v in raw):
        raise InvalidInput(f"{where}: bbox must be 4 numbers [x, y, width, height], got {raw!r}")
    if not all(math.isfinite(v) for v in raw):
        raise InvalidInput(f"{where}: bbox has a value that is not a finite number ({raw!r})")
    x, y, w, h = (float(v) for v in raw)
    if w < 0:
        raise InvalidInput(f"{where}: bbox width is negative ({w})")
    if h < 0:
        raise InvalidInput(f"{where}: bbox height is negative ({h})")
    _check_inside([x, x + w], [y, y + h], size, "bbox", where)
    return x, y, x + w, y + h


def _polygon(raw: list, label: str, attributes: dict, size: tuple[int, int] | None, where: str) -> Polygon:
    parts = []
    for j, flat in enumerate(raw):
        here = f"{where}: segmentation[{j}]"
        if not isinstance(flat, list) or not all(_is_number(v) for v in flat):
            raise InvalidInput(f"{here} must be a flat list of numbers [x1, y1, x2, y2, ...]")
        if len(flat) % 2:
            raise InvalidInput(f"{here}: polygon has an odd number of coordinates ({len(flat)})")
        if len(flat) < 6:
            raise InvalidInput(f"{here}: polygon has {len(flat) // 2} point(s); at least 3 are needed")
        if not all(math.isfinite(v) for v in flat):
            raise InvalidInput(f"{here}: polygon has a value that is not a finite number")
        _check_inside(flat[0::2], flat[1::2], size, "polygon", here)
        parts.append(tuple((float(flat[k]), float(flat[k + 1])) for k in range(0, len(flat), 2)))
    return Polygon(label=label, parts=tuple(parts), attributes=attributes)


def _mask(raw: dict, label: str, attributes: dict, size: tuple[int, int] | None, where: str) -> Mask:
    rle_size, counts = raw.get("size"), raw.get("counts")
    if not (isinstance(rle_size, list) and len(rle_size) == 2 and all(isinstance(v, int) and v > 0 for v in rle_size)):
        raise InvalidInput(f"{where}: segmentation RLE size must be [height, width], got {rle_size!r}")
    height, width = rle_size
    if size and (width, height) != size:
        raise InvalidInput(
            f"{where}: segmentation RLE size {height}×{width} (h×w) differs from the image's {size[1]}×{size[0]}"
        )
    if isinstance(counts, list):
        if not all(isinstance(v, int) and v >= 0 for v in counts) or sum(counts) != height * width:
            raise InvalidInput(
                f"{where}: uncompressed RLE counts must be non-negative run lengths summing to {height}×{width}"
            )
        counts = rle.uncompressed_to_counts(counts, (height, width))
    elif not isinstance(counts, str) or not counts.isascii():
        raise InvalidInput(f"{where}: segmentation RLE counts must be a string or a list of run lengths")
    else:
        try:
            rle.check_counts((height, width), counts)
        except ValueError as exc:
            raise InvalidInput(f"{where}: malformed compressed RLE: {exc}") from None
    return Mask(label=label, size=(height, width), counts=counts, attributes=attributes)


# --- writing -------------------------------------------------------------------------------------------------


def _write(records: Iterable[ExportRecord], ctx: ExportContext) -> ExportSummary:
    out = ctx.out
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    ids = {c.name: c.index for c in ctx.classes}
    ordered = sorted(ctx.classes, key=lambda c: c.index)
    categories = [{"id": c.index, "name": c.name, "supercategory": ""} for c in ordered]
    summary = ExportSummary(files=["annotations.json", "images/"])
    final, partial, side = out / "annotations.json", out / ".annotations.json.part", out / ".annotations.part"
    skipped = pending = 0
    try:
        with partial.open("w", encoding="utf-8") as doc, side.open("w+", encoding="utf-8") as anns:
            doc.write('{"info": {"description": "exported by labelloop"}, "licenses": [],\n"categories": ')
            doc.write(json.dumps(categories))
            doc.write(',\n"images": [')
            for record in records:
                item = record.item
                file_name = ctx.save_image(item, images_dir)
                image = {"id": item.id, "file_name": file_name, "width": item.width, "height": item.height}
                doc.write(("\n" if summary.items == 0 else ",\n") + json.dumps(image))
                for shape in record.shapes:
                    ann = _annotation(shape, item.id, ids, item.name)
                    if ann is None:
                        skipped += 1
                        continue
                    summary.shapes += 1
                    ann["id"] = summary.shapes
                    anns.write(("\n" if summary.shapes == 1 else ",\n") + json.dumps(ann))
                summary.items += 1
                pending += 1
                if pending == _PROGRESS_EVERY:
                    ctx.progress(pending)
                    pending = 0
            doc.write('\n],\n"annotations": [')
            anns.seek(0)
            shutil.copyfileobj(anns, doc)
            doc.write("\n]}\n")
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)
        side.unlink(missing_ok=True)
    if pending:
        ctx.progress(pending)
    if skipped:
        summary.warnings.append(f"{skipped} shape(s) that COCO cannot hold (class labels, scribbles) were left out")
    return summary


def _annotation(shape: Shape, image_id: int, ids: dict[str, int], item_name: str) -> dict[str, Any] | None:
    if not isinstance(shape, (Box, Polygon, Mask)):
        return None
    if shape.label not in ids:
        raise InvalidInput(f"{item_name}: shape label {shape.label!r} is not a class of the project")
    ann: dict[str, Any] = {"image_id": image_id, "category_id": ids[shape.label]}
    if isinstance(shape, Box):
        x0, y0, x1, y1 = shape.x0, shape.y0, shape.x1, shape.y1
        ann.update(segmentation=[], area=(x1 - x0) * (y1 - y0))
    elif isinstance(shape, Polygon):
        x0, y0, x1, y1 = shape.bounds()
        rings = [[c for point in part for c in point] for part in shape.parts]
        ann.update(segmentation=rings, area=rle.polygon_area(shape))
    else:
        x0, y0, x1, y1 = rle.bbox(shape)
        ann.update(segmentation={"size": list(shape.size), "counts": shape.counts}, area=rle.area(shape))
    ann["bbox"] = [x0, y0, x1 - x0, y1 - y0]
    ann["iscrowd"] = int(bool(shape.attributes.get("iscrowd", 0)))
    if shape.score is not None:
        ann["score"] = shape.score
    return ann
