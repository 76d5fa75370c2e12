"""CVAT for images 1.1 XML: boxes, polygons, masks in CVAT's RLE, tags; shape attributes kept.

CVAT's coordinates are ours (floats, origin at the top-left corner of the top-left pixel), so boxes and
polygon points are read as written. A mask is `rle="n0, n1, ..."` over its own rectangle (`left`, `top`, `width`,
`height` in pixels), row by row, runs alternating unset/set and starting with unset. `<attribute>` children,
`occluded`, `z_order` and `group_id` become shape attributes, and are written back.
Docs: https://docs.cvat.ai/docs/other/xml_format/ (the format, version 1.1), and
https://docs.cvat.ai/docs/dataset_management/formats/format-cvat/ (the export's layout: annotations.xml + images/).
"""

from __future__ import annotations

import math
import os
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from labelloop.domain import Box, ClassLabel, Mask, Polygon, ProjectKind, Shape
from labelloop.errors import InvalidInput
from labelloop.formats.base import ExportContext, ExportRecord, ExportSummary, ImportBundle, ImportEntry
from labelloop.formats.labelstudio import merge_masks
from labelloop.formats.paths import first_names, safe_name, shown_path
from labelloop.formats.registry import register
from labelloop.geometry import rle

VERSION = "1.1"
READABLE = ("box", "polygon", "mask", "tag")
_KEPT = ("occluded", "z_order", "group_id")  # element attributes kept as shape attributes (when not 0)
_PROGRESS_EVERY = 256


@register
class CvatFormat:
    name = "cvat"
    description = "CVAT for images 1.1 XML (boxes, polygons, masks, tags, attributes) with an images/ folder"
    can_read = True
    can_write = True
    detect_priority = 14

    def detect(self, path: Path) -> bool:
        file = _xml_file(path)
        if file is None:
            return False
        try:
            with file.open("rb") as f:
                head = f.read(4096)
        except OSError:
            return False
        return b"<annotations" in head and b"<version>" in head

    def read(self, path: Path, kind: ProjectKind) -> ImportBundle:
        file = _xml_file(path)
        if file is None:
            raise InvalidInput(f"{path}: no CVAT XML found (an .xml file, or a folder with annotations.xml)")
        return _read(file, ProjectKind(kind))

    def write(self, records: Iterable[ExportRecord], ctx: ExportContext) -> ExportSummary:
        return _write(records, ctx)


def _xml_file(path: Path) -> Path | None:
    if path.is_file():
        return path if path.suffix.lower() == ".xml" else None
    return path / "annotations.xml" if (path / "annotations.xml").is_file() else None


# --- reading -------------------------------------------------------------------------------------------------


def _parse(file: Path, shown: str) -> ET.Element:
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"{shown}: cannot read ({exc.strerror})") from None
    upper = data.upper()
    if b"<!DOCTYPE" in upper or b"<!ENTITY" in upper:
        raise InvalidInput(f"{shown}: DOCTYPE/ENTITY declarations are not allowed in annotation files (entity expansion)")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        line, column = exc.position
        raise InvalidInput(f"{shown} line {line} column {column + 1}: malformed XML ({exc.msg.split(':')[0]})") from None
    if root.tag != "annotations":
        raise InvalidInput(f"{shown}: root element is <{root.tag}>, expected <annotations> (CVAT XML)")
    version = (root.findtext("version") or "").strip()
    if version != VERSION:
        found = f"version {version!r}" if version else "no <version>"
        raise InvalidInput(f"{shown}: {found}; labelloop reads CVAT for images {VERSION} XML (export it again from CVAT "
                           f"as 'CVAT for images 1.1')")
    if root.find("track") is not None:
        raise InvalidInput(f"{shown}: <track> elements are CVAT for video; export as 'CVAT for images 1.1'")
    return root


