"""Label-image formats: semantic masks (pixel value = class) and instance label images (pixel value = object id).

Layout, read and written: `images/<stem>.<ext>` beside `masks/<stem>.png` (semantic) or `labels/<stem>.png`
(instances), either at the root or under split folders `train/`, `val/`, `test/`. `classes.txt` (line k = value k)
or `classes.json` at the root names the classes. The layout is shared with scribbles (see labelimages.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from labelloop.domain import Mask, Polygon, ProjectKind
from labelloop.errors import InvalidInput
from labelloop.formats.base import ExportContext, ExportRecord, ExportSummary, ImportBundle, require_kind
from labelloop.formats.labelimages import (
    check_label,
    class_values,
    find_pairs,
    has_label_images,
    label_entry,
    layout_roots,
    paint_shape,
    read_class_names,
    read_json,
    read_label_values,
    refuse_unknown_values,
    value_shapes,
    write_class_images,
    write_label_images,
)
from labelloop.formats.registry import register


@register
class SemanticMasks:
    """One grey PNG per image whose pixel value is the class (0 = background)."""

    name = "masks"
    description = "semantic masks: images/<stem>.* + masks/<stem>.png (value k = class k; 0/255 = binary)"
    can_read = True
    can_write = True
    detect_priority = 30

    def detect(self, path: Path) -> bool:
        return has_label_images(path, ("masks",))

    def read(self, path: Path, kind: ProjectKind) -> ImportBundle:
        require_kind(self.name, kind, [ProjectKind.semantic])
        pairs, warnings = find_pairs(path, ("masks",), "mask")
        names = read_class_names(path)
        numbered = None
        binary_values = {255} | (set(names) if names else set())
        read = []
        present: set[int] = set()
        for pair, rles, size, pages in read_label_values(pairs, "mask"):
            if names is not None:
                refuse_unknown_values(pair.label, rles, binary_values if len(names) == 1 else set(names), names)
            present.update(rles)
            read.append((pair, rles, size, pages))
        if names is None:
            top = max(present, default=0)
            if top > 255:
                raise InvalidInput(f"{path}: mask values go up to {top}, more than 8-bit classes; these look like "
                                   "instance ids (use the 'instances' format) or add a classes.txt")
            names = {255: "class1"} if present <= {255} else {k: f"class{k}" for k in range(1, top + 1)}
            numbered = {name: (1 if value == 255 else value) for value, name in names.items()}
        elif len(names) == 1:
            names = {255: next(iter(names.values())), **names}
        entries = [
            label_entry(pair, value_shapes(rles, size, Mask, names), size, pages, warnings)
            for pair, rles, size, pages in read
        ]
        classes = list(dict.fromkeys(names[v] for v in sorted(names)))
        return ImportBundle(entries=entries, classes=classes, warnings=warnings, class_numbers=numbered)

    def write(self, records: Iterable[ExportRecord], ctx: ExportContext) -> ExportSummary:
        index = class_values(ctx.classes)
        if len(ctx.classes) == 1:
            index = {name: 255 for name in index}  # binary convention: foreground 255
        return write_class_images(records, ctx, "masks", index, (Mask, Polygon))


@register
class InstanceMasks:
    """One 16-bit PNG per image whose pixel value is the object id (0 = background)."""

    name = "instances"
    description = "instance label images: images/<stem>.* + labels/<stem>.png (16-bit ids) [+ <stem>.json id->class]"
    can_read = True
    can_write = True
    detect_priority = 25

    def detect(self, path: Path) -> bool:
        # YOLO keeps .txt files in labels/; only a labels/ folder of PNGs (and no .txt) is ours.
        if not has_label_images(path, ("labels",)):
            return False
        return not any(any((root / "labels").rglob("*.txt")) for root, _ in layout_roots(path))

    def read(self, path: Path, kind: ProjectKind) -> ImportBundle:
        require_kind(self.name, kind, [ProjectKind.instance])
        pairs, warnings = find_pairs(path, ("labels", "masks"), "label image")
        names = read_class_names(path)
        known = list(names.values()) if names else []
        used: list[str] = []
        entries = []
        for pair, rles, size, pages in read_label_values(pairs, "label image"):
            labels = _instance_classes(pair.label, sorted(rles), known) if pair.label is not None else {}
            shapes = value_shapes(rles, size, Mask, labels)
            used += [shape.label for shape in shapes]
            entries.append(label_entry(pair, shapes, size, pages, warnings))
        classes = known or sorted(set(used)) or ["object"]
        return ImportBundle(entries=entries, classes=classes, warnings=warnings)

    def write(self, records: Iterable[ExportRecord], ctx: ExportContext) -> ExportSummary:
        index = class_values(ctx.classes)
        several = len(ctx.classes) > 1

        def render(record: ExportRecord) -> tuple[np.ndarray, int, dict | None]:
            item = record.item
            canvas = np.zeros((item.height, item.width), dtype=np.uint16)
            shapes = [s for s in record.shapes if isinstance(s, (Mask, Polygon))]
            if len(shapes) > np.iinfo(np.uint16).max:
                raise InvalidInput(f"item {item.name}: {len(shapes)} objects; a 16-bit label image holds at most 65535")
            sidecar = {}
            for object_id, shape in enumerate(shapes, start=1):  # later objects win overlaps
                check_label(shape, index, item)
                paint_shape(canvas, shape, object_id, item)
                sidecar[str(object_id)] = shape.label
            return canvas, len(shapes), (sidecar if several and sidecar else None)

        return write_label_images(records, ctx, "labels", render, (Mask, Polygon))


def _instance_classes(label: Path, ids: list[int], known: list[str]) -> dict[int, str]:
    """Object id -> class name, from `<stem>.json` beside the label PNG or the only class there is."""
    sidecar = label.with_suffix(".json")
    if not sidecar.is_file():
        if len(known) > 1:
            raise InvalidInput(f"{label}: the classes file lists {len(known)} classes but {sidecar.name} "
                               "(object id -> class name) is missing")
        return {i: known[0] if known else "object" for i in ids}
    data = read_json(sidecar)
    if not isinstance(data, dict) or not all(isinstance(v, str) and v for v in data.values()):
        raise InvalidInput(f"{sidecar}: expected an object mapping object ids to class names, e.g. {{\"1\": \"cell\"}}")
    mapping = {str(k).strip(): v for k, v in data.items()}
    missing = [i for i in ids if str(i) not in mapping]
    if missing:
        raise InvalidInput(f"{sidecar}: no class for object ids {missing[:10]} present in {label.name}")
    unknown = sorted({mapping[str(i)] for i in ids} - set(known)) if known else []
    if unknown:
        raise InvalidInput(f"{sidecar}: classes {unknown} are not in the classes file ({', '.join(known)})")
    return {i: mapping[str(i)] for i in ids}

