"""A JSON-safe dict of a DICOM dataset's plain tags, keyed by keyword."""

from __future__ import annotations

import logging
import math
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.valuerep import PersonName

logger = logging.getLogger(__name__)

# Bulk binary values (pixels, overlays, LUT data, curves) and sequences are not metadata worth keeping.
_SKIPPED_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN", "SQ"})
_SKIP = object()


def _json_value(value: Any) -> Any:
    """A JSON-safe version of one element value, or _SKIP."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _SKIP
    if isinstance(value, int):  # IS and plain ints
        return int(value)
    if isinstance(value, float):  # DS, FL, FD
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (MultiValue, list, tuple)):
        items = [_json_value(item) for item in value]
        return [item for item in items if item is not _SKIP]
    if isinstance(value, BaseTag):
        return f"({value.group:04X},{value.element:04X})"
    if isinstance(value, PersonName):
        return str(value)
    return str(value)


def dataset_metadata(ds: Dataset) -> dict:
    """Public, non-bulk, non-sequence tags of `ds` (file meta's TransferSyntaxUID included)."""
    meta: dict = {}
    transfer_syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if transfer_syntax:
        meta["TransferSyntaxUID"] = str(transfer_syntax)
    for tag in list(ds.keys()):
        if tag.is_private or tag.group == 0x7FE0:
            continue
        try:
            elem = ds[tag]  # raw elements are parsed here, so a malformed one fails here
            if elem.VR in _SKIPPED_VRS or not elem.keyword:
                continue
            value = _json_value(elem.value)
        except Exception:  # one malformed element must not cost the whole file its metadata
            logger.debug("skipping unreadable DICOM element %s", tag, exc_info=True)
            continue
        if value is not _SKIP:
            meta[elem.keyword] = value
    return meta
