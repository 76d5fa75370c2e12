"""A plain folder of images (or one image file), no annotations."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from labelloop import media
from labelloop.domain import ProjectKind
from labelloop.errors import InvalidInput
from labelloop.formats.base import ExportContext, ExportRecord, ExportSummary, ImportBundle, ImportEntry
from labelloop.formats.paths import files_warning, relative_name, walk_files
from labelloop.formats.registry import register


@register
class Images:
    """Images only: every file media recognises becomes an unlabelled item."""

    name = "images"
    description = "a folder of images (recursive) or one image file, without annotations"
    can_read = True
    can_write = False
    detect_priority = 90

    def detect(self, path: Path) -> bool:
        if path.is_file():
            return media.is_image_file(path)
        return path.is_dir() and any(media.is_image_file(p) for p in walk_files(path))

    def read(self, path: Path, kind: ProjectKind) -> ImportBundle:
        if path.is_file():
            if not media.is_image_file(path):
                raise InvalidInput(f"{path}: not an image file (expected one of {', '.join(sorted(media.SUFFIXES))})")
            return ImportBundle(entries=[ImportEntry(path=path, name=path.name)], classes=[])
        if not path.is_dir():
            raise InvalidInput(f"{path}: no such file or folder")
        entries, skipped = [], []
        for file in walk_files(path):
            if media.is_image_file(file):
                entries.append(ImportEntry(path=file, name=relative_name(file, path)))
            else:
                skipped.append(file)
        if not entries:
            raise InvalidInput(f"{path}: no image files found")
        return ImportBundle(entries=entries, classes=[], warnings=files_warning(path, skipped))

    def write(self, records: Iterable[ExportRecord], ctx: ExportContext) -> ExportSummary:
        raise InvalidInput("format 'images' cannot be written; export images with 'folders', 'csv' or 'masks'")
