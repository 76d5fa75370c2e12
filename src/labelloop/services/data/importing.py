"""Import files into a project: all or nothing (no rows and no orphan blobs after an error)."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import select

from labelloop import media
from labelloop.domain import ClassDef, Split, default_colour, shape_to_dict
from labelloop.errors import InvalidInput, LabelloopError
from labelloop.formats.base import ImportEntry
from labelloop.formats.registry import detect_format, get_format
from labelloop.services.labelling import annotations as annotation_service, stack_order
from labelloop.services.projects import ProjectInfo, add_classes, get_project, get_row
from labelloop.services.workspace import Workspace
from labelloop.store.blobs import sha256_file
from labelloop.store.bulk_insert import insert_rows
from labelloop.store.tables import AnnotationRow, BlobRow, ItemRow, PredictionRow

log = logging.getLogger(__name__)
Progress = Callable[[int, "int | None", str], None]
MAX_LISTED = 50
BATCH = 500
STORE_THREADS = 4
CHECK_THREADS = 4
BIG_FILE = 256 << 10  # mean size of the first SIZE_SAMPLE files from which checking them takes several threads
SIZE_SAMPLE = 32
# Files per task of the checking and storing pools: one task per file cost more in futures and GIL hand-offs than
# checking a small image does.
CHUNK = 100


def _no_progress(done: int, total: int | None, message: str) -> None:
    return None


@dataclass
class ImportReport:
    project: str
    format: str
    files: int = 0
    items_added: int = 0
    items_existing: int = 0
    annotations_added: int = 0
    predictions_added: int = 0
    classes_added: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Checked:
    entry: ImportEntry
    sha: str = ""
    pages: list[media.PageInfo] = field(default_factory=list)
    error: str | None = None


def check_name(name: str, where: str) -> str:
    """Relative '/'-separated names only: no absolute paths, no '..', no backslashes.

    Formats check names in their own words (formats/paths.py); this is the one guard every format passes through,
    so a new or third-party format cannot let a traversing name into the store."""
    posix = PurePosixPath(name)
    if not name or name.startswith(("/", "\\")) or "\\" in name or ".." in posix.parts or ":" in posix.parts[0]:
        raise InvalidInput(f"{where}: file name {name!r} is not allowed (it must be a relative path without '..')")
    return str(posix)


def item_position(seed: int, sha: str, page: int) -> int:
    """A fixed pseudo-random place in the labelling order, so the order carries no import bias."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{sha}:{page}".encode()).digest()[:8], "big") >> 1


def _inspect(entry: ImportEntry, project: ProjectInfo, max_pixels: int | None) -> _Checked:
    checked = _Checked(entry)
    try:
        checked.pages = media.verify(entry.path, name=entry.name, max_pixels=max_pixels)
        checked.sha = sha256_file(entry.path)
        if entry.index is not None and entry.index >= len(checked.pages):
            raise InvalidInput(f"{entry.origin or entry.name}: page {entry.index} does not exist ({len(checked.pages)} pages)")
        if entry.shapes and entry.index is None and len(checked.pages) > 1:
            raise InvalidInput(f"{entry.origin or entry.name}: annotations for a file of {len(checked.pages)} pages must name the page")
        page = checked.pages[entry.index or 0]
        if entry.declared_size and tuple(entry.declared_size) != (page.width, page.height):
            w, h = entry.declared_size
            raise InvalidInput(f"{entry.origin or entry.name}: declares {w}×{h} but the image is {page.width}×{page.height}")
        annotation_service.check_shapes(entry.shapes, project, page.width, page.height, entry.origin or entry.name)
        for n, predicted in enumerate(entry.predictions):
            annotation_service.check_shapes(predicted.shapes, project, page.width, page.height,
                                            f"{entry.origin or entry.name}: predictions[{n}]")
    except LabelloopError as exc:
        checked.error = str(exc)
    except OSError as exc:
        checked.error = f"{entry.name}: cannot read the file ({exc.strerror or exc})"
    return checked


