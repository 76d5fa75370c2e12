"""Lossless PNG bytes for arrays (masks, thumbnails, test fixtures) and back, 16-bit included."""

from __future__ import annotations

import io

import imagecodecs
import numpy as np
from PIL import PngImagePlugin

from labelloop.errors import InvalidInput
from labelloop.media.errors import MediaError
from labelloop.media.limits import check_size, resolve_max_pixels

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PALETTE = 3  # IHDR colour type
_NAME = "<png bytes>"


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of a uint8/uint16 H×W, H×W×1, H×W×2 (grey+alpha), H×W×3 (RGB) or H×W×4 (RGBA) array."""
    array = np.asarray(array)
    if array.dtype not in (np.uint8, np.uint16):
        raise InvalidInput(
            f"encode_png needs uint8 or uint16 values, got {array.dtype}; "
            "convert first (e.g. mask.astype(np.uint8) * 255 for a boolean mask)"
        )
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 2, 3, 4)) or array.size == 0:
        raise InvalidInput(f"encode_png needs a non-empty H×W or H×W×C array with C in 1..4, got shape {array.shape}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    return bytes(imagecodecs.png_encode(np.ascontiguousarray(array)))


def decode_png(data: bytes, *, max_pixels: int | None = None) -> np.ndarray:
    """The inverse of encode_png; palette PNGs (label masks) give their indices, not colours."""
    data = bytes(data)
    if not data.startswith(_SIGNATURE) or data[12:16] != b"IHDR" or len(data) < 33:
        raise MediaError(_NAME, f"is not PNG data (it starts with {data[:16]!r})")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    check_size(_NAME, width, height, resolve_max_pixels(max_pixels))
    try:
        if data[25] == _PALETTE:
            with PngImagePlugin.PngImageFile(io.BytesIO(data)) as image:
                image.load()
                return np.array(image)
        return np.asarray(imagecodecs.png_decode(data))
    except (OSError, SyntaxError, ValueError, imagecodecs.PngError) as exc:
        raise MediaError(_NAME, f"cannot decode the PNG data: {exc}") from exc
