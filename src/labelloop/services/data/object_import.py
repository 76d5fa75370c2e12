"""Import the images under an object-store prefix (s3://bucket/prefix): by copy, or by reference.

By reference, nothing is copied: each object is read once to hash and check it, and its blob row records the URL
(`blobs.url`); the blob store fetches it from there when it is read (store/blobs.py). By copy, each object goes
into the workspace's blob store as any imported file does. Either way the import is all or nothing: the rows are
written in one transaction at the end, and blobs this import stored are removed again if anything fails.

Reading and hashing run as the batch work `object-check` (jobs/batches.py), so the executor decides where: in this
process (a thread pool: the work is network-bound) or in chunks on Ray workers, which read the objects themselves;
only keys and results travel."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import select

from labelloop import media
from labelloop.errors import InvalidInput, LabelloopError
from labelloop.jobs.batches import batch_work, run_batches
from labelloop.jobs.registry import JobContext
from labelloop.services.data.importing import (
    BATCH,
    ImportReport,
    _listing,
    _remove_unreferenced,
    check_name,
    item_position,
)
from labelloop.services.labelling import stack_order
from labelloop.services.projects import get_project, get_row
from labelloop.store.blobs import StorageError, open_filesystem, storage_error
from labelloop.store.bulk_insert import insert_rows
from labelloop.store.tables import BlobRow, ItemRow

log = logging.getLogger(__name__)
IN_MEMORY_BYTES = 64 << 20  # objects up to this size are checked in memory, larger ones through a temporary file


def is_object_url(path: str) -> bool:
    """An fsspec URL of a remote store (s3://, gs://, ...), as opposed to a local path."""
    return "://" in path and not path.startswith("file://")


def import_threads() -> int:
    raw = os.environ.get("LABELLOOP_IMPORT_THREADS") or "8"
    if not raw.isdigit() or int(raw) < 1:
        raise InvalidInput(f"LABELLOOP_IMPORT_THREADS={raw!r}: give a whole number of threads, e.g. 8")
    return int(raw)


def list_objects(url: str) -> list[tuple[str, str, int]]:
    """(URL, name relative to the prefix, size) of every image object under the prefix, sorted by name."""
    fs, root = open_filesystem(url)
    root = root.rstrip("/")
    try:
        found = fs.find(root, detail=True)
    except Exception as exc:
        if isinstance(exc, FileNotFoundError) and "bucket" not in str(exc).lower():
            found = {}
        else:
            raise storage_error(exc, url, "list the objects") from exc
    protocol = url.split("://", 1)[0]
    objects = []
    for path, info in sorted(found.items()):
        if info.get("type") == "directory" or PurePosixPath(path).suffix.lower() not in media.SUFFIXES:
            continue
        name = path[len(root) + 1 :] if path.startswith(root + "/") else PurePosixPath(path).name
        objects.append((f"{protocol}://{path}", check_name(name, url), int(info.get("size") or 0)))
    return objects


@batch_work("object-check")
def check_objects(workspace, indexes: list[int], params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Read, hash and check the objects params["objects"][i] for i in indexes; by copy, also store them.

    Returns {"objects": {str(i): {"sha", "size", "pages"} or {"error"}}, "created": {sha: 1}} (the blobs this chunk
    stored). A chunk that fails removes the blobs it stored before it re-raises."""
    objects = params["objects"]
    by_reference = params["by_reference"]
    max_pixels = params.get("max_pixels")
    fs = open_filesystem(objects[indexes[0]][0])[0] if indexes else None
    created: list[str] = []

    def one(i: int) -> tuple[int, dict[str, Any]]:
        url, name, size = objects[i]
        try:
            if size > IN_MEMORY_BYTES:
                return i, _check_large(workspace, fs, url, name, max_pixels, by_reference, created)
            try:
                data = fs.cat_file(url)
            except Exception as exc:
                raise storage_error(exc, url, "read the object") from exc
            pages = media.verify(io.BytesIO(data), name=name, max_pixels=max_pixels)
            sha = hashlib.sha256(data).hexdigest()
            if not by_reference:
                _, was_created = workspace.blobs.put_bytes(data)
                if was_created:
                    created.append(sha)
            return i, {"sha": sha, "size": len(data), "pages": [asdict(p) for p in pages]}
        except StorageError:
            raise
        except LabelloopError as exc:
            return i, {"error": str(exc)}

    results: dict[str, Any] = {}
    try:
        with ThreadPoolExecutor(max_workers=import_threads()) as pool:
            for n, (i, result) in enumerate(pool.map(one, indexes), 1):
                results[str(i)] = result
                if n % 50 == 0 or n == len(indexes):
                    ctx.progress(n, len(indexes), "reading and hashing objects")
    except BaseException:
        for sha in created:
            workspace.blobs.delete(sha)
        raise
    return {"objects": results, "created": dict.fromkeys(created, 1)}


def _check_large(workspace, fs, url: str, name: str, max_pixels, by_reference: bool, created: list[str]) -> dict:
    with tempfile.NamedTemporaryFile(suffix=PurePosixPath(name).suffix) as handle:
        digest = hashlib.sha256()
        try:
            with fs.open(url, "rb") as source:
                while chunk := source.read(1 << 20):
                    digest.update(chunk)
                    handle.write(chunk)
        except Exception as exc:
            raise storage_error(exc, url, "read the object") from exc
        handle.flush()
        pages = media.verify(handle.name, name=name, max_pixels=max_pixels)
        sha = digest.hexdigest()
        if not by_reference:
            _, was_created = workspace.blobs.put_file(Path(handle.name), sha)
            if was_created:
                created.append(sha)
        return {"sha": sha, "size": handle.tell(), "pages": [asdict(p) for p in pages]}


def import_objects(workspace, project_name: str, url: str, *, by_reference: bool = False, split: str | None = None,
                   skip_bad: bool = False, max_pixels: int | None = None, ctx: JobContext | None = None) -> ImportReport:
    """Import every image under an object-store prefix into a project (see the module's docstring)."""
    ctx = ctx or JobContext(0, {}, lambda done, total, message: None, log.info)
    if split is not None and split not in {"train", "val", "test", "none"}:
        raise InvalidInput(f"split {split!r} is not one of train, val, test, none")
    with workspace.session() as session:
        project = get_project(session, project_name)
    ctx.progress(0, None, f"listing {url}")
    objects = list_objects(url)
    if not objects:
        raise InvalidInput(f"{url}: no image objects found (expected names ending in "
                           f"{', '.join(sorted(media.SUFFIXES))})")
    report = ImportReport(project=project.name, format="images (by reference)" if by_reference else "images",
                          files=len(objects))
    params = {"objects": objects, "by_reference": by_reference, "max_pixels": max_pixels}
    summary = run_batches(workspace, "object-check", list(range(len(objects))), params, ctx,
                          message="reading and hashing objects")
    created = list(summary.get("created", {}))
    committed = False
    try:
        checked = [(objects[i], summary["objects"][str(i)]) for i in range(len(objects))]
        bad = [f"{obj[1]}: {result['error']}" for obj, result in checked if "error" in result]
        if bad and not skip_bad:
            raise InvalidInput(f"{len(bad)} of {len(objects)} objects cannot be imported; nothing was imported "
                               f"(fix them, or import only the readable ones with --skip-bad):\n{_listing(bad)}")
        report.skipped = bad
        good = [(obj, result) for obj, result in checked if "error" not in result]
        ctx.progress(len(good), len(good), "committing")
        with workspace.session() as session:
            row = get_row(session, project.name, lock=True)
            _insert(session, row, good, report, split=split, by_reference=by_reference)
            if stack_order.uses_order(project.settings):  # new pages take their places in the stack order
                session.flush()
                stack_order.refresh(session.connection(), project.id)
        committed = True
    finally:
        if not committed:
            _remove_unreferenced(workspace, created)
    return report


def _insert(session, row, good, report: ImportReport, *, split: str | None, by_reference: bool) -> None:
    by_sha = {result["sha"]: (obj, result) for obj, result in good}
    shas = sorted(by_sha)
    known_blobs: set[str] = set()
    existing: set[tuple[str, int]] = set()
    for start in range(0, len(shas), BATCH):
        chunk = shas[start : start + BATCH]
        known_blobs.update(session.scalars(select(BlobRow.sha256).where(BlobRow.sha256.in_(chunk))))
        existing.update((sha, page) for sha, page in session.execute(select(ItemRow.blob_sha256, ItemRow.page).where(
            ItemRow.project_id == row.id, ItemRow.blob_sha256.in_(chunk))))
    blobs = [{"sha256": sha, "size": result["size"], "url": obj[0] if by_reference else None}
             for sha, (obj, result) in by_sha.items() if sha not in known_blobs]
    insert_rows(session, BlobRow.__table__, blobs)
    items: list[dict[str, Any]] = []
    first_name: dict[tuple[str, int], str] = {}
    for (url, name, _), result in good:
        for page in result["pages"]:
            key = (result["sha"], page["index"])
            if key in first_name:
                report.warnings.append(f"{name} is the same image as {first_name[key]}: imported once")
                continue
            first_name[key] = name
            if key in existing:
                report.items_existing += 1
                continue
            items.append({
                "project_id": row.id, "blob_sha256": result["sha"], "source": name, "page": page["index"],
                "format": page["format"], "width": page["width"], "height": page["height"], "dtype": page["dtype"],
                "channels": page["channels"], "metadata": page["metadata"], "split": split or "none",
                "position": item_position(row.seed, result["sha"], page["index"]),
            })
    insert_rows(session, ItemRow.__table__, items)
    report.items_added = len(items)
