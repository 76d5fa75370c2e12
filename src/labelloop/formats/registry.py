"""One registry of formats: adding a format is one module and one `@register` line."""

from __future__ import annotations

from pathlib import Path

from labelloop.errors import InvalidInput
from labelloop.formats.base import Format

_FORMATS: dict[str, type] = {}


def register(cls: type) -> type:
    _FORMATS[cls.name] = cls
    return cls


def _load() -> None:
    # Importing the modules runs their @register lines.
    from labelloop.formats import (  # noqa: F401
        coco, csvlabels, cvat, dicom, folders, images, labelstudio, masks, scribbles, voc, yolo,
    )


def get_format(name: str) -> Format:
    _load()
    if name not in _FORMATS:
        raise InvalidInput(f"unknown format {name!r}; choose one of: {', '.join(sorted(_FORMATS))}")
    return _FORMATS[name]()


def format_names(*, readable: bool | None = None, writable: bool | None = None) -> list[str]:
    _load()
    names = []
    for name, cls in _FORMATS.items():
        if readable is not None and cls.can_read != readable:
            continue
        if writable is not None and cls.can_write != writable:
            continue
        names.append(name)
    return sorted(names)


def detect_format(path: Path) -> Format:
    _load()
    # --format auto tries the most specific formats first (lowest detect_priority).
    for cls in sorted(_FORMATS.values(), key=lambda c: (c.detect_priority, c.name)):
        fmt = cls()
        if fmt.can_read and fmt.detect(path):
            return fmt
    raise InvalidInput(f"{path}: could not tell the format; pass --format ({', '.join(format_names(readable=True))})")
