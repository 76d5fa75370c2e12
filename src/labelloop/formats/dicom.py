"""A folder of DICOM files (any suffix, or none), without annotations.

A file is DICOM when it carries the 'DICM' magic after the 128-byte preamble (Part 10 files); old ACR-NEMA
files without it are not recognised. DICOMDIR index files hold no image and are skipped. Multi-frame files
stay one entry: the import service expands frames into items.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from labelloop import media
from labelloop.domain import ProjectKind
from labelloop.errors import InvalidInput
from labelloop.formats.base import ExportContext, ExportRecord, ExportSummary, ImportBundle, ImportEntry
from labelloop.formats.paths import files_warning, relative_name, walk_files
from labelloop.formats.registry import register


def is_dicom(path: Path) -> bool:
    """Part 10 DICOM: b'DICM' at byte 128 (DICOMDIR index files excluded)."""
    if path.name.upper() == "DICOMDIR":
        return False
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


@register
class Dicom:
    """Every DICOM file under a folder (or one DICOM file) becomes an unlabelled item."""

    name = "dicom"
    description = "a folder of DICOM files (any suffix), without annotations"
    can_read = True
    can_write = False
    detect_priority = 20

    def detect(self, path: Path) -> bool:
        if path.is_file():
            return is_dicom(path)
        if not path.is_dir():
            return False
        found = False
        for file in walk_files(path):
            if file.suffix.lower() in media.SUFFIXES and file.suffix.lower() != ".dcm":
                return False  # another kind of image: leave the folder to a more general format
            found = found or is_dicom(file)
        return found

    def read(self, path: Path, kind: ProjectKind) -> ImportBundle:
        if path.is_file():
            if not is_dicom(path):
                raise InvalidInput(f"{path}: not a DICOM file (no 'DICM' marker at byte 128)")
            return ImportBundle(entries=[ImportEntry(path=path, name=path.name)], classes=[])
        if not path.is_dir():
            raise InvalidInput(f"{path}: no such file or folder")
        entries, skipped = [], []
        for file in walk_files(path):
            if is_dicom(file):
                entries.append(ImportEntry(path=file, name=relative_name(file, path)))
            else:
                skipped.append(file)
        if not entries:
            raise InvalidInput(f"{path}: no DICOM files found (looked for the 'DICM' marker at byte 128)")
        return ImportBundle(entries=entries, classes=[], warnings=files_warning(path, skipped, "skipped (not DICOM)"))

    def write(self, records: Iterable[ExportRecord], ctx: ExportContext) -> ExportSummary:
        raise InvalidInput("format 'dicom' cannot be written; export the images with 'folders', 'csv' or 'masks'")