def _float(element: ET.Element, name: str, where: str) -> float:
    raw = element.get(name)
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidInput(f"{where}: attribute {name!r} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise InvalidInput(f"{where}: attribute {name!r} must be a finite number, got {raw!r}")
    return value


def _int(element: ET.Element, name: str, where: str) -> int:
    raw = element.get(name)
    try:
        return int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidInput(f"{where}: attribute {name!r} must be an integer, got {raw!r}") from None


def _read(file: Path, kind: ProjectKind) -> ImportBundle:
    shown = file.name
    root = _parse(file, shown)
    classes = [name.strip() for name in (e.text for e in root.iterfind("meta/*/labels/label/name")) if name and name.strip()]
    classes = list(dict.fromkeys(classes))
    base = file.parent
    entries: list[ImportEntry] = []
    missing: list[str] = []
    for i, image in enumerate(root.iterfind("image")):
        where = f"{shown}: image[{i}]" + (f" ({image.get('name')})" if image.get("name") else "")
        name = safe_name(image.get("name"), f"{where}: name", noun="path", strip=False)
        width, height = _int(image, "width", where), _int(image, "height", where)
        if width < 1 or height < 1:
            raise InvalidInput(f"{where}: width and height must be positive, got {width} × {height}")
        shapes = [_shape(element, width, height, f"{where}: <{element.tag}> {n + 1}", classes)
                  for n, element in enumerate(image)]
        if kind is ProjectKind.semantic:
            shapes = merge_masks(shapes)
        found = next((r / name for r in (base, base / "images") if (r / name).is_file()), None)
        if found is None:
            missing.append(name)
            continue
        entries.append(ImportEntry(path=found, name=shown_path(found, base), shapes=shapes,
                                   declared_size=(width, height), origin=where))
    if missing:
        raise InvalidInput(f"{shown}: {len(missing)} image file(s) not found (looked beside the XML and in images/): "
                           f"{first_names(missing, 10)}")
    return ImportBundle(entries=entries, classes=classes)


def _shape(element: ET.Element, width: int, height: int, where: str, classes: list[str]) -> Shape:
    if element.tag not in READABLE:
        raise InvalidInput(f"{where}: shape type <{element.tag}> cannot be imported; labelloop reads "
                           f"{', '.join(f'<{t}>' for t in READABLE)}")
    label = (element.get("label") or "").strip()
    if not label:
        raise InvalidInput(f"{where}: missing label")
    if label not in classes:
        classes.append(label)
    attributes: dict[str, Any] = {}
    for key in _KEPT:
        if element.get(key) not in (None, "", "0"):
            attributes[key] = _int(element, key, where)
    for child in element.iterfind("attribute"):
        if not child.get("name"):
            raise InvalidInput(f"{where}: an <attribute> without a name")
        attributes[child.get("name")] = child.text or ""
    if element.tag == "tag":
        return ClassLabel(label, attributes=attributes)
    if element.tag == "box":
        if element.get("rotation") not in (None, "") and abs(_float(element, "rotation", where)) > 1e-6:
            raise InvalidInput(f"{where}: a box rotated by {element.get('rotation')}°; labelloop boxes are axis-aligned")
        x0, y0, x1, y1 = (_float(element, k, where) for k in ("xtl", "ytl", "xbr", "ybr"))
        return Box(label, x0, y0, x1, y1, attributes=attributes)
    if element.tag == "polygon":
        return Polygon(label, (_points(element.get("points"), where),), attributes=attributes)
    return _mask(element, label, attributes, width, height, where)


def _points(raw: str | None, where: str) -> tuple[tuple[float, float], ...]:
    points = []
    for pair in (raw or "").split(";"):
        xy = pair.split(",")
        try:
            x, y = (float(v) for v in xy)
        except ValueError:
            raise InvalidInput(f"{where}: points must be 'x,y;x,y;...', got {pair!r}") from None
        if not (math.isfinite(x) and math.isfinite(y)):
            raise InvalidInput(f"{where}: point {pair!r} is not finite")
        points.append((x, y))
    if len(points) < 3:
        raise InvalidInput(f"{where}: a polygon needs at least 3 points, got {len(points)}")
    return tuple(points)


def _mask(element: ET.Element, label: str, attributes: dict, width: int, height: int, where: str) -> Mask:
    left, top, w, h = (_int(element, k, where) for k in ("left", "top", "width", "height"))
    if w < 1 or h < 1 or left < 0 or top < 0 or left + w > width or top + h > height:
        raise InvalidInput(f"{where}: mask rectangle left {left}, top {top}, {w} × {h} is not inside the "
                           f"{width} × {height} image")
    try:
        counts = [int(v) for v in (element.get("rle") or "").split(",")]
    except ValueError:
        raise InvalidInput(f"{where}: rle must be comma-separated run lengths, got {element.get('rle', '')[:40]!r}") from None
    if any(c < 0 for c in counts) or sum(counts) != w * h:
        raise InvalidInput(f"{where}: rle run lengths must be non-negative and cover the {w} × {h} mask rectangle "
                           f"({w * h} pixels), got {sum(counts)}")
    values = np.arange(len(counts)) % 2 == 1
    crop = np.repeat(values, counts).reshape(h, w)
    full = np.zeros((height, width), bool)
    full[top : top + h, left : left + w] = crop
    size, encoded = rle.encode(full)
    return Mask(label, size, encoded, attributes=attributes)


# --- writing -------------------------------------------------------------------------------------------------


def _write(records: Iterable[ExportRecord], ctx: ExportContext) -> ExportSummary:
    """annotations.xml + images/. Images are streamed to a side file; the meta (labels and the attributes seen)
    goes first, so it is written at the end and the side file appended."""
    out = ctx.out
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    classes = [c.name for c in sorted(ctx.classes, key=lambda c: c.index)]
    known = set(classes)
    attributes_seen: dict[str, dict[str, None]] = {c: {} for c in classes}
    summary = ExportSummary(files=["annotations.xml", "images/"])
    final, partial, side = out / "annotations.xml", out / ".annotations.xml.part", out / ".images.part"
    skipped = pending = 0
    try:
        with side.open("w+", encoding="utf-8") as body:
            for frame, record in enumerate(records):
                item = record.item
                file_name = ctx.save_image(item, images_dir)
                image = ET.Element("image", {"id": str(frame), "name": file_name,
                                             "width": str(item.width), "height": str(item.height)})
                for shape in record.shapes:
                    if shape.label not in known:
                        raise InvalidInput(f"{item.name}: shape label {shape.label!r} is not a class of the project")
                    written = _element(image, shape, item.width, item.height)
                    if not written:
                        skipped += 1
                        continue
                    summary.shapes += 1
                    for key in [*shape.attributes, *(["score"] if getattr(shape, "score", None) is not None else [])]:
                        if key not in _KEPT and key != "source":
                            attributes_seen[shape.label][key] = None
                ET.indent(image, space="  ", level=1)
                body.write("  " + ET.tostring(image, encoding="unicode").rstrip() + "\n")
                summary.items += 1
                pending += 1
                if pending == _PROGRESS_EVERY:
                    ctx.progress(pending)
                    pending = 0
            with partial.open("w", encoding="utf-8") as doc:
                doc.write('<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n  <version>1.1</version>\n')
                doc.write(_meta(ctx.kind, classes, attributes_seen, summary.items))
                body.seek(0)
                shutil.copyfileobj(body, doc)
                doc.write("</annotations>\n")
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)
        side.unlink(missing_ok=True)
    if pending:
        ctx.progress(pending)
    if skipped:
        summary.warnings.append(f"{skipped} shape(s) that CVAT XML cannot hold (scribbles, empty masks) were left out")
    return summary


