"""The contract every format module follows, and the plain data passed across it.

A format reads files into an `ImportBundle` (nothing is written anywhere) and writes an export from a
stream of `ExportRecord`s. Readers validate everything they can see in their own files and raise
`InvalidInput` naming the file, the field or line, and what is wrong. The import service then decodes
every image, checks declared sizes and shape bounds, and commits atomically.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from labelloop.domain import ClassDef, ProjectKind, Shape, Split
from labelloop.errors import InvalidInput


@dataclass
class ImportedPrediction:
    """A model's prediction that a file carries (Label Studio tasks do): kept as a prediction, not a label."""

    model_version: str
    shapes: list[Shape]  # each with its own score where the file gives one
    score: float | None = None  # the prediction's own (item-level) score


@dataclass
class ImportEntry:
    """One image file and what the format says about it."""

    path: Path  # the image file on disk
    name: str  # relative, '/'-separated name inside the import (kept as the item's source)
    shapes: list[Shape] = field(default_factory=list)
    split: Split | None = None
    index: int | None = None  # a page/frame when the annotations concern one; None = every page
    declared_size: tuple[int, int] | None = None  # (width, height) the annotation file states
    origin: str = ""  # where the annotations were read, for messages ("ann.json: annotations[3]")
    predictions: list[ImportedPrediction] = field(default_factory=list)


@dataclass
class ImportBundle:
    entries: list[ImportEntry]
    classes: list[str]  # class names the files define or use, in the format's own order
    warnings: list[str] = field(default_factory=list)
    # When the files number classes but do not name them: generated label -> 1-based class index, so the
    # import can give the shapes the project's own names (value 1 of a mask -> the project's first class).
    class_numbers: dict[str, int] | None = None


@dataclass
class ExportItem:
    """What a writer may know about an item."""

    id: int
    name: str  # relative source name, sanitised ('/'-separated, no '..')
    index: int  # page/frame in the source file
    width: int
    height: int
    split: Split
    channels: int
    dtype: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExportRecord:
    item: ExportItem
    shapes: list[Shape]


class ImageSaver(Protocol):
    def __call__(self, item: ExportItem, directory: Path) -> str:
        """Write the item's image under `directory`; returns the file name written (relative)."""


@dataclass
class ExportContext:
    out: Path
    kind: ProjectKind
    classes: list[ClassDef]
    save_image: ImageSaver
    progress: Callable[[int], None] = lambda n: None  # called with the number of records just written
    include: str = "annotations"  # annotations | predictions | both: model shapes carry attributes source=model
    scores: bool = False  # YOLO: a confidence column after each predicted shape (as YOLO's own results files)


@dataclass
class ExportSummary:
    items: int = 0
    shapes: int = 0
    files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    left_out: dict[str, int] = field(default_factory=dict)  # items not exported, by reason (unlabelled ones)


class Format(Protocol):
    name: ClassVar[str]
    description: ClassVar[str]
    can_read: ClassVar[bool]
    can_write: ClassVar[bool]
    detect_priority: ClassVar[int]  # --format auto tries low numbers first; generic formats use high ones

    def detect(self, path: Path) -> bool:
        """True when `path` looks like this format (used by --format auto)."""

    def read(self, path: Path, kind: ProjectKind) -> ImportBundle:
        """Parse and validate; raise InvalidInput on the first problem in the annotation files."""

    def write(self, records: Iterable[ExportRecord], ctx: ExportContext) -> ExportSummary:
        """Stream the records to ctx.out; memory must not grow with the number of records."""


def iter_files(root: Path, suffixes: set[str]) -> Iterator[Path]:
    """Files under root with one of the suffixes, sorted, hidden files skipped."""
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix.lower() in suffixes and not any(p.startswith(".") for p in path.relative_to(root).parts):
            yield path


def require_kind(format_name: str, kind: ProjectKind, allowed: Iterable[ProjectKind]) -> None:
    """InvalidInput unless the format's files can hold labels of the project's kind."""
    allowed = tuple(allowed)
    if kind not in allowed:
        choices = " or ".join(k.value for k in allowed)
        raise InvalidInput(
            f"format {format_name!r} holds {choices} labels; it cannot import into a {kind.value} project"
        )


def peek_json(path: Path) -> Any:
    """The parsed JSON of a file, or None when it cannot be read or parsed (for format sniffing)."""
    try:
        with path.open("rb") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def load_json(file: Path, shown: str) -> Any:
    """The parsed JSON of a file; malformed JSON, other encodings and unreadable files get an InvalidInput that
    names the file (as ``shown``) and, for JSON errors, the line and column."""
    try:
        with file.open("rb") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{shown} line {exc.lineno} column {exc.colno}: malformed JSON ({exc.msg})") from None
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{shown}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise InvalidInput(f"{shown}: cannot read ({exc.strerror})") from None
