"""A plain folder of images (or one image file), no annotations; also the naming rules every folder format shares."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from labelloop import media
from labelloop.domain import ProjectKind, Split
from labelloop.errors import InvalidInput
from labelloop.formats.base import ExportContext, ExportRecord, ExportSummary, ImportBundle, ImportEntry
from labelloop.formats.registry import register

# Folder and CSV spellings of a split; a trailing year is dropped first (COCO's "train2017" -> train).
_SPLIT_ALIASES = {
    "": Split.none,
    "none": Split.none,
    "train": Split.train,
    "training": Split.train,
    "val": Split.val,
    "valid": Split.val,
    "validation": Split.val,
    "test": Split.test,
    "testing": Split.test,
}


def parse_split(value: str) -> Split | None:
    """A split spelling ('train', 'Validation', 'val2017', '') -> Split; None when it names no split."""
    text = value.strip().lower().rstrip("0123456789")
    return _SPLIT_ALIASES.get(text)


def safe_name(text: str, where: str) -> str:
    """A user-given relative path -> '/'-separated name; absolute paths and '..' are refused."""
    name = text.strip().replace("\\", "/")
    pure = PurePosixPath(name)
    if not name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise InvalidInput(f"{where}: {text!r} must be a path relative to the imported folder")
    if ".." in pure.parts:
        raise InvalidInput(f"{where}: {text!r} leaves the imported folder ('..' is not allowed)")
    return "/".join(part for part in pure.parts if part != ".")


def relative_name(path: Path, root: Path) -> str:
    """The entry name of a file found under root: its relative, '/'-separated path."""
    return safe_name(path.relative_to(root).as_posix(), str(path))


def walk_files(root: Path) -> list[Path]:
    """Every non-hidden file under root, sorted."""
    return sorted(
        path for path in root.rglob("*")
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts)
    )


def files_warning(root: Path, files: list[Path], what: str = "skipped (not an image)") -> list[str]:
    """One warning line with the count and the first few files (no line when there are none)."""
    if not files:
        return []
    shown = ", ".join(p.relative_to(root).as_posix() for p in files[:5])
    more = f" and {len(files) - 5} more" if len(files) > 5 else ""
    return [f"{len(files)} file(s) {what}: {shown}{more}"]


def require_kind(format_name: str, kind: ProjectKind, allowed: Iterable[ProjectKind]) -> None:
    allowed = tuple(allowed)
    if kind not in allowed:
        choices = " or ".join(k.value for k in allowed)
        raise InvalidInput(
            f"format {format_name!r} holds {choices} labels; it cannot import into a {kind.value} project"
        )


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
