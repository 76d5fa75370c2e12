"""Pascal VOC: one XML per image (Annotations/ + JPEGImages/, or annotations/ + images/), boxes only.

VOC stores boxes as 1-based, inclusive integer pixel indices: the box xmin=1, xmax=10 covers the first ten
pixel columns. In our corner-origin pixels that is x0 = xmin - 1, y0 = ymin - 1, x1 = xmax, y1 = ymax; the
writer inverts it with round(), so boxes come back within half a pixel. Splits come from (and go to)
ImageSets/Main/{train,val,test}.txt. difficult, truncated, occluded and pose are kept as shape attributes.

The XML comes from users, so documents with a DOCTYPE are refused: ElementTree does not fetch external
entities, but internal entity definitions can still expand without bound ("billion laughs").
"""

from __future__ import annotations

import contextlib
import math
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import IO, Any

from labelloop import media
from labelloop.domain import Box, Mask, Polygon, ProjectKind, Split
from labelloop.errors import InvalidInput
from labelloop.formats.base import ExportContext, ExportRecord, ExportSummary, ImportBundle, ImportEntry, iter_files
from labelloop.formats.paths import first_names, safe_name, shown_path
from labelloop.formats.registry import register
from labelloop.geometry import rle

_ANNOTATION_DIRS = ("Annotations", "annotations")
_IMAGE_DIRS = ("JPEGImages", "images", "Images")
_SPLITS = (Split.train, Split.val, Split.test)
_INT_ATTRIBUTES = ("difficult", "truncated", "occluded")
_PROGRESS_EVERY = 256


@register
class VocFormat:
    name = "voc"
    description = "Pascal VOC XML per image (Annotations/ + JPEGImages/), boxes"
    can_read = True
    can_write = True
    detect_priority = 20

    def detect(self, path: Path) -> bool:
        if not path.is_dir():
            return False
        xml_dir = _annotations_dir(path)
        first = next(_xml_files(path, xml_dir), None) if xml_dir else None
        if first is None:
            return False
        try:
            with first.open("rb") as f:
                return b"<annotation" in f.read(4096)
        except OSError:
            return False

    def read(self, path: Path, kind: ProjectKind) -> ImportBundle:
        kind = ProjectKind(kind)
        if kind is not ProjectKind.detection:
            raise InvalidInput(
                f"{path.name}: Pascal VOC XML holds boxes; it cannot import a project of kind {kind.value}"
            )
        if not path.is_dir():
            raise InvalidInput(
                f"{path}: expected a VOC folder (Annotations/ with JPEGImages/, or annotations/ with images/)"
            )
        xml_dir = _annotations_dir(path)
        if xml_dir is None:
            raise InvalidInput(f"{path.name}: no .xml files in Annotations/, annotations/ or the folder itself")
        image_dirs = list(dict.fromkeys(d for d in (*(path / n for n in _IMAGE_DIRS), xml_dir, path) if d.is_dir()))
        splits = _read_image_sets(path)
        entries: list[ImportEntry] = []
        classes: list[str] = []
        missing: list[str] = []
        for xml in _xml_files(path, xml_dir):
            shown = shown_path(xml, path)
            root = _parse(xml, shown)
            filename = safe_name(_text(root, "filename") or xml.stem, f"{shown}: <filename>", noun="file name")
            found = _find_image(filename, xml.stem, image_dirs)
            if found is None:
                missing.append(filename)
                continue
            image, image_dir = found
            size = _size(root, shown)
            boxes = [_box(obj, i, size, shown) for i, obj in enumerate(root.iter("object"), start=1)]
            classes += [b.label for b in boxes if b.label not in classes]
            stem = xml.relative_to(xml_dir).with_suffix("").as_posix()
            entries.append(ImportEntry(
                path=image, name=image.relative_to(image_dir).as_posix(), shapes=boxes,
                split=splits.get(stem), declared_size=size, origin=shown,
            ))
        if missing:
            looked = ", ".join(shown_path(d, path) + "/" for d in image_dirs)
            raise InvalidInput(
                f"{path.name}: {len(missing)} image file(s) named in the XML files not found "
                f"(looked in {looked}): {first_names(missing, 10)}"
            )
        return ImportBundle(entries=entries, classes=classes)

    def write(self, records: Iterable[ExportRecord], ctx: ExportContext) -> ExportSummary:
        return _write(records, ctx)


# --- reading -------------------------------------------------------------------------------------------------


def _annotations_dir(path: Path) -> Path | None:
    for folder in (*(path / n for n in _ANNOTATION_DIRS), path):
        if folder.is_dir() and any(p.suffix.lower() == ".xml" for p in folder.iterdir()):
            return folder
    return None


