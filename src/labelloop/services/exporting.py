"""Export a project through a format writer, streamed page by page, written atomically."""

from __future__ import annotations

import os
import shutil
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath


from labelloop import media
from labelloop.domain import Shape, Split, shape_from_dict
from labelloop.errors import InvalidInput
from labelloop.formats.base import ExportContext, ExportItem, ExportRecord, ExportSummary
from labelloop.formats.registry import format_names, get_format
from labelloop.services.annotations import latest_for_items
from labelloop.services.predictions import latest_predictions_for_items
from labelloop.services.project_data import item_pages
from labelloop.services.projects import get_project
from labelloop.services.workspace import Workspace
from labelloop.store.tables import ItemRow

INCLUDE = ("annotations", "predictions", "both")
PAGE = 1000
COPYABLE = {"png", "jpeg", "bmp", "gif", "webp"}  # single-image formats whose bytes a trainer reads as they are


class _ImageSaver:
    """Writes item images for writers: original bytes where possible, else PNG (TIFF for non-PNG dtypes)."""

    def __init__(self, workspace: Workspace, write: bool = True):
        self.workspace = workspace
        self.write = write  # False: labels only, image files named but not written
        self.sources: OrderedDict[int, ItemRow] = OrderedDict()
        self.used: dict[Path, set[str]] = {}

    def remember(self, row: ItemRow) -> None:
        self.sources[row.id] = row
        while len(self.sources) > 4 * PAGE:  # writers save an item's image while handling its record
            self.sources.popitem(last=False)

    def __call__(self, item: ExportItem, directory: Path) -> str:
        row = self.sources[item.id]
        source = PurePosixPath(row.source)
        copy = row.format in COPYABLE and row.page == 0
        if copy:
            filename = source.name
        else:
            stem = source.stem if row.page == 0 else f"{source.stem}-{row.page}"
            filename = f"{stem}.png" if row.dtype in ("uint8", "uint16") else f"{stem}.tif"
        filename = self._unique(directory, filename, item.id)
        if not self.write:
            return filename
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / filename
        if copy and self.workspace.blobs.is_local:
            shutil.copyfile(self.workspace.blobs.local_path(row.blob_sha256), target)
        elif copy:
            with self.workspace.blobs.open(row.blob_sha256) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out)
        else:
            pixels = media.read(self.workspace.blobs.local_path(row.blob_sha256), row.page, name=row.source)
            if filename.endswith(".png"):
                target.write_bytes(media.encode_png(pixels))
            else:
                import tifffile

                tifffile.imwrite(target, pixels)
        return filename

    def _unique(self, directory: Path, filename: str, item_id: int) -> str:
        used = self.used.setdefault(directory, set())
        if filename in used:
            path = PurePosixPath(filename)
            filename = f"{path.stem}-{item_id}{path.suffix}"
        used.add(filename)
        return filename


def _records(workspace: Workspace, project_id: int, include: str, saver: _ImageSaver) -> Iterator[ExportRecord]:
    """Items in id order, a page at a time (keyset pagination), each with the shapes asked for."""
    for rows in item_pages(workspace, project_id, PAGE):
        with workspace.session() as session:
            ids = [r.id for r in rows]
            annotations = latest_for_items(session, ids) if include in ("annotations", "both") else {}
            predictions = latest_predictions_for_items(session, ids) if include in ("predictions", "both") else {}
        for row in rows:
            saver.remember(row)
            shapes: list[Shape] = []
            if row.id in annotations:
                shapes.extend(shape_from_dict(s) for s in annotations[row.id].shapes)
            if row.id in predictions:
                shapes.extend(shape_from_dict({**s, "attributes": {**s.get("attributes", {}), "source": "model"}})
                              for s in predictions[row.id].shapes)
            item = ExportItem(row.id, row.source, row.page, row.width, row.height, Split(row.split),
                              row.channels, row.dtype, dict(row.meta))
            yield ExportRecord(item, shapes)


def export_project(
    workspace: Workspace,
    project_name: str,
    out: str | Path,
    *,
    format: str,
    include: str = "annotations",
    overwrite: bool = False,
    images: bool = True,
    progress: Callable[[int, int | None, str], None] = lambda d, t, m: None,
) -> ExportSummary:
    out = Path(out).resolve()
    if include not in INCLUDE:
        raise InvalidInput(f"--include {include!r} is not one of {', '.join(INCLUDE)}")
    fmt = get_format(format)
    if not fmt.can_write:
        raise InvalidInput(f"format {format!r} cannot be exported; choose one of: {', '.join(format_names(writable=True))}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise InvalidInput(f"{out} exists and is not empty; choose a new folder")
    with workspace.session() as session:
        project = get_project(session, project_name)
        total = session.query(ItemRow).filter(ItemRow.project_id == project.id).count()
    # Write beside the target, then rename: a failed export leaves no half-written folder.
    staging = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.partial"
    staging.mkdir(parents=True)
    saver = _ImageSaver(workspace, write=images)
    written = 0

    def advance(n: int) -> None:
        nonlocal written
        written += n
        progress(written, total, f"exporting {format}")

    ctx = ExportContext(out=staging, kind=project.kind, classes=project.classes, save_image=saver, progress=advance,
                        include=include)
    try:
        summary = fmt.write(_records(workspace, project.id, include, saver), ctx)
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    progress(total, total, "done")
    return summary