def _meta(kind: ProjectKind, classes: list[str], attributes: dict[str, dict[str, None]], size: int) -> str:
    meta = ET.Element("meta")
    task = ET.SubElement(meta, "task")
    ET.SubElement(task, "name").text = "labelloop export"
    ET.SubElement(task, "size").text = str(size)
    ET.SubElement(task, "mode").text = "annotation"
    labels = ET.SubElement(task, "labels")
    for name in classes:
        label = ET.SubElement(labels, "label")
        ET.SubElement(label, "name").text = name
        ET.SubElement(label, "type").text = "any"
        attrs = ET.SubElement(label, "attributes")
        for attribute in attributes.get(name, {}):
            entry = ET.SubElement(attrs, "attribute")
            ET.SubElement(entry, "name").text = attribute
            ET.SubElement(entry, "mutable").text = "False"
            ET.SubElement(entry, "input_type").text = "text"
            ET.SubElement(entry, "default_value").text = ""
            ET.SubElement(entry, "values").text = ""
    ET.indent(meta, space="  ", level=1)
    return "  " + ET.tostring(meta, encoding="unicode") + "\n"


def _common(shape: Shape) -> dict[str, str]:
    source = "auto" if shape.attributes.get("source") == "model" else "manual"
    data = {"label": shape.label, "source": source}
    if not isinstance(shape, ClassLabel):
        data["occluded"] = str(int(shape.attributes.get("occluded", 0) or 0))
    return data


def _tail(element: ET.Element, shape: Shape) -> None:
    if not isinstance(shape, ClassLabel):
        element.set("z_order", str(int(shape.attributes.get("z_order", 0) or 0)))
    if shape.attributes.get("group_id"):
        element.set("group_id", str(int(shape.attributes["group_id"])))
    for key, value in shape.attributes.items():
        if key not in _KEPT and key != "source":
            ET.SubElement(element, "attribute", {"name": key}).text = "" if value is None else str(value)
    if getattr(shape, "score", None) is not None:
        ET.SubElement(element, "attribute", {"name": "score"}).text = f"{shape.score:.6g}"


def _element(image: ET.Element, shape: Shape, width: int, height: int) -> bool:
    """Append the shape's element(s) to <image>; False when CVAT cannot hold it."""
    if isinstance(shape, ClassLabel):
        _tail(ET.SubElement(image, "tag", _common(shape)), shape)
    elif isinstance(shape, Box):
        element = ET.SubElement(image, "box", {**_common(shape), "xtl": f"{shape.x0:.2f}", "ytl": f"{shape.y0:.2f}",
                                               "xbr": f"{shape.x1:.2f}", "ybr": f"{shape.y1:.2f}"})
        _tail(element, shape)
    elif isinstance(shape, Polygon):
        for part in shape.parts:  # CVAT polygons have one ring: each part is its own polygon
            points = ";".join(f"{x:.2f},{y:.2f}" for x, y in part)
            _tail(ET.SubElement(image, "polygon", {**_common(shape), "points": points}), shape)
    elif isinstance(shape, Mask):
        mask = rle.decode(shape)
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if not rows.size:
            return False
        top, left = int(rows[0]), int(cols[0])
        crop = mask[top : int(rows[-1]) + 1, left : int(cols[-1]) + 1].ravel()
        change = np.flatnonzero(crop[1:] != crop[:-1]) + 1
        runs = np.diff(np.concatenate(([0], change, [crop.size]))).tolist()
        if crop[0]:
            runs.insert(0, 0)  # runs start with unset pixels
        element = ET.SubElement(image, "mask", {**_common(shape), "rle": ", ".join(map(str, runs)),
                                                "left": str(left), "top": str(top),
                                                "width": str(int(cols[-1]) - left + 1),
                                                "height": str(int(rows[-1]) - top + 1)})
        _tail(element, shape)
    else:
        return False
    return True