def _xml_files(root: Path, xml_dir: Path):
    # Inside an annotations folder every XML is an annotation; at the top level only the folder's own files are.
    if xml_dir == root:
        files = sorted(root.iterdir())
        return (p for p in files if p.is_file() and p.suffix.lower() == ".xml" and not p.name.startswith("."))
    return iter_files(xml_dir, {".xml"})


def _read_image_sets(path: Path) -> dict[str, Split]:
    splits: dict[str, Split] = {}
    for split in _SPLITS:
        listing = path / "ImageSets" / "Main" / f"{split.value}.txt"
        if listing.is_file():
            for line in listing.read_text(encoding="utf-8").splitlines():
                if line.split():
                    splits.setdefault(line.split()[0], split)
    return splits


def _parse(xml: Path, shown: str) -> ET.Element:
    try:
        data = xml.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"{shown}: cannot read ({exc.strerror})") from None
    upper = data.upper()
    if b"<!DOCTYPE" in upper or b"<!ENTITY" in upper:
        raise InvalidInput(
            f"{shown}: DOCTYPE/ENTITY declarations are not allowed in annotation files (entity expansion)"
        )
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        line, column = exc.position
        reason = exc.msg.split(":")[0]
        raise InvalidInput(f"{shown} line {line} column {column + 1}: malformed XML ({reason})") from None
    if root.tag != "annotation":
        raise InvalidInput(f"{shown}: root element is <{root.tag}>, expected <annotation>")
    return root


def _text(element: ET.Element, tag: str) -> str | None:
    child = element.find(tag)
    return child.text.strip() if child is not None and child.text and child.text.strip() else None


def _number(element: ET.Element, tag: str, where: str) -> float:
    text = _text(element, tag)
    if text is None:
        raise InvalidInput(f"{where}: missing <{tag}>")
    try:
        value = float(text)
    except ValueError:
        raise InvalidInput(f"{where}: <{tag}> {text!r} is not a number") from None
    if not math.isfinite(value):
        raise InvalidInput(f"{where}: <{tag}> {text!r} is not a finite number")
    return value


def _size(root: ET.Element, shown: str) -> tuple[int, int] | None:
    size = root.find("size")
    if size is None:
        return None
    width, height = (_number(size, tag, f"{shown}: <size>") if _text(size, tag) else 0 for tag in ("width", "height"))
    if width <= 0 or height <= 0:
        return None  # some tools write 0 when they did not know; the image itself will tell
    if not (width.is_integer() and height.is_integer()):
        raise InvalidInput(f"{shown}: <size> width and height must be whole pixels, got {width:g}×{height:g}")
    return int(width), int(height)


def _box(obj: ET.Element, number: int, size: tuple[int, int] | None, shown: str) -> Box:
    where = f"{shown}: object {number}"
    label = _text(obj, "name")
    if label is None:
        raise InvalidInput(f"{where}: missing <name>")
    bndbox = obj.find("bndbox")
    if bndbox is None:
        raise InvalidInput(f"{where} ({label}): missing <bndbox>")
    here = f"{where} ({label}) <bndbox>"
    xmin, ymin, xmax, ymax = (_number(bndbox, tag, here) for tag in ("xmin", "ymin", "xmax", "ymax"))
    # xmin == xmax is a one-pixel-wide box: the indices are inclusive.
    if xmin > xmax or ymin > ymax:
        raise InvalidInput(
            f"{where} ({label}): box ({xmin:g},{ymin:g},{xmax:g},{ymax:g}) has xmin > xmax or ymin > ymax"
        )
    if size and (xmin < 1 or ymin < 1 or xmax > size[0] or ymax > size[1]):
        raise InvalidInput(
            f"{where} ({label}): box ({xmin:g},{ymin:g},{xmax:g},{ymax:g}) is outside the {size[0]}×{size[1]} image "
            f"(VOC indices run from 1 to the width and height)"
        )
    if not size and (xmin < 1 or ymin < 1):
        raise InvalidInput(f"{where} ({label}): box ({xmin:g},{ymin:g},{xmax:g},{ymax:g}) starts before pixel 1")
    attributes: dict[str, Any] = {}
    for tag in _INT_ATTRIBUTES:
        text = _text(obj, tag)
        if text is not None:
            try:
                attributes[tag] = int(float(text))
            except ValueError:
                raise InvalidInput(f"{where} ({label}): <{tag}> {text!r} is not 0 or 1") from None
    pose = _text(obj, "pose")
    if pose is not None:
        attributes["pose"] = pose
    return Box(label=label, x0=xmin - 1, y0=ymin - 1, x1=xmax, y1=ymax, attributes=attributes)