def _chunks(values: list, size: int = CHUNK) -> list[list]:
    return [values[start : start + size] for start in range(0, len(values), size)]


def _listing(problems: list[str]) -> str:
    shown = "\n".join(f"  {p}" for p in problems[:MAX_LISTED])
    more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    return shown + more


def _name_numbered_classes(bundle, known: list[str], path: Path) -> None:
    """Files that number classes without naming them take the project's names: number k -> class k."""
    numbers = bundle.class_numbers or {}
    too_high = sorted({n for n in numbers.values() if n > len(known)})
    if too_high:
        raise InvalidInput(f"{path}: the files use class numbers up to {too_high[-1]} but the project has "
                           f"{len(known)} classes ({', '.join(known)})")
    names = {label: known[n - 1] for label, n in numbers.items()}
    for entry in bundle.entries:
        entry.shapes = [replace(s, label=names.get(s.label, s.label)) for s in entry.shapes]
    bundle.classes = [names.get(c, c) for c in bundle.classes]


def import_path(
    workspace: Workspace,
    project_name: str,
    path: str | Path,
    *,
    format: str = "auto",
    split: str | None = None,
    skip_bad: bool = False,
    author: str = "import",
    max_pixels: int | None = None,
    progress: Progress = _no_progress,
) -> ImportReport:
    path = Path(path)
    if not path.exists():
        raise InvalidInput(f"{path}: no such file or folder")
    if split is not None and split not in {s.value for s in Split}:
        raise InvalidInput(f"split {split!r} is not one of train, val, test, none")
    with workspace.session() as session:
        project = get_project(session, project_name)
    fmt = detect_format(path) if format == "auto" else get_format(format)
    if not fmt.can_read:
        raise InvalidInput(f"format {fmt.name!r} can only be exported")
    report = ImportReport(project=project.name, format=fmt.name)
    progress(0, None, f"reading {fmt.name} annotations")
    bundle = fmt.read(path, project.kind)
    report.warnings.extend(bundle.warnings)
    report.files = len(bundle.entries)
    if not bundle.entries:
        raise InvalidInput(f"{path}: no images found for format {fmt.name!r}")

    known = project.class_names()
    if bundle.class_numbers and known:
        _name_numbered_classes(bundle, known, path)
    used = list(dict.fromkeys([*bundle.classes, *(s.label for e in bundle.entries for s in e.shapes)]))
    unknown = [c for c in used if c not in known]
    if unknown and known:
        raise InvalidInput(
            f"{path}: classes not in project {project.name!r}: {', '.join(unknown[:20])}"
            f"{' ...' if len(unknown) > 20 else ''} (the project has: {', '.join(known)})"
        )
    if unknown:  # an empty schema takes the file's classes, in the file's order
        report.classes_added = unknown
        merged = [ClassDef(n, i + 1, default_colour(i)) for i, n in enumerate(unknown)]
        project = ProjectInfo(project.id, project.name, project.kind, merged, project.settings)
    for entry in bundle.entries:
        entry.name = check_name(entry.name, entry.origin or str(path))

    total = len(bundle.entries)
    created: list[str] = []  # blobs this import stored: removed again unless its rows are committed
    committed = False
    try:
        checked = _check_and_store(workspace, project, bundle.entries, created, max_pixels=max_pixels,
                                   skip_bad=skip_bad, progress=progress)
        bad = [c for c in checked if c.error]
        if bad and not skip_bad:
            raise InvalidInput(
                f"{len(bad)} of {total} files cannot be imported; nothing was imported "
                f"(fix them, or import only the readable ones: --skip-bad in the CLI, \"skip unreadable files\" in "
                f"the browser):\n{_listing([c.error for c in bad])}"
            )
        report.skipped = [c.error for c in bad]
        good = [c for c in checked if not c.error]
        # The last chance to cancel; nothing may report progress inside the transaction (SQLite has one writer).
        progress(len(good), len(good), "committing")
        with workspace.session() as session:
            row = get_row(session, project.name, lock=True)
            if report.classes_added:
                add_classes(session, row, report.classes_added)
            _insert_rows(session, row, project, good, report, split=split, author=author)
            if stack_order.uses_order(project.settings):  # new pages (and imported labels) take their places
                session.flush()
                stack_order.refresh(session.connection(), project.id)
        committed = True
    finally:
        if not committed:
            _remove_unreferenced(workspace, created)
    return report


