"""DICOM through pydicom 3: frames, Modality LUT on read, VOI LUT / window and MONOCHROME1 on render."""

from __future__ import annotations

import logging

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, iter_pixels, pixel_array

from labelloop.media.dicom_metadata import dataset_metadata
from labelloop.media.display import to_display
from labelloop.media.errors import MediaError
from labelloop.media.limits import check_size
from labelloop.media.pages import PageInfo, check_index
from labelloop.media.registry import Decoder, Window, register
from labelloop.media.sources import OpenedSource

logger = logging.getLogger(__name__)

_PARAMETRIC_MAP = "1.2.840.10008.5.1.4.1.1.30"  # float pixel data, which the header alone does not reveal


def _header(src: OpenedSource) -> Dataset:
    """The dataset up to (not including) the pixel data."""
    # Files without the 128-byte preamble + 'DICM' only get here by their .dcm suffix; let pydicom try.
    force = src.head[128:132] != b"DICM"
    ds = pydicom.dcmread(src.fresh(), stop_before_pixels=True, force=force)
    if "Rows" not in ds or "Columns" not in ds:
        modality = ds.get("Modality") or "unknown modality"
        raise MediaError(
            src.name, f"has no image header (no Rows/Columns; {modality}): it is truncated or holds no image"
        )
    return ds


def _int(ds: Dataset, keyword: str, default: int) -> int:
    value = ds.get(keyword)
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _frames(ds: Dataset) -> int:
    return max(1, _int(ds, "NumberOfFrames", 1))


def _photometric(ds: Dataset) -> str:
    return str(ds.get("PhotometricInterpretation") or "").strip().upper()


def _rescale(ds: Dataset) -> tuple[float, float] | None:
    """(slope, intercept) when both are present and numeric, as pydicom's apply_modality_lut needs."""
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope in (None, "") or intercept in (None, ""):
        return None
    try:
        return float(slope), float(intercept)
    except (TypeError, ValueError):
        return None


def _stored_range(ds: Dataset) -> tuple[int, int]:
    bits = _int(ds, "BitsStored", _int(ds, "BitsAllocated", 16))
    if _int(ds, "PixelRepresentation", 0) == 1:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _out_dtype(ds: Dataset) -> str:
    """dtype of read(): raw for colour and 1-bit masks, Modality-LUT output (int16/int32/float32) for grey."""
    bits_allocated = _int(ds, "BitsAllocated", 16)
    if _photometric(ds) == "PALETTE COLOR":
        descriptor = ds.get("RedPaletteColorLookupTableDescriptor") or [0, 0, 16]
        return "uint8" if int(descriptor[2]) == 8 else "uint16"
    if _int(ds, "SamplesPerPixel", 1) > 1:
        return "uint8" if bits_allocated <= 8 else "uint16"
    if bits_allocated == 1:
        return "uint8"
    if str(ds.get("SOPClassUID", "")) == _PARAMETRIC_MAP:
        return "float32"
    if ds.get("ModalityLUTSequence"):
        lut_bits = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        return "int16" if lut_bits <= 15 else "int32"
    slope, intercept = _rescale(ds) or (1.0, 0.0)
    if not (slope.is_integer() and intercept.is_integer()):
        return "float32"
    ends = [value * slope + intercept for value in _stored_range(ds)]
    return "int16" if -(2**15) <= min(ends) and max(ends) < 2**15 else "int32"


def _channels(ds: Dataset) -> int:
    return 3 if _photometric(ds) == "PALETTE COLOR" else _int(ds, "SamplesPerPixel", 1)


def _check(src: OpenedSource, ds: Dataset, limit: int) -> None:
    check_size(src.name, _int(ds, "Columns", 0), _int(ds, "Rows", 0), limit)


