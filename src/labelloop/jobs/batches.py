"""Batch work over items, split into chunks of item ids that any executor can run.

A batch work is a function `(workspace, item_ids, params, ctx) -> summary dict` registered by name (embedding,
prediction). The inline and local-process executors call it once with every id, as before; the Ray executor
(jobs/ray_runner.py) runs it per chunk on the cluster and merges the chunk summaries. Only ids and parameters
travel: a worker opens the workspace (database and blob store) and reads the images itself.

Results are keyed so that running a chunk twice (Ray retries a chunk whose worker died) writes nothing twice: an
embedding is unique per (item, encoder) and replaced as a whole; a prediction replaces the pending prediction of
the same model version on its item (services/assist/predictions.save_predictions)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from labelloop.errors import InvalidInput
from labelloop.jobs.registry import JobContext

EXECUTORS = ("inline", "process", "ray")
CHUNK_ITEMS = 64  # items per Ray task: long enough to hide the ~10 ms a task costs, short enough to retry cheaply

BatchFunction = Callable[[Any, list[int], dict[str, Any], JobContext], dict[str, Any]]
_WORKS: dict[str, BatchFunction] = {}


@dataclass(frozen=True)
class Chunk:
    index: int
    item_ids: tuple[int, ...]


def batch_work(name: str) -> Callable[[BatchFunction], BatchFunction]:
    def register(function: BatchFunction) -> BatchFunction:
        _WORKS[name] = function
        return function

    return register


def get_batch_work(name: str) -> BatchFunction:
    if name not in _WORKS:
        from labelloop.services.jobs import _register_job_kinds  # batch works register beside their job kinds

        _register_job_kinds()
    if name not in _WORKS:
        raise InvalidInput(f"unknown batch work {name!r}; known: {', '.join(sorted(_WORKS)) or 'none'}")
    return _WORKS[name]


def executor_name() -> str:
    """Where batch work runs, from LABELLOOP_EXECUTOR (inline by default)."""
    name = (os.environ.get("LABELLOOP_EXECUTOR") or "inline").strip().lower()
    if name not in EXECUTORS:
        raise InvalidInput(f"LABELLOOP_EXECUTOR={name!r}: choose one of {', '.join(EXECUTORS)}")
    return name


def chunk_items() -> int:
    raw = os.environ.get("LABELLOOP_CHUNK_ITEMS") or str(CHUNK_ITEMS)
    if not raw.isdigit() or int(raw) < 1:
        raise InvalidInput(f"LABELLOOP_CHUNK_ITEMS={raw!r}: give a whole number of items per task, e.g. 64")
    return int(raw)


def split_chunks(item_ids: Sequence[int], size: int) -> list[Chunk]:
    """Chunks of at most `size` ids, in order, each id once (repeated ids are dropped)."""
    if size < 1:
        raise InvalidInput(f"chunk size must be at least 1, got {size}")
    ids = list(dict.fromkeys(item_ids))
    return [Chunk(n, tuple(ids[start : start + size])) for n, start in enumerate(range(0, len(ids), size))]


def merge_summaries(summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One summary from the chunks': counts (ints) add up, nested dicts merge the same way, anything else (a
    model ref, a target, a sentence) is the first chunk's."""
    merged: dict[str, Any] = {}
    for summary in summaries:
        for key, value in summary.items():
            if key not in merged:
                merged[key] = dict(value) if isinstance(value, dict) else value
            elif isinstance(value, bool) or not isinstance(value, (int, dict)):
                continue
            elif isinstance(value, int) and isinstance(merged[key], int):
                merged[key] += value
            elif isinstance(value, dict) and isinstance(merged[key], dict):
                merged[key] = merge_summaries([merged[key], value])
    return merged


def run_batches(workspace, work: str, item_ids: Sequence[int], params: dict[str, Any], ctx: JobContext,
                *, message: str = "working") -> dict[str, Any]:
    """Run a batch work over these items on the configured executor; returns its (merged) summary."""
    function = get_batch_work(work)
    if executor_name() != "ray":
        return function(workspace, list(item_ids), params, ctx)
    from labelloop.jobs.ray_runner import run_chunks

    return run_chunks(workspace, work, split_chunks(item_ids, chunk_items()), params, ctx, message=message)
