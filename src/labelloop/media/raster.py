"""PNG, JPEG, BMP, GIF and WebP through Pillow (16-bit colour PNG through imagecodecs).

Images are opened with the format's own ImageFile class rather than Image.open, so Pillow's global
decompression-bomb check (Image.MAX_IMAGE_PIXELS) never fires and our own limit, read from the
header, is the only one. Nothing global in Pillow is changed: ImageFile.LOAD_TRUNCATED_IMAGES stays
False, so a truncated file fails in load() instead of being padded grey.

EXIF orientation is reported in metadata but never applied: annotations refer to the stored pixels.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import imagecodecs
import numpy as np
from PIL import BmpImagePlugin, GifImagePlugin, Image, ImageFile, JpegImagePlugin, PngImagePlugin, WebPImagePlugin

from labelloop.media.errors import MediaError
from labelloop.media.limits import check_size
from labelloop.media.pages import PageInfo, check_index
from labelloop.media.registry import Decoder, register
from labelloop.media.sources import OpenedSource

logger = logging.getLogger(__name__)

_IMAGE_FILES: dict[str, type[ImageFile.ImageFile]] = {
    "png": PngImagePlugin.PngImageFile,
    "jpeg": JpegImagePlugin.JpegImageFile,
    "bmp": BmpImagePlugin.BmpImageFile,
    "gif": GifImagePlugin.GifImageFile,
    "webp": WebPImagePlugin.WebPImageFile,
}
_EXIF_ORIENTATION = 0x0112
_PNG16_CHANNELS = {2: 3, 4: 2, 6: 4}  # PNG colour type -> channels, for bit depth 16 (Pillow would drop to 8 bits)


@dataclass(frozen=True)
class _Layout:
    """How a Pillow mode becomes an array: the mode to convert to (None: decode with imagecodecs)."""

    mode: str | None
    dtype: str
    channels: int


_MODE_LAYOUTS: dict[str, _Layout] = {
    "1": _Layout("L", "uint8", 1),  # bilevel -> 0/255
    "L": _Layout("L", "uint8", 1),
    "LA": _Layout("LA", "uint8", 2),
    "La": _Layout("LA", "uint8", 2),
    "RGB": _Layout("RGB", "uint8", 3),
    "RGBX": _Layout("RGB", "uint8", 3),
    "RGBA": _Layout("RGBA", "uint8", 4),
    "RGBa": _Layout("RGBA", "uint8", 4),
    "CMYK": _Layout("RGB", "uint8", 3),
    "YCbCr": _Layout("RGB", "uint8", 3),
    "LAB": _Layout("RGB", "uint8", 3),
    "HSV": _Layout("RGB", "uint8", 3),
    "I;16": _Layout("I;16", "uint16", 1),
    "I;16L": _Layout("I;16L", "uint16", 1),
    "I;16B": _Layout("I;16B", "uint16", 1),
    "I;16N": _Layout("I;16N", "uint16", 1),
    "I": _Layout("I", "int32", 1),
    "F": _Layout("F", "float32", 1),
}


@contextmanager
def _open(fmt: str, src: OpenedSource, limit: int) -> Iterator[ImageFile.ImageFile]:
    """Open the header only, and refuse it if it claims more than `limit` pixels."""
    with _IMAGE_FILES[fmt](src.fresh()) as image:
        check_size(src.name, image.size[0], image.size[1], limit)
        yield image


def _png16_channels(head: bytes) -> int | None:
    """Channels of a 16-bit RGB, RGBA or grey+alpha PNG (from IHDR), else None."""
    if head[12:16] != b"IHDR" or head[24] != 16:
        return None
    return _PNG16_CHANNELS.get(head[25])


def _layout(fmt: str, src: OpenedSource, image: ImageFile.ImageFile) -> _Layout:
    if fmt == "png" and (channels := _png16_channels(src.head)) is not None:
        return _Layout(None, "uint16", channels)
    if image.mode in ("P", "PA"):
        return _palette_layout(image)
    layout = _MODE_LAYOUTS.get(image.mode)
    if layout is None:
        raise MediaError(src.name, f"has Pillow mode {image.mode!r}, which labelloop cannot read")
    return layout


def _palette_layout(image: ImageFile.ImageFile) -> _Layout:
    """Palette images become RGB(A), unless the palette is plain grey (then L)."""
    if image.mode == "PA" or "transparency" in image.info:
        return _Layout("RGBA", "uint8", 4)
    palette = np.asarray(image.getpalette() or [], dtype=np.uint8).reshape(-1, 3)
    if len(palette) and (palette == palette[:, :1]).all():
        return _Layout("L", "uint8", 1)
    return _Layout("RGB", "uint8", 3)


def _frame_count(image: ImageFile.ImageFile) -> int:
    return int(getattr(image, "n_frames", 1))


def _metadata(image: ImageFile.ImageFile) -> dict:
    meta: dict = {"mode": image.mode}
    dpi = image.info.get("dpi")
    if isinstance(dpi, tuple) and len(dpi) == 2:
        meta["dpi"] = [float(dpi[0]), float(dpi[1])]
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION)
    except Exception:  # a broken EXIF block must not make the image unreadable
        logger.debug("ignoring unreadable EXIF", exc_info=True)
        orientation = None
    if isinstance(orientation, int) and orientation != 1:
        meta["exif_orientation"] = orientation  # reported, never applied
    return meta


def _to_array(image: Image.Image, layout: _Layout) -> np.ndarray:
    if layout.mode is not None and image.mode != layout.mode:
        image = image.convert(layout.mode)
    array = np.array(image)
    return array if array.dtype == layout.dtype else array.astype(layout.dtype)


def _read_png16(src: OpenedSource, index: int) -> np.ndarray:
    if index:
        raise MediaError(src.name, "only the first frame of an animated 16-bit colour PNG can be read")
    return np.asarray(imagecodecs.png_decode(src.read_bytes()))


def probe(fmt: str, src: OpenedSource, limit: int) -> list[PageInfo]:
    """One PageInfo per frame (1 unless the file is an animated GIF, WebP or PNG)."""
    with _open(fmt, src, limit) as image:
        layout = _layout(fmt, src, image)
        width, height = image.size
        meta = _metadata(image)
        return [
            PageInfo(i, width, height, layout.dtype, layout.channels, fmt, dict(meta))
            for i in range(_frame_count(image))
        ]


def read(fmt: str, src: OpenedSource, index: int, limit: int) -> np.ndarray:
    """Decode one frame."""
    with _open(fmt, src, limit) as image:
        check_index(src.name, index, _frame_count(image))
        layout = _layout(fmt, src, image)
        if layout.mode is None:
            return _read_png16(src, index)
        image.seek(index)
        image.load()
        return _to_array(image, layout)


def verify(fmt: str, src: OpenedSource, limit: int) -> list[PageInfo]:
    """Decode every frame; return probe's infos."""
    infos = probe(fmt, src, limit)
    with _open(fmt, src, limit) as image:
        if _layout(fmt, src, image).mode is None:
            _read_png16(src, 0)
            return infos
        for info in infos:
            image.seek(info.index)
            image.load()
    return infos


for _fmt in _IMAGE_FILES:
    register(
        _fmt,
        Decoder(probe=partial(probe, _fmt), read=partial(read, _fmt), verify=partial(verify, _fmt)),
    )
