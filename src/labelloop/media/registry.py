"""Registry of decoders by format name; adding a format is one module and one register() call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from labelloop.media.pages import PageInfo
from labelloop.media.sources import OpenedSource

Window = tuple[float, float]


@dataclass(frozen=True)
class Decoder:
    """The functions that probe, read, verify and (optionally) render one image format."""

    probe: Callable[[OpenedSource, int], list[PageInfo]]
    read: Callable[[OpenedSource, int, int], np.ndarray]
    verify: Callable[[OpenedSource, int], list[PageInfo]]
    render: Callable[[OpenedSource, int, Window | None, int], np.ndarray] | None = None


_DECODERS: dict[str, Decoder] = {}


def register(fmt: str, decoder: Decoder) -> None:
    """Make `decoder` the one used for format `fmt` ('png', 'tiff', ...)."""
    _DECODERS[fmt] = decoder


def decoder_for(fmt: str) -> Decoder:
    """The decoder registered for `fmt`."""
    try:
        return _DECODERS[fmt]
    except KeyError:
        raise LookupError(f"no decoder registered for format {fmt!r}; registered: {sorted(_DECODERS)}") from None
