"""Embeddings per item and encoder, cached in the database: only items without one are computed."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import delete, select

from labelloop import media
from labelloop.errors import InvalidInput
from labelloop.jobs.batches import batch_work, executor_name, run_batches
from labelloop.jobs.registry import JobContext, job_kind
from labelloop.ml.pretrained import DEFAULT_MODEL
from labelloop.services.data.project_data import item_pages, item_rows
from labelloop.services.projects import ProjectInfo, get_project
from labelloop.store.tables import EmbeddingRow, ItemRow

log = logging.getLogger(__name__)
BATCH = 16  # images per forward pass: the fastest on 2 CPU cores with channels-last (docs/benchmarks.md)
Progress = Callable[[int, int | None, str], None]


@dataclass
class EmbeddingSummary:
    encoder: str
    items: int  # items of the project
    computed: int  # embeddings computed now
    cached: int  # found in the cache
    seconds: float  # wall time of the computation (decode + network)
    images_per_second: float | None
    tasks: int | None = None  # Ray tasks that computed them (None: computed here)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def encoder_key(model_name: str = DEFAULT_MODEL, weights: str | Path | None = None) -> str:
    """The cache key of an encoder: its timm name, plus a hash of the weights file when one is given."""
    if weights is None:
        return model_name
    path = Path(weights)
    if not path.is_file():
        raise InvalidInput(f"weights file {path} does not exist")
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"{model_name}@{digest.hexdigest()[:16]}"


def cached_ids(workspace, item_ids: Sequence[int], encoder: str) -> set[int]:
    found: set[int] = set()
    for start in range(0, len(item_ids), 500):
        chunk = list(item_ids[start : start + 500])
        with workspace.session() as session:
            found.update(session.scalars(select(EmbeddingRow.item_id).where(
                EmbeddingRow.encoder == encoder, EmbeddingRow.item_id.in_(chunk))))
    return found


def load_embeddings(workspace, item_ids: Sequence[int], encoder: str) -> np.ndarray:
    """N×D float32 in the order of `item_ids`; every item must have been embedded."""
    vectors: dict[int, np.ndarray] = {}
    for start in range(0, len(item_ids), 500):
        chunk = list(item_ids[start : start + 500])
        with workspace.session() as session:
            for item_id, vector in session.execute(select(EmbeddingRow.item_id, EmbeddingRow.vector).where(
                    EmbeddingRow.encoder == encoder, EmbeddingRow.item_id.in_(chunk))):
                vectors[item_id] = np.frombuffer(vector, "<f4")
    missing = [i for i in item_ids if i not in vectors]
    if missing:
        raise InvalidInput(f"{len(missing)} items have no {encoder} embedding yet (e.g. item {missing[0]}); "
                           f"run `labelloop embed PROJECT --model {encoder.split('@')[0]}` first")
    if not item_ids:
        return np.zeros((0, 0), np.float32)
    return np.stack([vectors[i] for i in item_ids])


def _crop(workspace, item: ItemRow, size: int) -> np.ndarray:
    from labelloop.ml.embeddings import centre_crop

    return centre_crop(media.read(workspace.blobs.local_path(item.blob_sha256), item.page, name=item.source), size)


_loaded: dict[str, Any] = {}  # encoder key -> loaded Embedder: a Ray worker runs many chunks with one network


def _embedder(model_name: str, weights: str | Path | None, encoder: str):
    from labelloop.ml.embeddings import Embedder

    if encoder not in _loaded:
        _loaded.clear()  # one network at a time per process
        _loaded[encoder] = Embedder(model_name, weights).load()
    return _loaded[encoder]


def embed_items(workspace, item_ids: Sequence[int], *, model_name: str = DEFAULT_MODEL,
                weights: str | Path | None = None, batch_size: int = BATCH,
                progress: Progress = lambda d, t, m: None) -> EmbeddingSummary:
    """Compute the missing embeddings of these items. The network (and its weights) loads before anything is
    written; each batch is committed on its own, so a cancelled run keeps what it computed."""
    encoder = encoder_key(model_name, weights)
    ids = list(dict.fromkeys(item_ids))
    cached = cached_ids(workspace, ids, encoder)  # once: inside the comprehension it ran a query per item
    todo = [i for i in ids if i not in cached]
    summary = EmbeddingSummary(encoder, len(ids), 0, len(ids) - len(todo), 0.0, None)
    if not todo:
        return summary
    embedder = _embedder(model_name, weights, encoder)
    progress(0, len(todo), f"embedding with {model_name}")
    started = time.perf_counter()
    rows = list(item_rows(workspace, todo))
    batches = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        # Decode the next batch while the network runs on this one.
        pending = pool.submit(lambda b: [_crop(workspace, r, embedder.image_size) for r in b], batches[0])
        for n, batch in enumerate(batches):
            crops = pending.result()
            if n + 1 < len(batches):
                pending = pool.submit(lambda b: [_crop(workspace, r, embedder.image_size) for r in b], batches[n + 1])
            vectors = embedder.embed_crops(crops).astype("<f4")
            with workspace.session() as session:
                session.execute(delete(EmbeddingRow).where(EmbeddingRow.encoder == encoder,
                                                           EmbeddingRow.item_id.in_([r.id for r in batch])))
                session.add_all(EmbeddingRow(item_id=r.id, encoder=encoder, dim=int(v.shape[0]), vector=v.tobytes())
                                for r, v in zip(batch, vectors))
            summary.computed += len(batch)
            progress(summary.computed, len(todo), f"embedding with {model_name}")
    summary.seconds = round(time.perf_counter() - started, 3)
    summary.images_per_second = round(summary.computed / summary.seconds, 2) if summary.seconds else None
    log.info("embedded %d items with %s in %.1f s", summary.computed, encoder, summary.seconds)
    return summary


def project_item_ids(workspace, project: ProjectInfo) -> list[int]:
    ids = [i for page in item_pages(workspace, project.id, ids_only=True) for i in page]
    if not ids:
        raise InvalidInput(f"project {project.name!r} has no items to embed; import some first")
    return ids


def embed_project(workspace, project: ProjectInfo, **kwargs) -> EmbeddingSummary:
    return embed_items(workspace, project_item_ids(workspace, project), **kwargs)


@batch_work("embed")
def embed_batch(workspace, item_ids: list[int], params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    return embed_items(workspace, item_ids, model_name=params.get("encoder") or DEFAULT_MODEL,
                       weights=params.get("weights"), batch_size=int(params.get("batch_size") or BATCH),
                       progress=ctx.progress).to_dict()


def embed_on_executor(workspace, item_ids: Sequence[int], ctx: JobContext, *, model_name: str = DEFAULT_MODEL,
                      weights: str | Path | None = None, batch_size: int = BATCH) -> EmbeddingSummary:
    """`embed_items` inside a job, on the executor LABELLOOP_EXECUTOR names: here, or the missing embeddings as
    chunks of Ray tasks (the cache is read once, here; each worker loads the network once)."""
    encoder = encoder_key(model_name, weights)  # a bad weights file fails here, before any task starts
    ids = list(dict.fromkeys(item_ids))
    if executor_name() != "ray":
        return embed_items(workspace, ids, model_name=model_name, weights=weights, batch_size=batch_size,
                           progress=ctx.progress)
    todo = [i for i in ids if i not in cached_ids(workspace, ids, encoder)]
    summary = EmbeddingSummary(encoder, len(ids), 0, len(ids) - len(todo), 0.0, None)
    if todo:
        params = {"encoder": model_name, "weights": str(weights) if weights else None, "batch_size": batch_size}
        done = run_batches(workspace, "embed", todo, params, ctx, message=f"embedding with {encoder}")
        summary.computed, summary.seconds = done["computed"], done["wall_seconds"]
        summary.images_per_second = round(summary.computed / summary.seconds, 2) if summary.seconds else None
        summary.tasks = done["tasks"]
    return summary


@job_kind("embed")
def embed_job(workspace, ctx: JobContext) -> dict[str, Any]:
    p = ctx.params
    with workspace.session() as session:
        project = get_project(session, p["project"])
    summary = embed_on_executor(workspace, project_item_ids(workspace, project), ctx,
                                model_name=p.get("encoder") or DEFAULT_MODEL, weights=p.get("weights"),
                                batch_size=int(p.get("batch_size") or BATCH))
    ctx.log(f"{summary.computed} embeddings computed, {summary.cached} cached ({summary.encoder})"
            + (f" by {summary.tasks} Ray tasks" if summary.tasks else ""))
    return {**summary.to_dict(), "executor": "ray" if executor_name() == "ray" else "inline"}
