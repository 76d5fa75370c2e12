"""Class folders: `<class>/<image>` or `<split>/<class>/<image>`; the folder name is the label.

Read and written symmetrically: a top-level folder named like a split (train, val, test; also training,
valid, validation, testing) is a split level, any other top-level folder is a class without a split.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from labelloop import media
from labelloop.domain import ClassLabel, ProjectKind, Split
from labelloop.errors import InvalidInput
from labelloop.formats.base import ExportContext, ExportRecord, ExportSummary, ImportBundle, ImportEntry, require_kind
from labelloop.formats.paths import files_warning, parse_split, relative_name, walk_files
from labelloop.formats.registry import register


def _split_folder(name: str) -> Split | None:
    split = parse_split(name)
    return split if split not in (None, Split.none) else None


def _place(parts: tuple[str, ...]) -> tuple[Split | None, str | None]:
    """(split, class) of a file from its relative path parts; class None when not inside a class folder."""
    split = _split_folder(parts[0]) if len(parts) > 1 else None
    rest = parts[1:] if split is not None else parts
    return split, (rest[0] if len(rest) > 1 else None)


@register
class Folders:
    """One folder per class, optionally under split folders."""

    name = "folders"
    description = "class folders: <class>/<image> or <split>/<class>/<image> (classification)"
    can_read = True
    can_write = True
    detect_priority = 80

    def detect(self, path: Path) -> bool:
        # Two classes at least, so that a lone images/ folder is left to the 'images' format.
        if not path.is_dir():
            return False
        classes = {_place(f.relative_to(path).parts)[1] for f in walk_files(path) if media.is_image_file(f)}
        return len(classes - {None}) >= 2

    def read(self, path: Path, kind: ProjectKind) -> ImportBundle:
        require_kind(self.name, kind, [ProjectKind.classification, ProjectKind.multilabel])
        if not path.is_dir():
            raise InvalidInput(f"{path}: expected a folder of class folders (<class>/<image>)")
        entries, skipped, loose = [], [], []
        for file in walk_files(path):
            if not media.is_image_file(file):
                skipped.append(file)
                continue
            split, label = _place(file.relative_to(path).parts)
            shapes = [ClassLabel(label=label)] if label is not None else []
            if label is None:
                loose.append(file)
            entries.append(ImportEntry(path=file, name=relative_name(file, path), shapes=shapes, split=split,
                                       origin=str(file.parent)))
        classes = sorted({e.shapes[0].label for e in entries if e.shapes})
        if not classes:
            raise InvalidInput(f"{path}: no class folders with images (expected <class>/<image> or "
                               "<split>/<class>/<image>)")
        warnings = files_warning(path, skipped)
        warnings += files_warning(path, loose, "imported unlabelled (not in a class folder)")
        return ImportBundle(entries=entries, classes=classes, warnings=warnings)

    def write(self, records: Iterable[ExportRecord], ctx: ExportContext) -> ExportSummary:
        if ctx.kind == ProjectKind.multilabel:
            raise InvalidInput("a multilabel project cannot be exported as class folders (an image can have "
                               "several labels); export it as 'csv'")
        if ctx.kind != ProjectKind.classification:
            raise InvalidInput(f"'folders' exports classification projects; this one is {ctx.kind.value}")
        names = {c.name for c in ctx.classes}
        summary = ExportSummary()
        for name in sorted(names):
            if "/" in name or "\\" in name or name.startswith(".") or not name.strip():
                raise InvalidInput(f"class {name!r} cannot be a folder name; rename it before exporting as folders")
            if _split_folder(name) is not None:
                summary.warnings.append(f"class {name!r} is also a split name; items of split 'none' in it will "
                                        "read back as a split folder")
        unlabelled = 0
        for record in records:
            item = record.item
            labels = sorted({s.label for s in record.shapes if isinstance(s, ClassLabel)})
            if len(labels) > 1:
                raise InvalidInput(f"item {item.name}: {len(labels)} labels ({'; '.join(labels)}) in a "
                                   "classification project")
            if not labels:
                unlabelled += 1
                ctx.progress(1)
                continue
            if labels[0] not in names:
                raise InvalidInput(f"item {item.name}: label {labels[0]!r} is not a class of the project")
            base = ctx.out if item.split == Split.none else ctx.out / item.split.value
            directory = base / labels[0]
            written = ctx.save_image(item, directory)
            summary.files.append((directory / written).relative_to(ctx.out).as_posix())
            summary.items += 1
            summary.shapes += 1
            ctx.progress(1)
        if unlabelled:
            summary.warnings.append(f"{unlabelled} item(s) without a label were skipped")
        return summary
