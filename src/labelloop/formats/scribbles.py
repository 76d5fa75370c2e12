"""Scribbles: sparse partial labels as label PNGs (0 = unlabelled, k = class k), in the masks layout."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from labelloop.domain import ProjectKind, Scribble
from labelloop.formats.base import ExportContext, ExportRecord, ExportSummary, ImportBundle, require_kind
from labelloop.formats.labelimages import (
    class_values,
    find_pairs,
    has_label_images,
    label_entry,
    read_class_names,
    read_label_values,
    refuse_unknown_values,
    value_shapes,
    write_class_images,
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
        for pair, rles, size, pages in read_label_values(pairs, "scribble image"):
            if names is not None:
                refuse_unknown_values(pair.label, rles, set(names), names)
            top = max([top, *rles])
            read.append((pair, rles, size, pages))
        numbered = None
        if names is None:
            names = {k: f"class{k}" for k in range(1, top + 1)}
            numbered = {name: value for value, name in names.items()}
        entries = [
            label_entry(pair, value_shapes(rles, size, Scribble, names), size, pages, warnings)
            for pair, rles, size, pages in read
        ]
        return ImportBundle(entries=entries, classes=[names[v] for v in sorted(names)], warnings=warnings,
                            class_numbers=numbered)

    def write(self, records: Iterable[ExportRecord], ctx: ExportContext) -> ExportSummary:
        return write_class_images(records, ctx, "scribbles", class_values(ctx.classes), (Scribble,))
