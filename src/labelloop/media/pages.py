"""PageInfo: what probe() reports about one page, frame or single image."""

from __future__ import annotations

from dataclasses import dataclass, field

from labelloop.media.errors import MediaError


@dataclass(frozen=True)
class PageInfo:
    """One page (TIFF), frame (DICOM) or the single image of a PNG/JPEG."""

    index: int
    width: int
    height: int
    dtype: str  # numpy dtype name of what read() returns
    channels: int  # 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA
    format: str  # 'png', 'jpeg', 'tiff', 'dicom', 'bmp', 'gif', 'webp'
    metadata: dict = field(default_factory=dict)  # JSON-safe values only


def check_index(name: str, index: int, count: int) -> None:
    """Raise MediaError unless 0 <= index < count."""
    if not 0 <= index < count:
        pages = "page" if count == 1 else "pages"
        raise MediaError(name, f"has no page {index}; it has {count} {pages} (0..{count - 1})")
