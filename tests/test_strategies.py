"""Sampling strategies: each order on hand-made scores, the registry's refusals, and the real queue following the
project's strategy from ranks cached per model version (no scoring per claim)."""

from __future__ import annotations

import numpy as np
import pytest

from labelloop.errors import InvalidInput
from labelloop.services.labelling.strategies import PoolScores, STRATEGIES, order

from simulate_support import synthetic_project, ws  # noqa: F401 (fixture)

PROBA = np.array([
    [0.90, 0.05, 0.05],  # 0: confident
    [0.40, 0.35, 0.25],  # 1: least confident, small margin, highest entropy
    [0.50, 0.49, 0.01],  # 2: smallest margin, but lower entropy than 1
    [0.70, 0.20, 0.10],  # 3
    [0.60, 0.38, 0.02],  # 4
])


def test_the_registry_holds_the_issue_strategies():
    assert list(STRATEGIES) == ["random", "least-confidence", "margin", "entropy", "k-center", "hybrid"]


def test_uncertainty_orders_on_hand_made_probabilities():
    pool = PoolScores(size=5, probabilities=PROBA)
    assert order("least-confidence", pool).tolist() == [1, 2, 4, 3, 0]  # max p: .40 .50 .60 .70 .90
    assert order("margin", pool).tolist() == [2, 1, 4, 3, 0]  # top-2 gaps: .01 .05 .22 .50 .85
    # entropies: 1 (1.08) > 3 (0.80) > 4 (0.75) > 2 (0.74) > 0 (0.39)
    assert order("entropy", pool).tolist() == [1, 3, 4, 2, 0]


def test_uncertainty_vector_is_read_as_it_is_without_probabilities():
    pool = PoolScores(size=4, uncertainty=np.array([0.1, 0.9, 0.5, 0.7]))
    for name in ("least-confidence", "margin", "entropy"):
        assert order(name, pool).tolist() == [1, 3, 2, 0]


def test_ties_break_by_seed_not_by_position():
    pool = PoolScores(size=6, probabilities=np.full((6, 2), 0.5))
    orders = {tuple(order("margin", pool, seed).tolist()) for seed in range(8)}
    assert len(orders) > 1 and all(sorted(o) == list(range(6)) for o in orders)


def test_random_is_a_seeded_permutation():
    pool = PoolScores(size=50)
    assert order("random", pool, 3).tolist() == order("random", pool, 3).tolist()
    assert order("random", pool, 3).tolist() != order("random", pool, 4).tolist()
    assert sorted(order("random", pool, 3).tolist()) == list(range(50))


def test_k_center_picks_the_farthest_point_from_what_is_labelled_each_time():
    # unit directions: labelled at angle 0; pool at 10, 170, 90, 20 degrees
    def at(degrees):
        r = np.radians(degrees)
        return [np.cos(r), np.sin(r)]

    pool = PoolScores(size=4, embeddings=np.array([at(10), at(170), at(90), at(20)]),
                      labelled_embeddings=np.array([at(0)]))
    # 170 is farthest from 0; then 90 (80 from 170, 80 from 0... farther than 10/20); then 20 (70 from 90) before 10
    assert order("k-center", pool).tolist() == [1, 2, 3, 0]


def test_hybrid_spreads_the_least_certain_items_over_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[5, 0], [0, 5], [-5, 0]], float)
    embeddings = np.concatenate([c + rng.normal(0, 0.1, (10, 2)) for c in centres])
    margins = np.linspace(0.01, 0.3, 30)  # cluster 0 holds the 10 least certain items
    proba = np.stack([(1 + margins) / 2, (1 - margins) / 2], axis=1)
    ranked = order("hybrid", PoolScores(size=30, probabilities=proba, embeddings=embeddings), 0)
    first = ranked[:3].tolist()
    assert first[0] == 0  # the least certain item of all comes first
    assert sorted(i // 10 for i in first) == [0, 1, 2]  # then the least certain of each other cluster
    assert order("margin", PoolScores(size=30, probabilities=proba))[:3].tolist() == [0, 1, 2]  # all from cluster 0


def test_unknown_strategy_and_missing_inputs_are_clear_errors():
    with pytest.raises(InvalidInput, match="unknown sampling strategy 'smart'.*random, least-confidence, margin"):
        order("smart", PoolScores(size=3))
    with pytest.raises(InvalidInput, match="needs model scores"):
        order("margin", PoolScores(size=3))
    with pytest.raises(InvalidInput, match="needs embeddings"):
        order("k-center", PoolScores(size=3))


def test_the_queue_follows_the_projects_strategy_from_ranks_cached_per_model_version(ws, tmp_path, monkeypatch):
    from sqlalchemy import select
    from typer.testing import CliRunner

    from labelloop.cli.main import app
    from labelloop.domain import ClassLabel
    from labelloop.services import projects as project_service
    from labelloop.services.assist import sampling
    from labelloop.services.jobs import create_job, run_job
    from labelloop.services.labelling import annotations, strategies
    from labelloop.services.labelling.queue import mark_done, next_item
    from labelloop.services.labelling.users import create_user
    from labelloop.store.tables import ItemRankRow, ItemRow

    synthetic_project(ws, tmp_path / "syn", per_class=30, spread=2.5)  # overlapping classes: margins differ
    with ws.session() as session:
        project = project_service.get_project(session, "syn")
        items = session.execute(select(ItemRow.id, ItemRow.source).order_by(ItemRow.id)).all()
        for item_id, source in items[:8] + items[30:38]:  # 8 ants and 8 bees labelled (accepted: out of the queue)
            annotations.save(session, project, item_id, [ClassLabel(source.split("-")[0])], author="ann",
                             base_version=None, state="accepted")
        user = create_user(session, "ann")
    job = run_job(ws, create_job(ws, "train", {"project": "syn", "model": "classifier", "seed": 0}))
    assert job.state == "done", job.error
    with ws.session() as session:  # shuffled: no ranks written
        assert session.scalar(select(ItemRankRow.id).limit(1)) is None

    monkeypatch.setenv("LABELLOOP_DATA_DIR", str(ws.root))
    result = CliRunner().invoke(app, ["project", "set", "syn", "sampling=margin"])
    assert result.exit_code == 0, result.output
    with ws.session() as session:
        project = project_service.get_project(session, "syn")
        ranks = dict(session.execute(select(ItemRankRow.item_id, ItemRankRow.rank).where(
            ItemRankRow.strategy == "margin", ItemRankRow.model_version == "classifier:1")).all())
    open_ids = sampling.open_items(ws, project)
    assert sorted(ranks) == sorted(open_ids) and len(open_ids) == 60 - 16
    model = sampling.newest_model(ws, project)
    pool = sampling.pool_scores(ws, project, model, open_ids)
    expected = [open_ids[k] for k in order("margin", pool, 0)]

    # a claim reads the cached rank: scoring the pool is not on its path
    def no_scoring(*args, **kwargs):
        raise AssertionError("next scored the pool")

    monkeypatch.setattr(sampling, "pool_scores", no_scoring)
    monkeypatch.setattr(strategies, "order", no_scoring)
    claimed = []
    for _ in range(3):
        lease = next_item(ws, project, user.id)
        claimed.append(lease.item_id)
        with ws.session() as session:
            annotations.save(session, project, lease.item_id, [ClassLabel("ant")], author="ann", base_version=None)
            mark_done(session, project, lease.item_id, user.id)
    assert claimed == expected[:3]

    with ws.session() as session, pytest.raises(InvalidInput, match="choose one of .*margin"):
        project_service.update_settings(session, project_service.get_row(session, "syn"), {"sampling": "smart"})
