"""Decompression-bomb guard: refuse images whose header claims too many pixels."""

from __future__ import annotations

import os

from labelloop.errors import InvalidInput
from labelloop.media.errors import MediaError

DEFAULT_MAX_PIXELS: int = 16384 * 16384
MAX_PIXELS_ENV = "LABELLOOP_MAX_PIXELS"


def resolve_max_pixels(max_pixels: int | None) -> int:
    """The limit in force: the argument, else $LABELLOOP_MAX_PIXELS, else DEFAULT_MAX_PIXELS."""
    if max_pixels is not None:
        if max_pixels <= 0:
            raise InvalidInput(f"max_pixels must be a positive number of pixels, got {max_pixels}")
        return int(max_pixels)
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(raw))
    except ValueError:
        value = 0
    if value <= 0:
        raise InvalidInput(f"{MAX_PIXELS_ENV} must be a positive number of pixels, got {raw!r}")
    return value


def describe_pixels(count: int) -> str:
    """A pixel count in words: '1.6 gigapixels', '268 megapixels', '640 pixels'."""
    if count >= 1_000_000_000:
        return f"{count / 1e9:.3g} gigapixels"
    if count >= 1_000_000:
        return f"{count / 1e6:.3g} megapixels"
    return f"{count} pixels"


def check_size(name: str, width: int, height: int, limit: int) -> None:
    """Raise MediaError if a page of width×height is empty or has more than `limit` pixels."""
    if width <= 0 or height <= 0:
        raise MediaError(name, f"the header says the image is {width}×{height}; it has no pixels")
    count = width * height
    if count > limit:
        raise MediaError(
            name,
            f"{width}×{height} = {describe_pixels(count)} is over the limit of {describe_pixels(limit)} "
            f"(set {MAX_PIXELS_ENV} to raise it)",
        )
