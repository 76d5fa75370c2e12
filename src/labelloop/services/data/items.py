"""Items for clients: pages with their labelling state, one item, its picture at a zoom level, uploads."""

from __future__ import annotations

import math
import os
import shutil
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import numpy as np
from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from labelloop import media
from labelloop.errors import InvalidInput, NotFound
from labelloop.services.data.importing import ImportReport, import_path
from labelloop.store.tables import AnnotationRow, ItemRow

STATES = ("unlabelled", "submitted", "accepted")
TILE = 512
MAX_UPLOAD_FILES = 1000


def _newest_state():
    return (select(AnnotationRow.state).where(AnnotationRow.item_id == ItemRow.id, AnnotationRow.state != "draft")
            .order_by(AnnotationRow.version.desc()).limit(1).correlate(ItemRow).scalar_subquery())


def _newest_version():
    return (select(func.max(AnnotationRow.version)).where(AnnotationRow.item_id == ItemRow.id)
            .correlate(ItemRow).scalar_subquery())


def item_dict(row: ItemRow, state: str | None, version: int | None) -> dict[str, Any]:
    return {"id": row.id, "project_id": row.project_id, "source": row.source, "page": row.page,
            "format": row.format, "width": row.width, "height": row.height, "dtype": row.dtype,
            "channels": row.channels, "metadata": row.meta, "split": row.split,
            "state": state or "unlabelled", "version": version or 0}


def list_items(session: Session, project_id: int, *, after: int = 0, limit: int = 100,
               state: str | None = None) -> list[dict[str, Any]]:
    """A page of items in id order with the state of their newest non-draft annotation."""
    newest = _newest_state()
    query = select(ItemRow, newest.label("state"), _newest_version().label("version")).where(
        ItemRow.project_id == project_id, ItemRow.id > after)
    if state is not None:
        if state not in STATES:
            raise InvalidInput(f"state {state!r} is not one of {', '.join(STATES)}")
        query = query.where(newest.is_(None) if state == "unlabelled" else newest == state)
    rows = session.execute(query.order_by(ItemRow.id).limit(limit)).all()
    return [item_dict(row, state_, version) for row, state_, version in rows]


def get_item(session: Session, item_id: int) -> ItemRow:
    row = session.get(ItemRow, item_id)
    if row is None:
        raise NotFound(f"no item {item_id}")
    return row


def describe_item(session: Session, row: ItemRow) -> dict[str, Any]:
    return describe(session, row.id)


_COLUMNS = ItemRow.__table__.c
_DESCRIBE = select(_COLUMNS.id, _COLUMNS.project_id, _COLUMNS.source, _COLUMNS.page, _COLUMNS.format,
                   _COLUMNS.width, _COLUMNS.height, _COLUMNS.dtype, _COLUMNS.channels, _COLUMNS["metadata"],
                   _COLUMNS.split, _newest_state().label("state"), _newest_version().label("version")
                   ).where(_COLUMNS.id == bindparam("item_id"))


def describe(session: Session, item_id: int) -> dict[str, Any]:
    """One item as clients see it (with the state and version of its newest annotation), in one statement."""
    row = session.connection().execute(_DESCRIBE, {"item_id": item_id}).first()
    if row is None:
        raise NotFound(f"no item {item_id}")
    found = dict(row._mapping)
    found["state"], found["version"] = found["state"] or "unlabelled", found["version"] or 0
    return found


def levels(row: ItemRow) -> int:
    """Zoom levels: 0 is full size, each next one halves both sides, down to 1 pixel on the longer side."""
    return int(math.ceil(math.log2(max(row.width, row.height, 1)))) + 1


class _LevelCache:
    """Rendered levels by (blob, page, window, level), bounded in bytes, least recently used out.

    Blobs are content-addressed and never change, so a process may keep what it decoded: the tiles of one level
    then cost one decode instead of one each. It only saves work; every process can rebuild it."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple) -> np.ndarray | None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key: tuple, pixels: np.ndarray) -> None:
        if pixels.nbytes > self.max_bytes:
            return
        pixels.flags.writeable = False
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = pixels
            self._bytes += pixels.nbytes
            while self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes


_LEVELS = _LevelCache(int(os.environ.get("LABELLOOP_RENDER_CACHE_MB", "256")) << 20)


def _rendered_level(workspace, row: ItemRow, level: int, window: tuple[float, float] | None) -> np.ndarray:
    key = (row.blob_sha256, row.page, tuple(window) if window else None, level)
    pixels = _LEVELS.get(key)
    if pixels is None:
        pixels = media.render(workspace.blobs.local_path(row.blob_sha256), row.page, name=row.source, window=window)
        if level:
            longest = max(row.width, row.height)
            pixels = media.thumbnail(pixels, max(1, math.ceil(longest / 2**level)))
        _LEVELS.put(key, pixels)
    return pixels


def render_item(workspace, row: ItemRow, *, level: int = 0, window: tuple[float, float] | None = None,
                tile: tuple[int, int] | None = None) -> bytes:
    """PNG of what a person should see: 16-bit and DICOM windowed here, scaled down by 2**level,
    optionally one 512×512 tile (column, row) of that level. Decoded levels are kept in a bounded cache."""
    if not 0 <= level < levels(row):
        raise InvalidInput(f"level {level} does not exist for a {row.width}×{row.height} image (0..{levels(row) - 1})")
    pixels = _rendered_level(workspace, row, level, window)
    if tile is not None:
        column, line = tile
        height, width = pixels.shape[:2]
        if column < 0 or line < 0 or column * TILE >= width or line * TILE >= height:
            raise InvalidInput(f"tile ({column}, {line}) lies outside level {level} ({width}×{height}, tiles of {TILE})")
        pixels = pixels[line * TILE:(line + 1) * TILE, column * TILE:(column + 1) * TILE]
    return media.encode_png(pixels)


def _safe_name(name: str, used: set[str]) -> str:
    base = PurePosixPath((name or "upload").replace("\\", "/")).name.lstrip(".") or "upload"
    candidate, n = base, 1
    while candidate in used:
        stem, suffix = PurePosixPath(base).stem, PurePosixPath(base).suffix
        candidate, n = f"{stem}-{n}{suffix}", n + 1
    used.add(candidate)
    return candidate


def upload_items(workspace, project_name: str, files: Iterable[tuple[str, BinaryIO]], *, split: str | None,
                 author: str, skip_bad: bool = False) -> ImportReport:
    """Uploaded image files become items, all or nothing (the import checks every file first); with `skip_bad` the
    readable ones do and the report lists the others."""
    staging = Path(workspace.root) / "tmp" / f"upload-{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    try:
        used: set[str] = set()
        for count, (name, stream) in enumerate(files, 1):
            if count > MAX_UPLOAD_FILES:
                raise InvalidInput(f"at most {MAX_UPLOAD_FILES} files per upload; send the rest in another request")
            with open(staging / _safe_name(name, used), "wb") as out:
                shutil.copyfileobj(stream, out, 1 << 20)
        if not used:
            raise InvalidInput("no files in the upload; send them as multipart form field 'files'")
        return import_path(workspace, project_name, staging, format="images", split=split, author=author,
                           skip_bad=skip_bad)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
