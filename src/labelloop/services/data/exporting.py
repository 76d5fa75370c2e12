"""Export a project through a format writer, streamed page by page, written atomically."""

from __future__ import annotations

import os
import shutil
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any


from labelloop import media
from labelloop.domain import CLASS_KINDS, ProjectKind, Shape, Split, shape_from_dict
from labelloop.errors import InvalidInput
from labelloop.formats.base import ExportContext, ExportItem, ExportRecord, ExportSummary
from labelloop.formats.registry import format_names, get_format
from labelloop.services.labelling.annotations import latest_for_items
from labelloop.services.assist.predictions import latest_predictions_for_items
from labelloop.services.data.project_data import item_pages
from labelloop.services.projects import ProjectInfo, get_project
from labelloop.services.quality.suspects import export_exclusions
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


# Why an item is left out of an export (without --include-unlabelled): an empty file for it would teach a model
# "nothing here" when nobody said so.
NOT_LABELLED = "not labelled"
SCRIBBLES_ONLY = "scribbles only"
NO_CLASS = "no class label"
EMPTY_PREDICTION = "prediction with no shape"
NO_SCRIBBLES = "no scribbles"


def missing_label(kind: ProjectKind, shapes: list[dict] | None, *, scribbles_are_labels: bool = False,
                  prediction: bool = False) -> str | None:
    """None when `shapes` (an annotation's or a prediction's, None for neither) label the item, else why not.

    Scribbles are partial labels: they label an item only for the scribbles format. A class label is the only
    answer for classification; for the other kinds an explicit revision with no shape says "nothing here"."""
    if shapes is None:
        return NOT_LABELLED
    if scribbles_are_labels:
        return None if any(s.get("type") == "scribble" for s in shapes) else NO_SCRIBBLES
    labels = [s for s in shapes if s.get("type") != "scribble"]
    if kind in CLASS_KINDS and not any(s.get("type") == "class" for s in labels):
        return EMPTY_PREDICTION if prediction else NO_CLASS
    if labels or not shapes:
        return None
    return SCRIBBLES_ONLY


def _left_out_reason(kind: ProjectKind, fmt: str, annotation, prediction) -> str | None:
    """None when the item has a label to export (a person's, or a prediction asked for), else why it has none."""
    scribbles = fmt == "scribbles"
    reasons = [missing_label(kind, annotation.shapes if annotation is not None else None,
                             scribbles_are_labels=scribbles)]
    if prediction is not None:
        reasons.append(missing_label(kind, prediction.shapes, scribbles_are_labels=scribbles, prediction=True))
    if None in reasons:
        return None
    return next((r for r in reasons if r != NOT_LABELLED), NOT_LABELLED)


def _with_labels(workspace: Workspace, project: ProjectInfo, include: str) -> Iterator[tuple]:
    """(item row, newest annotation or None, newest unrejected prediction or None) in id order, a page at a time
    (keyset pagination); only the sources `include` asks for are read."""
    for rows in item_pages(workspace, project.id, PAGE):
        with workspace.session() as session:
            ids = [r.id for r in rows]
            annotations = latest_for_items(session, ids) if include in ("annotations", "both") else {}
            predictions = latest_predictions_for_items(session, ids) if include in ("predictions", "both") else {}
        for row in rows:
            yield row, annotations.get(row.id), predictions.get(row.id)


def _records(workspace: Workspace, project: ProjectInfo, fmt: str, include: str, unlabelled: bool,
             saver: _ImageSaver, summary: ExportSummary, skipped: Callable[[int], None],
             removed: dict[int, str] | None = None) -> Iterator[ExportRecord]:
    """Items with the shapes asked for; items without a label are counted in `summary.left_out` unless
    `unlabelled` asks for them; items in `removed` (quality review) are left out with their reason."""
    removed = removed or {}
    for row, annotation, prediction in _with_labels(workspace, project, include):
        if row.id in removed:
            summary.left_out[removed[row.id]] = summary.left_out.get(removed[row.id], 0) + 1
            skipped(1)
            continue
        if not unlabelled:
            reason = _left_out_reason(project.kind, fmt, annotation, prediction)
            if reason is not None:
                summary.left_out[reason] = summary.left_out.get(reason, 0) + 1
                skipped(1)
                continue
        saver.remember(row)
        shapes: list[Shape] = []
        if annotation is not None:
            shapes.extend(shape_from_dict(s) for s in annotation.shapes)
        if prediction is not None:
            marks = {"source": "model", "model_version": prediction.model_version}
            shapes.extend(shape_from_dict({**s, "attributes": {**s.get("attributes", {}), **marks}})
                          for s in prediction.shapes)
        item = ExportItem(row.id, row.source, row.page, row.width, row.height, Split(row.split),
                          row.channels, row.dtype, dict(row.meta))
        yield ExportRecord(item, shapes)


def export_preview(workspace: Workspace, project_name: str, *, format: str, include: str = "annotations",
                   unlabelled: bool = False) -> dict[str, Any]:
    """What an export would hold, without writing anything: items exported and items left out, by reason."""
    if include not in INCLUDE:
        raise InvalidInput(f"--include {include!r} is not one of {', '.join(INCLUDE)}")
    get_format(format)
    with workspace.session() as session:
        project = get_project(session, project_name)
    items, left_out = 0, {}
    for _, annotation, prediction in _with_labels(workspace, project, include):
        reason = None if unlabelled else _left_out_reason(project.kind, format, annotation, prediction)
        if reason is None:
            items += 1
        else:
            left_out[reason] = left_out.get(reason, 0) + 1
    return {"items": items, "left_out": left_out}


QUALITY_REASONS = ("dropped as a duplicate", "excluded in quality review", "a duplicate of an exported item")


def left_out_message(left_out: dict[str, int]) -> str:
    """One line for the summary: how many items were not exported, and why."""
    reasons = ", ".join(f"{n} {why}" for why, n in sorted(left_out.items(), key=lambda kv: -kv[1]))
    return (f"{sum(left_out.values())} item(s) left out ({reasons}): they have no label to export; "
            f"--include-unlabelled exports them too, with empty labels")


def export_project(
    workspace: Workspace,
    project_name: str,
    out: str | Path,
    *,
    format: str,
    include: str = "annotations",
    overwrite: bool = False,
    images: bool = True,
    unlabelled: bool = False,
    scores: bool = False,
    exclude_duplicates: bool = False,
    progress: Callable[[int, int | None, str], None] = lambda d, t, m: None,
) -> ExportSummary:
    """Write the project in `format` to `out`. Items dropped or excluded in quality review stay out; with
    `exclude_duplicates` so does every member of a duplicate group but one (services/quality)."""
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
        removed = export_exclusions(session, project.id, duplicates=exclude_duplicates)
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
                        include=include, scores=scores)
    left = ExportSummary()
    try:
        summary = fmt.write(_records(workspace, project, format, include, unlabelled, saver, left, advance, removed),
                            ctx)
        summary.left_out = left.left_out
        unlabelled_out = {why: n for why, n in left.left_out.items() if why not in QUALITY_REASONS}
        if unlabelled_out:
            summary.warnings.append(left_out_message(unlabelled_out))
        reviewed_out = {why: n for why, n in left.left_out.items() if why in QUALITY_REASONS}
        if reviewed_out:
            summary.warnings.append("left out after quality review: " + ", ".join(
                f"{n} {why}" for why, n in sorted(reviewed_out.items())))
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    progress(total, total, "done")
    return summary
