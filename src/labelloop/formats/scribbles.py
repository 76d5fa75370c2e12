"""Scribbles: sparse partial labels as label PNGs (0 = unlabelled, k = class k), in the masks layout."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from labelloop.domain import ProjectKind, Scribble, Shape
from labelloop.errors import InvalidInput
from labelloop.formats.base import ExportContext, ExportRecord, ExportSummary, ImportBundle
from labelloop.formats.images import require_kind
from labelloop.formats.masks import (
    check_label,
    class_values,
    find_pairs,
    has_label_images,
    label_entry,
    read_class_names,
    paint_shape,
    read_label_image,
    value_rles,
    write_label_images,
)
from labelloop.formats.registry import register


@register
class Scribbles:
    """images/<stem>.* + scribbles/<stem>.png; one Scribble shape per class present."""

    name = "scribbles"
    description = "scribbles: images/<stem>.* + scribbles/<stem>.png (0 = unlabelled, value k = class k)"
    can_read = True
    can_write = True
    detect_priority = 30

    def detect(self, path: Path) -> bool:
        return has_label_images(path, ("scribbles",))

    def read(self, path: Path, kind: ProjectKind) -> ImportBundle:
        require_kind(self.name, kind, [ProjectKind.semantic])
        pairs, warnings = find_pairs(path, ("scribbles",), "scribble image")
        names = read_class_names(path)
        read = []
        top = 0
        for pair in pairs:
            if pair.label is None:
                read.append((pair, {}, (0, 0), 1))
                continue
            array, pages = read_label_image(pair.label, pair.image, "scribble image")
            rles = value_rles(array)
            if names is not None and set(rles) - set(names):
                raise InvalidInput(
                    f"{pair.label}: values {sorted(set(rles) - set(names))} are not classes (classes file: "
                    f"{', '.join(f'{v}={n}' for v, n in names.items())})"
                )
            top = max([top, *rles])
            read.append((pair, rles, array.shape, pages))
        numbered = None
        if names is None:
            names = {k: f"class{k}" for k in range(1, top + 1)}
            numbered = {name: value for value, name in names.items()}
        entries = []
        for pair, rles, size, pages in read:
            shapes: list[Shape] = [
                Scribble(label=names[value], size=(int(size[0]), int(size[1])), counts=counts)
                for value, counts in sorted(rles.items())
            ]
            entries.append(label_entry(pair, shapes, size, pages, warnings))
        return ImportBundle(entries=entries, classes=[names[v] for v in sorted(names)], warnings=warnings,
                            class_numbers=numbered)

    def write(self, records: Iterable[ExportRecord], ctx: ExportContext) -> ExportSummary:
        index = class_values(ctx.classes)
        dtype = np.uint8 if max(index.values(), default=0) <= 255 else np.uint16

        def render(record: ExportRecord) -> tuple[np.ndarray, int, dict | None]:
            item = record.item
            canvas = np.zeros((item.height, item.width), dtype=dtype)
            shapes = [s for s in record.shapes if isinstance(s, Scribble)]
            for shape in shapes:
                check_label(shape, index, item)
            for shape in sorted(shapes, key=lambda s: index[s.label]):
                paint_shape(canvas, shape, index[shape.label], item)
            return canvas, len(shapes), None

        return write_label_images(records, ctx, "scribbles", render, (Scribble,))