def _to_values(raw: np.ndarray, ds: Dataset) -> np.ndarray:
    """Apply the Modality LUT (or palette) and cast to the dtype probe reported."""
    dtype = np.dtype(_out_dtype(ds))
    if _photometric(ds) == "PALETTE COLOR":
        return apply_color_lut(raw, ds).astype(dtype, copy=False)
    if raw.ndim == 3 or _int(ds, "BitsAllocated", 16) == 1:
        return raw.astype(dtype, copy=False)
    values = apply_modality_lut(raw, ds) if ds.get("ModalityLUTSequence") or _rescale(ds) else raw
    if dtype.kind == "f":
        return values.astype(dtype, copy=False)
    if values.dtype.kind == "f":
        values = np.rint(values)
    limits = np.iinfo(dtype)
    # Values outside Bits Stored are invalid; clipping keeps them from wrapping round.
    return np.clip(values, limits.min, limits.max).astype(dtype, copy=False)


def _read(src: OpenedSource, ds: Dataset, index: int, limit: int) -> np.ndarray:
    _check(src, ds, limit)
    check_index(src.name, index, _frames(ds))
    # pixel_array() on the file decodes just this frame, not the whole multi-frame volume.
    return _to_values(pixel_array(src.fresh(), index=index), ds)


def probe(src: OpenedSource, limit: int) -> list[PageInfo]:
    """One PageInfo per frame, from the header (no pixel data read)."""
    ds = _header(src)
    _check(src, ds, limit)
    width, height = _int(ds, "Columns", 0), _int(ds, "Rows", 0)
    dtype, channels, meta = _out_dtype(ds), _channels(ds), dataset_metadata(ds)
    return [PageInfo(i, width, height, dtype, channels, "dicom", dict(meta)) for i in range(_frames(ds))]


def read(src: OpenedSource, index: int, limit: int) -> np.ndarray:
    """Decode one frame with the Modality LUT applied (grey) or as RGB (colour)."""
    return _read(src, _header(src), index, limit)


def verify(src: OpenedSource, limit: int) -> list[PageInfo]:
    """Decode every frame; return probe's infos."""
    infos = probe(src, limit)
    for _ in iter_pixels(src.fresh()):
        pass
    return infos


def _voi_output_range(ds: Dataset) -> tuple[float, float]:
    """The value range apply_voi_lut maps onto (pydicom's convention), to scale it to 0..255."""
    if ds.get("VOILUTSequence"):
        return 0.0, 2.0 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1
    if ds.get("ModalityLUTSequence"):
        low, high = 0, 2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1
    else:
        low, high = _stored_range(ds)
    slope, intercept = _rescale(ds) or (1.0, 0.0)
    ends = sorted((low * slope + intercept, high * slope + intercept))
    return ends[0], ends[1]


def _file_voi(src: OpenedSource, values: np.ndarray, ds: Dataset) -> np.ndarray | None:
    """The file's own VOI LUT or first window applied and scaled to uint8, or None if it has none that works."""
    has_window = ds.get("WindowCenter") not in (None, "") and ds.get("WindowWidth") not in (None, "")
    if not (ds.get("VOILUTSequence") or has_window):
        return None
    try:
        low, high = _voi_output_range(ds)
        voi = apply_voi_lut(values, ds, index=0)
    except Exception as exc:  # a malformed VOI module should degrade to percentiles, not hide the image
        logger.warning("%s: cannot apply the file's VOI LUT/window (%s); using percentiles", src.name, exc)
        return None
    return to_display(voi, window=((low + high) / 2, high - low))


def render(src: OpenedSource, index: int, window: Window | None, limit: int) -> np.ndarray:
    """Display image: explicit window, else the file's VOI LUT/window, else percentiles; MONOCHROME1 inverted."""
    ds = _header(src)
    values = _read(src, ds, index, limit)
    if values.ndim == 3:
        return to_display(values, window=window)
    if _int(ds, "BitsAllocated", 16) == 1:
        return to_display(values.astype(bool))
    invert = _photometric(ds) == "MONOCHROME1"  # high values are dark: a CR chest shows bone bright after inverting
    if window is None:
        shown = _file_voi(src, values, ds)
        if shown is not None:
            return 255 - shown if invert else shown
    return to_display(values, window=window, invert=invert)


register("dicom", Decoder(probe=probe, read=read, verify=verify, render=render))
