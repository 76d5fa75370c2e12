"""TIFF (single and multi-page, 8/16/32-bit, grey/RGB/palette, OME) through tifffile."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ElementTree

import numpy as np
import tifffile

from labelloop.media.display import to_display
from labelloop.media.errors import MediaError
from labelloop.media.limits import check_size
from labelloop.media.pages import PageInfo, check_index
from labelloop.media.registry import Decoder, Window, register
from labelloop.media.sources import OpenedSource

logger = logging.getLogger(__name__)

# Sample types outside what consumers expect are widened losslessly (or to float32 for floats).
_DTYPE_MAP = {"bool": "uint8", "int8": "int16", "float16": "float32", "float64": "float32"}


def _out_dtype(page: tifffile.TiffPage) -> str:
    if _is_palette(page):
        return "uint8"
    name = np.dtype(page.dtype).name
    return _DTYPE_MAP.get(name, name)


def _is_palette(page: tifffile.TiffPage) -> bool:
    return page.photometric == tifffile.PHOTOMETRIC.PALETTE and page.colormap is not None


def _channels(page: tifffile.TiffPage) -> int:
    return 3 if _is_palette(page) else int(page.samplesperpixel)


def _check_page(name: str, page: tifffile.TiffPage, limit: int) -> None:
    check_size(name, int(page.imagewidth), int(page.imagelength), limit)
    if page.imagedepth > 1:
        raise MediaError(
            name, f"page {page.index} is a volume ({page.imagedepth} slices deep); save it as one page per slice"
        )
    if page.dtype is None:
        raise MediaError(name, f"page {page.index} has a sample format tifffile cannot decode")


def _ome_pixel_size(tif: tifffile.TiffFile) -> dict:
    """PhysicalSizeX/Y (and units) of the first OME image, if the file has OME-XML."""
    if not tif.is_ome or not tif.ome_metadata:
        return {}
    try:
        root = ElementTree.fromstring(tif.ome_metadata)
    except ElementTree.ParseError:
        logger.debug("ignoring unparsable OME-XML", exc_info=True)
        return {}
    pixels = next((el for el in root.iter() if el.tag.endswith("}Pixels") or el.tag == "Pixels"), None)
    if pixels is None:
        return {}
    meta: dict = {}
    for axis in ("X", "Y"):
        size = pixels.get(f"PhysicalSize{axis}")
        if size is not None:
            try:
                meta[f"physical_size_{axis.lower()}"] = float(size)
            except ValueError:
                continue
            meta[f"physical_size_{axis.lower()}_unit"] = pixels.get(f"PhysicalSize{axis}Unit", "µm")
    return meta


def _metadata(page: tifffile.TiffPage, shared: dict) -> dict:
    return {
        "photometric": tifffile.PHOTOMETRIC(page.photometric).name,
        "compression": tifffile.COMPRESSION(page.compression).name,
        "bits_per_sample": int(page.bitspersample),
        **shared,
    }


def _page_array(page: tifffile.TiffPage) -> np.ndarray:
    """Decode a page to H×W or H×W×C with the dtype probe reported."""
    array = page.asarray()
    if _is_palette(page):
        colormap = np.asarray(page.colormap)
        if colormap.max() > 255:  # TIFF colormaps are 16-bit; most writers fill the high byte
            colormap = np.round(colormap / 257.0)
        return np.moveaxis(colormap.astype(np.uint8)[:, array], 0, -1)
    if page.samplesperpixel > 1 and page.planarconfig == tifffile.PLANARCONFIG.SEPARATE:
        array = np.moveaxis(array, 0, -1)
    target = _out_dtype(page)
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    return array if array.dtype.name == target else array.astype(target)


def probe(src: OpenedSource, limit: int) -> list[PageInfo]:
    """One PageInfo per TIFF page, read from the page headers."""
    with tifffile.TiffFile(src.fresh()) as tif:
        shared = _ome_pixel_size(tif)
        infos = []
        for index, page in enumerate(tif.pages):
            page = page.aspage()
            _check_page(src.name, page, limit)
            infos.append(
                PageInfo(index, int(page.imagewidth), int(page.imagelength), _out_dtype(page), _channels(page),
                         "tiff", _metadata(page, shared))
            )
    if not infos:
        raise MediaError(src.name, "the TIFF has no pages")
    return infos


def read(src: OpenedSource, index: int, limit: int) -> np.ndarray:
    """Decode one page."""
    with tifffile.TiffFile(src.fresh()) as tif:
        check_index(src.name, index, len(tif.pages))
        page = tif.pages[index].aspage()
        _check_page(src.name, page, limit)
        return _page_array(page)


def verify(src: OpenedSource, limit: int) -> list[PageInfo]:
    """Decode every page; return probe's infos."""
    infos = probe(src, limit)
    with tifffile.TiffFile(src.fresh()) as tif:
        for page in tif.pages:
            _page_array(page.aspage())
    return infos


def render(src: OpenedSource, index: int, window: Window | None, limit: int) -> np.ndarray:
    """Display image; MINISWHITE pages are inverted so that ink stays dark."""
    with tifffile.TiffFile(src.fresh()) as tif:
        check_index(src.name, index, len(tif.pages))
        page = tif.pages[index].aspage()
        _check_page(src.name, page, limit)
        invert = page.photometric == tifffile.PHOTOMETRIC.MINISWHITE
        return to_display(_page_array(page), window=window, invert=invert)


register("tiff", Decoder(probe=probe, read=read, verify=verify, render=render))
