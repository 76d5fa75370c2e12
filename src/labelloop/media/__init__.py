"""Decode and normalise images: probe, read, verify, render, PNG encode/decode (no database, no HTTP).

Formats: PNG, JPEG, BMP, GIF, WebP (Pillow), TIFF (tifffile), DICOM (pydicom). Every failure raises
MediaError, whose message starts with the file name.
"""

from labelloop.media.decode import probe, read, render, verify
from labelloop.media.display import thumbnail, to_display
from labelloop.media.errors import MediaError
from labelloop.media.formats import SUFFIXES, is_image_file
from labelloop.media.limits import DEFAULT_MAX_PIXELS
from labelloop.media.pages import PageInfo
from labelloop.media.png import decode_png, encode_png
from labelloop.media.sources import Source

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "SUFFIXES",
    "MediaError",
    "PageInfo",
    "Source",
    "decode_png",
    "encode_png",
    "is_image_file",
    "probe",
    "read",
    "render",
    "thumbnail",
    "to_display",
    "verify",
]
