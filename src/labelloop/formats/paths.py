"""Names of the files in an import: the rules every format shares for making, showing and walking them.

A name that reaches an item is relative and '/'-separated, and never leaves the imported folder; splits may be
spelled in folder and file names ("train/", "val2017/", "instances_val.json").
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

from labelloop.domain import Split
from labelloop.errors import InvalidInput

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


def split_in_name(name: str) -> Split | None:
    """The first of train, val, test that a name contains ('instances_val2017' -> val); None when none does."""
    lowered = name.lower()
    return next((split for split in (Split.train, Split.val, Split.test) if split.value in lowered), None)


def safe_name(raw: Any, where: str, *, noun: str | None = None, strip: bool = True) -> str:
    """A relative path from the user's files -> '/'-separated name; absolute paths and '..' are refused.

    Without `noun` the path was found on disk or typed into a CSV: a refusal speaks of the imported folder, and a
    drive prefix ('C:...') counts as absolute. With `noun` the name was written inside an annotation file: a
    refusal calls it a relative `noun` inside the dataset, and a first part ending in ':' ('C:/', 'http:') counts
    as absolute. strip=False keeps surrounding spaces as part of the name (COCO's file_name is taken as written).
    """
    # A name kept as written must hold more than spaces; a stripped one that ends up empty is refused below.
    if not isinstance(raw, str) or (not strip and not raw.strip()):
        raise InvalidInput(f"{where} must be a non-empty string, got {raw!r}")
    name = (raw.strip() if strip else raw).replace("\\", "/")
    parts = PurePosixPath(name).parts
    if noun is None:
        if not name or name.startswith("/") or name[1:2] == ":":
            raise InvalidInput(f"{where}: {raw!r} must be a path relative to the imported folder")
        if ".." in parts:
            raise InvalidInput(f"{where}: {raw!r} leaves the imported folder ('..' is not allowed)")
    elif not name or name.startswith("/") or (bool(parts) and parts[0].endswith(":")) or ".." in parts:
        raise InvalidInput(f"{where} {raw!r} must be a relative {noun} inside the dataset (no '..', not absolute)")
    return "/".join(part for part in parts if part != ".")


def relative_name(path: Path, root: Path) -> str:
    """The entry name of a file found under root: its relative, '/'-separated path."""
    return safe_name(path.relative_to(root).as_posix(), str(path))


def shown_path(path: Path, base: Path) -> str:
    """How a message names a file: its '/'-separated path relative to base, or the whole path when outside it."""
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)


def walk_files(root: Path) -> list[Path]:
    """Every non-hidden file under root, sorted as Paths sort (part by part).

    os.scandir hands each entry's type over with the folder's listing, where rglob + is_file stat every file: a
    folder of 100,000 images took seconds before the import had looked at one."""
    found: list[tuple[tuple[str, ...], str]] = []

    def visit(folder: str, parts: tuple[str, ...]) -> None:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():  # follows links to folders, as rglob did
                    visit(entry.path, (*parts, entry.name))
                elif entry.is_file():
                    found.append(((*parts, entry.name), entry.path))

    visit(str(root), ())
    found.sort()
    return [Path(path) for _, path in found]


def first_names(names: list[str], most: int) -> str:
    """'a, b and 3 more': the first `most` names, and how many were left out."""
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def files_warning(root: Path, files: list[Path], what: str = "skipped (not an image)") -> list[str]:
    """One warning line with the count and the first few files (no line when there are none)."""
    if not files:
        return []
    return [f"{len(files)} file(s) {what}: {first_names([p.relative_to(root).as_posix() for p in files], 5)}"]