def _find_image(filename: str, xml_stem: str, image_dirs: list[Path]) -> tuple[Path, Path] | None:
    for folder in image_dirs:
        if (folder / filename).is_file():
            return folder / filename, folder
    # <filename> is often stale (renamed files, another extension): fall back to the stem with any image suffix.
    stems = dict.fromkeys((str(PurePosixPath(filename).with_suffix("")), xml_stem))
    for folder in image_dirs:
        for stem in stems:
            for suffix in sorted(media.SUFFIXES):
                for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
                    if candidate.is_file():
                        return candidate, folder
    return None


# --- writing -------------------------------------------------------------------------------------------------


def _write(records: Iterable[ExportRecord], ctx: ExportContext) -> ExportSummary:
    kind = ProjectKind(ctx.kind)
    if kind is not ProjectKind.detection:
        raise InvalidInput(f"Pascal VOC export holds boxes; it cannot export a project of kind {kind.value}")
    known = {c.name for c in ctx.classes}
    images_dir, xml_dir, sets_dir = ctx.out / "JPEGImages", ctx.out / "Annotations", ctx.out / "ImageSets" / "Main"
    images_dir.mkdir(parents=True, exist_ok=True)
    xml_dir.mkdir(parents=True, exist_ok=True)
    summary = ExportSummary(files=["Annotations/", "JPEGImages/"])
    pending = 0
    with contextlib.ExitStack() as stack:
        listings: dict[Split, IO[str]] = {}
        for record in records:
            item = record.item
            file_name = ctx.save_image(item, images_dir)
            stem = PurePosixPath(file_name).with_suffix("")
            xml = xml_dir / f"{stem}.xml"
            if xml.exists():
                raise InvalidInput(
                    f"{item.name}: another image has the stem of {file_name!r}; VOC names annotations by stem"
                )
            root = _annotation(item, file_name)
            for shape in record.shapes:
                if not isinstance(shape, (Box, Polygon, Mask)):
                    continue
                if shape.label not in known:
                    raise InvalidInput(f"{item.name}: shape label {shape.label!r} is not a class of the project")
                root.append(_object(shape, item.width, item.height))
                summary.shapes += 1
            ET.indent(root)
            xml.parent.mkdir(parents=True, exist_ok=True)
            ET.ElementTree(root).write(xml, encoding="utf-8", xml_declaration=False)
            split = Split(item.split)
            if split is not Split.none:
                if split not in listings:
                    sets_dir.mkdir(parents=True, exist_ok=True)
                    listings[split] = stack.enter_context((sets_dir / f"{split.value}.txt").open("w", encoding="utf-8"))
                    summary.files.append(f"ImageSets/Main/{split.value}.txt")
                listings[split].write(f"{stem}\n")
            summary.items += 1
            pending += 1
            if pending == _PROGRESS_EVERY:
                ctx.progress(pending)
                pending = 0
    if pending:
        ctx.progress(pending)
    return summary


def _annotation(item, file_name: str) -> ET.Element:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = file_name
    ET.SubElement(ET.SubElement(root, "source"), "database").text = "labelloop"
    size = ET.SubElement(root, "size")
    for tag, value in (("width", item.width), ("height", item.height), ("depth", item.channels)):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    return root


def _object(shape: Box | Polygon | Mask, width: int, height: int) -> ET.Element:
    if isinstance(shape, Box):
        x0, y0, x1, y1 = shape.x0, shape.y0, shape.x1, shape.y1
    elif isinstance(shape, Polygon):
        x0, y0, x1, y1 = shape.bounds()
    else:
        x0, y0, x1, y1 = rle.bbox(shape)
    # Inverse of x0 = xmin - 1, x1 = xmax, kept inside 1..width and never empty.
    xmin = min(max(round(x0) + 1, 1), width)
    ymin = min(max(round(y0) + 1, 1), height)
    xmax = min(max(round(x1), xmin), width)
    ymax = min(max(round(y1), ymin), height)
    obj = ET.Element("object")
    ET.SubElement(obj, "name").text = shape.label
    ET.SubElement(obj, "pose").text = str(shape.attributes.get("pose", "Unspecified"))
    for tag in _INT_ATTRIBUTES:
        if tag in shape.attributes or tag != "occluded":
            ET.SubElement(obj, tag).text = str(int(shape.attributes.get(tag, 0)))
    bndbox = ET.SubElement(obj, "bndbox")
    for tag, value in (("xmin", xmin), ("ymin", ymin), ("xmax", xmax), ("ymax", ymax)):
        ET.SubElement(bndbox, tag).text = str(value)
    return obj
