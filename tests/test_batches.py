"""Batch work split into chunks (jobs/batches.py) and the Ray settings' checks that need no cluster."""

from __future__ import annotations

import pytest

from labelloop.errors import InvalidInput
from labelloop.jobs.batches import chunk_items, executor_name, merge_summaries, run_batches, split_chunks
from labelloop.jobs.registry import JobContext


def test_chunks_keep_the_order_and_each_id_once():
    chunks = split_chunks([5, 3, 5, 9, 1, 3, 7], 2)
    assert [c.item_ids for c in chunks] == [(5, 3), (9, 1), (7,)]
    assert [c.index for c in chunks] == [0, 1, 2]
    assert split_chunks([], 4) == []
    with pytest.raises(InvalidInput, match="at least 1"):
        split_chunks([1], 0)


def test_chunk_summaries_add_counts_and_keep_the_rest():
    merged = merge_summaries([
        {"predictions": 2, "model": "pixel-rf:1", "per_class": {"a": 1}, "target_precision": 0.95, "flag": True},
        {"predictions": 3, "model": "pixel-rf:1", "per_class": {"a": 2, "b": 1}, "target_precision": 0.95,
         "flag": False},
    ])
    assert merged == {"predictions": 5, "model": "pixel-rf:1", "per_class": {"a": 3, "b": 1},
                      "target_precision": 0.95, "flag": True}


def test_bad_settings_name_the_variable(monkeypatch):
    monkeypatch.setenv("LABELLOOP_EXECUTOR", "spark")
    with pytest.raises(InvalidInput, match="LABELLOOP_EXECUTOR='spark'"):
        executor_name()
    monkeypatch.setenv("LABELLOOP_EXECUTOR", "Ray ")
    assert executor_name() == "ray"
    monkeypatch.delenv("LABELLOOP_EXECUTOR")
    assert executor_name() == "inline"
    monkeypatch.setenv("LABELLOOP_CHUNK_ITEMS", "0")
    with pytest.raises(InvalidInput, match="LABELLOOP_CHUNK_ITEMS"):
        chunk_items()


@pytest.mark.parametrize("address", ["nonsense", "10.0.0.5", "host:port"])
def test_a_malformed_ray_address_is_refused_before_connecting(address):
    from labelloop.jobs.ray_runner import _check_reachable

    with pytest.raises(InvalidInput, match="LABELLOOP_RAY_ADDRESS"):
        _check_reachable(address)


def test_inline_batch_work_runs_once_over_every_item(monkeypatch):
    from labelloop.jobs import batches

    seen = []

    @batches.batch_work("test-echo")
    def _echo(workspace, item_ids, params, ctx):
        seen.append(list(item_ids))
        return {"items": len(item_ids)}

    monkeypatch.delenv("LABELLOOP_EXECUTOR", raising=False)
    ctx = JobContext(1, {}, progress=lambda d, t, m: None, log=lambda line: None)
    assert run_batches(None, "test-echo", [4, 2, 9], {}, ctx) == {"items": 3}
    assert seen == [[4, 2, 9]]
    with pytest.raises(InvalidInput, match="unknown batch work"):
        run_batches(None, "no-such-work", [1], {}, ctx)
