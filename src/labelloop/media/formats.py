"""Which image format a file is: by magic bytes first, by suffix as the fallback."""

from __future__ import annotations

import logging
from pathlib import Path

from labelloop.media.errors import MediaError

logger = logging.getLogger(__name__)

FORMAT_BY_SUFFIX: dict[str, str] = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".dcm": "dicom",
    ".bmp": "bmp",
    ".gif": "gif",
    ".webp": "webp",
}
SUFFIXES: frozenset[str] = frozenset(FORMAT_BY_SUFFIX)

# DICOM comes first: its 128-byte preamble may itself hold a TIFF header (dual-personality files).
_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (128, b"DICM", "dicom"),
    (0, b"\x89PNG\r\n\x1a\n", "png"),
    (0, b"\xff\xd8\xff", "jpeg"),
    (0, b"II*\x00", "tiff"),
    (0, b"MM\x00*", "tiff"),
    (0, b"II+\x00", "tiff"),  # BigTIFF
    (0, b"MM\x00+", "tiff"),
    (0, b"GIF87a", "gif"),
    (0, b"GIF89a", "gif"),
    (0, b"BM", "bmp"),
)


def sniff(head: bytes) -> str | None:
    """The format named by the magic bytes at the start of a file, or None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    for offset, magic, fmt in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return fmt
    return None


def detect_format(name: str, head: bytes) -> str:
    """The format to decode with; a content/suffix mismatch is logged and the content wins."""
    suffix = Path(name).suffix.lower()
    claimed = FORMAT_BY_SUFFIX.get(suffix)
    found = sniff(head)
    if found is not None:
        if claimed is not None and claimed != found:
            logger.warning("%s: named %s but the content is %s; decoding it as %s", name, suffix, found, found)
        return found
    if claimed == "dicom":
        return "dicom"  # DICOM written without the 128-byte preamble has no magic; let pydicom try
    if claimed is not None:
        raise MediaError(name, f"is not a valid {claimed.upper()} file ({describe_start(head)})")
    known = ", ".join(sorted({fmt.upper() for fmt in FORMAT_BY_SUFFIX.values()}))
    raise MediaError(name, f"is not a recognised image format (expected one of {known}; {describe_start(head)})")


def describe_start(head: bytes) -> str:
    """What a file that is no image holds, in words a person can act on (text, an empty file, or its first bytes)."""
    if not head:
        return "the file is empty"
    start = head[:24].decode("utf-8", "replace")
    if "\ufffd" not in start and all(ch.isprintable() or ch in "\r\n\t" for ch in start):
        words = " ".join(start.split())
        return f'it holds text: "{words}…"' if words else "it holds only white space"
    return f"it does not start like any image file (first bytes {head[:8].hex(' ')})"


def is_image_file(path: str | Path) -> bool:
    """True for an image suffix, or a DICOM file (magic 'DICM' at byte 128) without a usable suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in SUFFIXES:
        return True
    # DICOM exports are often extensionless or named by UID ('1.2.840.113619.2.55.3' has suffix '.3').
    if suffix and not suffix[1:].isdigit():
        return False
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"
