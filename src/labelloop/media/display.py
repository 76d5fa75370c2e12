"""Array-level display: any image to uint8 for a screen, and area-downscaled thumbnails."""

from __future__ import annotations

import cv2
import numpy as np

from labelloop.errors import InvalidInput

_PERCENTILE_SAMPLE = 1 << 22  # percentiles of ~4 M evenly strided values are indistinguishable from exact ones


def _colour_planes(array: np.ndarray) -> np.ndarray:
    """H×W or H×W×3: alpha (and the A of grey+alpha) is dropped."""
    if array.ndim == 2:
        return array
    if array.ndim == 3 and array.shape[2] in (1, 2):
        return array[..., 0]
    if array.ndim == 3 and array.shape[2] >= 3:
        return array[..., :3]
    raise InvalidInput(f"expected an H×W or H×W×C image array, got shape {array.shape}")


def _percentile_bounds(array: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float]:
    flat = array.reshape(-1)
    if flat.size > _PERCENTILE_SAMPLE:
        flat = flat[:: flat.size // _PERCENTILE_SAMPLE]
    if flat.dtype.kind == "f":
        flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return 0.0, 0.0
    lo, hi = (float(v) for v in np.percentile(flat, percentiles))
    if hi <= lo:  # mostly-constant images (a sparse mask): fall back to the full range
        lo, hi = float(flat.min()), float(flat.max())
    return lo, hi


def _window_bounds(window: tuple[float, float]) -> tuple[float, float]:
    centre, width = (float(v) for v in window)
    if not width > 0:
        raise InvalidInput(f"window width must be greater than 0, got window=(centre={centre}, width={width})")
    return centre - width / 2, centre + width / 2


def to_display(
    array: np.ndarray,
    *,
    window: tuple[float, float] | None = None,
    percentiles: tuple[float, float] = (0.5, 99.5),
    invert: bool = False,
) -> np.ndarray:
    """uint8 H×W or H×W×3: uint8 as is, anything else mapped linearly from a window or percentiles to 0..255."""
    planes = _colour_planes(np.asarray(array))
    if planes.dtype == bool:
        planes = planes.astype(np.uint8) * 255
    if planes.dtype == np.uint8 and window is None:
        out = planes.copy()
    else:
        if planes.dtype.kind not in "uif":
            raise InvalidInput(f"cannot display an array of dtype {planes.dtype}; expected integers or floats")
        lo, hi = _window_bounds(window) if window is not None else _percentile_bounds(planes, percentiles)
        if hi <= lo:
            out = np.zeros(planes.shape, dtype=np.uint8)
        else:
            scaled = (planes.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
            np.nan_to_num(scaled, copy=False, nan=0.0)
            out = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if invert:
        np.subtract(255, out, out=out)
    return np.ascontiguousarray(out)


def thumbnail(image_uint8: np.ndarray, max_side: int = 256) -> np.ndarray:
    """Area downscale so the longer side is at most `max_side`, keeping the aspect ratio (never upscales)."""
    image = np.asarray(image_uint8)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise InvalidInput(
            f"thumbnail expects a uint8 H×W or H×W×C array, got {image.dtype} with shape {image.shape}; "
            "pass it through to_display() first"
        )
    if max_side < 1:
        raise InvalidInput(f"max_side must be at least 1, got {max_side}")
    height, width = image.shape[:2]
    longest = max(height, width)
    if longest <= max_side:
        return image.copy()
    scale = max_side / longest
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(np.ascontiguousarray(image), size, interpolation=cv2.INTER_AREA)
    if image.ndim == 3 and small.ndim == 2:  # cv2 drops a trailing channel axis of size 1
        small = small[..., None]
    return small