def _check_and_store(workspace, project: ProjectInfo, entries: list[ImportEntry], created: list[str], *,
                     max_pixels: int | None, skip_bad: bool, progress: Progress) -> list[_Checked]:
    """Check every file; meanwhile a pool of threads copies the good ones into the blob store (a copy or an upload
    spends its time in the kernel or the network, outside the GIL, while checking decodes). Once a bad file shows
    up (without skip_bad) nothing more is stored: the import will fail and the caller removes what was."""

    def check(chunk: list[ImportEntry]) -> list[_Checked]:
        return [_inspect(e, project, max_pixels) for e in chunk]

    def store(chunk: list[_Checked]) -> None:
        for c in chunk:
            if workspace.blobs.put_file(c.entry.path, c.sha)[1]:
                created.append(c.sha)  # from the pool's threads: list.append is atomic

    checked: list[_Checked] = []
    submitted: set[str] = set()
    stores = []
    failing = False
    with ThreadPoolExecutor(STORE_THREADS) as storing, ThreadPoolExecutor(_check_threads(entries)) as checking:
        try:
            for results in checking.map(check, _chunks(entries)):
                checked.extend(results)
                if not skip_bad and any(c.error for c in results):
                    failing = True
                    for future, _ in stores:
                        future.cancel()
                if not failing:
                    todo = [c for c in results if not c.error and c.sha not in submitted]
                    submitted.update(c.sha for c in todo)
                    stores.append((storing.submit(store, todo), len(todo)))
                progress(len(checked), len(entries), "checking and storing images")
            if not failing:
                stored = 0
                for future, count in stores:
                    future.result()  # an upload's error stops the import here
                    stored += count
                    progress(stored, len(submitted), "storing images")
        except BaseException:
            checking.shutdown(cancel_futures=True)
            storing.shutdown(cancel_futures=True)  # the copies already running finish, and are in `created`
            raise
    return checked


def _check_threads(entries: list[ImportEntry]) -> int:
    """Threads that check files: several for big images (Pillow, tifffile and pydicom decode them outside the GIL),
    one for small ones, whose checks are mostly Python: 4 threads spent 3× the CPU of one on 32×32 PNGs
    (0.38 vs 0.13 ms each, in GIL hand-offs; docs/benchmarks.md)."""
    sizes = []
    for entry in entries[:SIZE_SAMPLE]:
        try:
            sizes.append(os.stat(entry.path).st_size)
        except OSError:  # reported by the check itself
            continue
    return CHECK_THREADS if sizes and sum(sizes) / len(sizes) >= BIG_FILE else 1


