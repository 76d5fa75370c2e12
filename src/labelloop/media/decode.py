"""probe / read / verify / render: open a source, pick its decoder, and turn failures into MediaError."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import numpy as np
from PIL import Image

from labelloop.media import dicom, raster, tiff  # noqa: F401  (importing registers the decoders)
from labelloop.media.display import to_display
from labelloop.media.errors import MediaError
from labelloop.media.formats import detect_format
from labelloop.media.limits import describe_pixels, resolve_max_pixels
from labelloop.media.pages import PageInfo
from labelloop.media.registry import Decoder, Window, decoder_for
from labelloop.media.sources import OpenedSource, Source, open_source

logger = logging.getLogger(__name__)

T = TypeVar("T")
_MAX_REASON = 200


def _run(
    source: Source, name: str | None, max_pixels: int | None, action: Callable[[Decoder, OpenedSource, int], T]
) -> T:
    """Open `source`, detect its format and run `action` with its decoder; any failure becomes MediaError."""
    limit = resolve_max_pixels(max_pixels)
    with open_source(source, name) as src:
        fmt = detect_format(src.name, src.head)
        try:
            return action(decoder_for(fmt), src, limit)
        except MediaError:
            raise
        except Image.DecompressionBombError as exc:
            raise MediaError(src.name, f"Pillow refused it as a decompression bomb ({exc}); our limit is "
                             f"{describe_pixels(limit)}") from exc
        except MemoryError as exc:
            raise MediaError(src.name, "not enough memory to decode it; lower LABELLOOP_MAX_PIXELS") from exc
        except Exception as exc:
            # Decoders signal bad files with anything from OSError and SyntaxError (Pillow) to ValueError,
            # struct.error, KeyError or their own codec errors; all of them mean "this file is unusable".
            logger.debug("decoding %s as %s failed", src.name, fmt, exc_info=True)
            raise MediaError(src.name, f"cannot decode it as {fmt.upper()}: {_reason(exc)}") from exc


def _reason(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"


def probe(source: Source, *, name: str | None = None, max_pixels: int | None = None) -> list[PageInfo]:
    """One PageInfo per page from the header only; refuses files over max_pixels before any decoding."""
    return _run(source, name, max_pixels, lambda dec, src, limit: dec.probe(src, limit))


def read(source: Source, index: int = 0, *, name: str | None = None, max_pixels: int | None = None) -> np.ndarray:
    """Decode page `index` to H×W or H×W×C with raw values (16-bit stays uint16; DICOM after its Modality LUT)."""
    return _run(source, name, max_pixels, lambda dec, src, limit: dec.read(src, index, limit))


def verify(source: Source, *, name: str | None = None, max_pixels: int | None = None) -> list[PageInfo]:
    """Decode every page fully (import validation); return probe's infos."""
    return _run(source, name, max_pixels, lambda dec, src, limit: dec.verify(src, limit))


def render(
    source: Source,
    index: int = 0,
    *,
    name: str | None = None,
    window: Window | None = None,
    max_pixels: int | None = None,
) -> np.ndarray:
    """What a person should see: uint8 H×W or H×W×3 (an explicit window=(centre, width) overrides the file's)."""

    def action(dec: Decoder, src: OpenedSource, limit: int) -> np.ndarray:
        if dec.render is not None:
            return dec.render(src, index, window, limit)
        return to_display(dec.read(src, index, limit), window=window)

    return _run(source, name, max_pixels, action)