def _insert_rows(session, row, project: ProjectInfo, good: list[_Checked], report: ImportReport, *, split, author) -> None:
    shas = sorted({c.sha for c in good})
    known_blobs: set[str] = set()
    existing: dict[tuple[str, int], int] = {}
    for start in range(0, len(shas), BATCH):
        chunk = shas[start : start + BATCH]
        known_blobs.update(session.scalars(select(BlobRow.sha256).where(BlobRow.sha256.in_(chunk))))
        for sha, page, item_id in session.execute(
            select(ItemRow.blob_sha256, ItemRow.page, ItemRow.id).where(
                ItemRow.project_id == project.id, ItemRow.blob_sha256.in_(chunk)
            )
        ):
            existing[(sha, page)] = item_id
    new_blobs = [{"sha256": c.sha, "size": c.entry.path.stat().st_size} for c in {c.sha: c for c in good}.values() if c.sha not in known_blobs]
    insert_rows(session, BlobRow.__table__, new_blobs)

    new_items: list[dict[str, Any]] = []
    shapes_for_new: list[list[dict[str, Any]]] = []
    revisions: list[tuple[tuple[str, int], list[dict[str, Any]]]] = []  # (item key, shapes) after version 1
    first_name: dict[tuple[str, int], str] = {}
    predicted: list[tuple[tuple[str, int], list[Any]]] = []  # (item key, the file's predictions)
    for c in good:
        pages = c.pages if c.entry.index is None else [c.pages[c.entry.index]]
        shapes = [shape_to_dict(s) for s in c.entry.shapes]
        for page in pages:
            key = (c.sha, page.index)
            if c.entry.predictions:
                predicted.append((key, c.entry.predictions))
            if key in first_name:  # the same picture twice in one import: one item, both labellings kept
                report.warnings.append(f"{c.entry.name} is the same image as {first_name[key]}: imported once"
                                       + ("; its annotations were added as a later revision" if shapes else ""))
                if shapes:
                    revisions.append((key, shapes))
                continue
            first_name[key] = c.entry.name
            if key in existing:
                report.items_existing += 1
                if shapes:
                    revisions.append((key, shapes))
                continue
            new_items.append({
                "project_id": project.id, "blob_sha256": c.sha, "source": c.entry.name, "page": page.index,
                "format": page.format, "width": page.width, "height": page.height, "dtype": page.dtype,
                "channels": page.channels, "metadata": page.metadata,
                "split": (split or (c.entry.split.value if c.entry.split else "none")),
                "position": item_position(row.seed, c.sha, page.index),
            })
            shapes_for_new.append(shapes)
    annotations: list[dict[str, Any]] = []
    ids = insert_rows(session, ItemRow.__table__, new_items, ids=True)
    for item_id, item, shapes in zip(ids, new_items, shapes_for_new):
        existing[(item["blob_sha256"], item["page"])] = item_id
        if shapes:
            annotations.append({"item_id": item_id, "version": 1, "author": author, "state": "submitted",
                                "source": "import", "shapes": shapes})
    report.items_added = len(new_items)
    insert_rows(session, AnnotationRow.__table__, annotations)
    added = len(annotations)
    for key, shapes in revisions:  # rare: re-imports and duplicates; one at a time keeps versions right
        item_id = existing[key]
        current = annotation_service.latest(session, item_id)
        if current is None or current.shapes != shapes:
            session.add(AnnotationRow(item_id=item_id, version=annotation_service.next_version(session, item_id),
                                      author=author, state="submitted", source="import", shapes=shapes))
            session.flush()
            added += 1
    report.annotations_added = added
    _insert_predictions(session, existing, predicted, report)


def _insert_predictions(session, item_ids: dict[tuple[str, int], int], predicted, report: ImportReport) -> None:
    """Predictions a file carries (with their scores) become prediction rows of no model of this workspace."""
    rows = [{"item_id": item_ids[key], "model_id": None, "model_version": p.model_version[:100],
             "shapes": [shape_to_dict(s) for s in p.shapes], "shape_count": len(p.shapes), "score": p.score}
            for key, predictions in predicted for p in predictions]
    insert_rows(session, PredictionRow.__table__, rows)
    report.predictions_added = len(rows)


def _remove_unreferenced(workspace: Workspace, shas: list[str]) -> None:
    if not shas:
        return
    with workspace.session() as session:
        referenced = set(session.scalars(select(BlobRow.sha256).where(BlobRow.sha256.in_(shas))))
    for sha in shas:
        if sha not in referenced:
            workspace.blobs.delete(sha)
