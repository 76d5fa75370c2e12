"""`labelloop simulate`: the accounting action by action, determinism, the real project untouched, clear refusals
before anything runs, and an end-to-end classification run on real photos (hymenoptera)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from labelloop.domain import ClassLabel, ProjectKind
from labelloop.errors import InvalidInput
from labelloop.services.assist.simulation import plan_simulation, run_simulation
from labelloop.services.assist.simulation.annotators import Outcome, task_for
from labelloop.services.assist.simulation.costs import DEFAULT_COSTS, default_cost_model, load_cost_model
from labelloop.store.tables import (AnnotationRow, AssignmentRow, EmbeddingRow, ItemRankRow, ItemRow, ModelRow,
                                    PredictionRow, ProjectRow, QueueItemRow)

from simulate_support import synthetic_project, ws  # noqa: F401 (fixture)


def _shown(label: str) -> dict:
    return {"type": "class", "label": label, "score": 0.97, "attributes": {"prelabel": True}}


def test_the_annotator_takes_the_cheapest_action_and_the_seconds_add_up_exactly():
    task, costs = task_for(ProjectKind.classification), default_cost_model()
    truth = [ClassLabel("bee")]
    cases = [([], "classify", 3.0), ([_shown("bee")], "confirm_class", 1.0), ([_shown("ant")], "change_class", 3.0)]
    total = 0.0
    for shown, action, seconds in cases:
        outcome = task.annotate(shown, truth)
        assert outcome.shapes == [ClassLabel("bee")]
        assert outcome.actions == [(action, 1)]
        assert outcome.seconds(costs) == seconds
        total += outcome.seconds(costs)
    assert total == 7.0
    # a shape shown only as a prediction (below the threshold) is not a pre-label: labelled from scratch
    hidden = {**_shown("bee"), "attributes": {"prelabel": False}}
    assert task.annotate([hidden], truth).actions == [("classify", 1)]
    assert Outcome([], [("mask_correction_per_px", 40), ("scribble_stroke", 2)]).seconds(costs) == 40 * 0.05 + 2 * 2.0


def _snapshot(workspace) -> dict:
    """Every row a simulation could touch in the real workspace, and the blob files."""
    tables = (ProjectRow, ItemRow, AnnotationRow, PredictionRow, ModelRow, AssignmentRow, QueueItemRow, ItemRankRow,
              EmbeddingRow)
    with workspace.session() as session:
        rows = {t.__tablename__: sorted(repr(sorted((c.key, getattr(r, c.key)) for c in t.__table__.columns
                                                    if c.key not in ("vector",)))
                                        for r in session.scalars(select(t))) for t in tables}
    return {**rows, "blob_files": sorted(workspace.blobs)}


def _run(workspace, truth, **options):
    defaults = {"strategy": "margin", "compare": "random", "start": 6, "batch": 6, "rounds": 2, "seeds": "0,1"}
    plan = plan_simulation(workspace, "syn", truth, **{**defaults, **options})
    return run_simulation(workspace, plan)


def _without_timing(result: dict) -> dict:
    result = json.loads(json.dumps(result))
    result.pop("timing")
    for run in result["runs"]:
        run.pop("timing")
    return result


def test_a_simulation_accounts_every_second_is_deterministic_and_leaves_the_project_unchanged(ws, tmp_path):
    workspace = ws
    truth = synthetic_project(workspace, tmp_path / "syn", per_class=30)
    before = _snapshot(workspace)
    first = _run(workspace, truth)
    assert _snapshot(workspace) == before  # labels, predictions, models, queue, ranks and blobs as they were
    assert _without_timing(_run(workspace, truth)) == _without_timing(first)  # same seeds, same JSON

    costs = default_cost_model()
    assert first["plan"]["strategies"] == ["margin", "random"] and first["cost_model"]["name"] == "default"
    assert len(first["runs"]) == 4
    for run in first["runs"]:
        assert run["pool"] == 48 and run["held_out"] == 12  # 60 matched items, 20 % held out
        assert run["scratch_seconds"] == 48 * costs.cost("classify")
        for point in run["curve"]:  # the human time is exactly the actions taken, priced by the cost model
            assert point["human_seconds"] == pytest.approx(sum(costs.cost(a) * n for a, n in point["actions"].items()))
            assert point["human_labelled"] == sum(point["actions"].values())
        assert run["curve"][0]["human_labelled"] == 6  # --start
        steps = [b["human_labelled"] - a["human_labelled"] for a, b in zip(run["curve"], run["curve"][1:])]
        assert all(0 < s <= 6 for s in steps)  # --batch per round, fewer only when fewer were open
        assert run["effort_ratio"] == pytest.approx(run["scratch_seconds"] / run["human_seconds"], abs=1e-3)
        assert 0 <= run["dataset_quality"] <= 1
    assert {"margin", "random"} == set(first["summary"]["strategies"])
    assert first["summary"]["strategies"]["margin"]["effort_ratio"]["n"] == 2
    assert _without_timing(_run(workspace, truth, seeds="1,2")) != _without_timing(first)


def test_until_done_labels_or_auto_accepts_every_item_and_writes_the_png(ws, tmp_path):
    workspace = ws
    truth = synthetic_project(workspace, tmp_path / "syn", per_class=30, spread=0.3)
    result = _run(workspace, truth, rounds=None, until_done=True, seeds="0", compare=None, out=tmp_path / "out")
    run = result["runs"][0]
    assert run["unlabelled"] == 0 and run["human_labelled"] + run["auto_accepted"] == run["pool"]
    assert run["auto_accepted"] > 0 and run["effort_ratio"] > 1  # separable blobs: the model takes over
    assert Path(result["files"]["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(Path(result["files"]["json"]).read_text())["runs"][0]["seed"] == 0


def test_bad_inputs_are_clear_errors_and_nothing_runs(ws, tmp_path):
    workspace = ws
    truth = synthetic_project(workspace, tmp_path / "syn", per_class=30)
    before = _snapshot(workspace)
    other = tmp_path / "other"
    (other / "images").mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (8, 8), "red").save(other / "images" / "stranger.png")
    (other / "truth.csv").write_text("image,labels\nstranger.png,ant\n")
    with pytest.raises(InvalidInput, match="none of its 1 labelled entries matches an item of project 'syn'"):
        plan_simulation(workspace, "syn", other / "truth.csv")
    (other / "truth.csv").write_text("image,labels\nstranger.png,wasp\n")
    with pytest.raises(InvalidInput, match="class\\(es\\) wasp are not classes of project 'syn'"):
        plan_simulation(workspace, "syn", other / "truth.csv")

    negative = {**{a: v for a, (v, _) in DEFAULT_COSTS.items()}, "classify": -1}
    (tmp_path / "negative.json").write_text(json.dumps({"seconds": negative}))
    with pytest.raises(InvalidInput, match="finite numbers of seconds >= 0: classify=-1"):
        plan_simulation(workspace, "syn", truth, cost_model=tmp_path / "negative.json")
    missing = {a: v for a, (v, _) in DEFAULT_COSTS.items() if a != "change_class"}
    (tmp_path / "missing.yaml").write_text("\n".join(f"{a}: {v}" for a, v in missing.items()))
    with pytest.raises(InvalidInput, match="missing cost for change_class"):
        plan_simulation(workspace, "syn", truth, cost_model=tmp_path / "missing.yaml")
    with pytest.raises(InvalidInput, match="unknown sampling strategy 'smart'"):
        plan_simulation(workspace, "syn", truth, strategy="margin", compare="random,smart")
    with pytest.raises(InvalidInput, match="--until-done or --rounds"):
        plan_simulation(workspace, "syn", truth, until_done=True, rounds=2)
    with pytest.raises(InvalidInput, match="--round-budget|--time-budget"):
        plan_simulation(workspace, "syn", truth, round_budget="soon")
    assert _snapshot(workspace) == before


def test_a_cost_file_overrides_every_figure_and_names_the_model(tmp_path):
    seconds = {a: v * 2 for a, (v, _) in DEFAULT_COSTS.items()}
    (tmp_path / "slow.json").write_text(json.dumps({"name": "slow annotator", "seconds": seconds}))
    model = load_cost_model(tmp_path / "slow.json")
    assert model.name == "slow annotator" and model.cost("classify") == 6.0
    with pytest.raises(InvalidInput, match="no such file"):
        load_cost_model(tmp_path / "absent.json")


def test_the_cli_runs_a_simulation_and_prints_its_json(ws, tmp_path, monkeypatch):
    workspace = ws
    from typer.testing import CliRunner

    from labelloop.cli.main import app

    truth = synthetic_project(workspace, tmp_path / "syn", per_class=30)
    monkeypatch.setenv("LABELLOOP_DATA_DIR", str(workspace.root))
    result = CliRunner().invoke(app, ["simulate", "syn", "--truth", str(truth), "--strategy", "entropy", "--start", "6",
                                      "--batch", "10", "--rounds", "1", "--seeds", "3", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["plan"]["strategies"] == ["entropy"] and data["runs"][0]["seed"] == 3
    bad = CliRunner().invoke(app, ["simulate", "syn", "--truth", str(truth), "--strategy", "clever"])
    assert bad.exit_code != 0 and "unknown sampling strategy 'clever'" in str(bad.exception)


@pytest.mark.slow
def test_classification_end_to_end_on_a_hymenoptera_slice(ws, shared_data, tmp_path):
    """Real photos: 30 ants and 30 bees embedded by the classifier's network, until done, margin vs random."""
    workspace = ws
    import shutil

    from labelloop.services.data.importing import import_path
    from labelloop.services.projects import create_project

    source = shared_data / "hymenoptera" / "train"
    if not source.is_dir():
        pytest.skip(f"{source} is missing")
    for label in ("ants", "bees"):
        (tmp_path / "slice" / label).mkdir(parents=True)
        for file in sorted((source / label).glob("*.jpg"))[:30]:
            shutil.copy(file, tmp_path / "slice" / label / file.name)
    with workspace.session() as session:
        create_project(session, "hym", "classification", ["ants", "bees"])
    import_path(workspace, "hym", tmp_path / "slice", format="images")
    plan = plan_simulation(workspace, "hym", tmp_path / "slice", format="folders", strategy="margin",
                           compare="random", start=10, batch=10, until_done=True, seeds=[0])
    result = run_simulation(workspace, plan)
    assert result["truth"]["matched"] == 60
    for run in result["runs"]:
        assert run["unlabelled"] == 0
        assert run["dataset_quality"] >= 0.9
        assert run["effort_ratio"] >= 1


def test_a_chain_of_micro_models_is_simulated_round_by_round_and_its_prelabels_name_their_micro_model(ws, tmp_path):
    """`--model micro`: every round trains each class's micro-model and runs the chain; the separable blobs let it
    auto-accept, the accounting holds, the project stays as it was; a detection project is refused."""
    workspace = ws
    truth = synthetic_project(workspace, tmp_path / "syn", per_class=40, spread=0.3)
    before = _snapshot(workspace)
    result = _run(workspace, truth, model="micro", strategy="random", compare=None, start=20, batch=10, rounds=None,
                  until_done=True, seeds="0")
    assert _snapshot(workspace) == before
    run = result["runs"][0]
    assert result["plan"]["model"] == "micro"
    with_model = [p for p in run["curve"] if p["model"]]
    assert with_model and all(p["model"].startswith("chain of micro:ant:") or p["model"].startswith("chain of micro:bee:")
                              for p in with_model), run["curve"]
    assert run["unlabelled"] == 0 and run["human_labelled"] + run["auto_accepted"] == run["pool"]
    assert run["auto_accepted"] > 0 and run["effort_ratio"] > 1
    assert run["effort_ratio"] == pytest.approx(run["scratch_seconds"] / run["human_seconds"], abs=1e-3)

    from labelloop.services.projects import create_project

    with workspace.session() as session:
        create_project(session, "boxes", "detection", ["ant"])
    with pytest.raises(InvalidInput, match="--model micro: the simulated annotator runs chains of micro-models on "
                                           "classification projects; 'boxes' is a detection project"):
        plan_simulation(workspace, "boxes", truth, model="micro")


def test_a_chain_ranks_the_pool_by_its_own_prelabels_and_gives_diversity_strategies_its_embeddings(ws, tmp_path,
                                                                                                 caplog):
    """Chain pre-labels carry no model id: the pool scorer of micro-models reads the chain's item scores (for the
    uncertainty strategies) and the embeddings its micro-models read (k-center, hybrid), for the simulator's chain
    and for a project whose newest model is a micro-model alike."""
    import numpy as np

    from labelloop.domain import ClassLabel
    from labelloop.jobs.registry import JobContext
    from labelloop.services.assist.micro import predict_chain, resolve_chain, train_micro
    from labelloop.services.assist.sampling import newest_model, pool_scores, refresh_ranks
    from labelloop.services.assist.simulation.annotators import Chain
    from labelloop.services.labelling import annotations
    from labelloop.services.projects import get_project, get_row, update_settings

    workspace = ws
    synthetic_project(workspace, tmp_path / "syn", per_class=30, spread=0.5)
    with workspace.session() as session:
        project = get_project(session, "syn")
        items = sorted(session.scalars(select(ItemRow)), key=lambda r: r.id)
        labelled = [r for r in items if int(Path(r.source).stem.split("-")[1]) < 15]
        for row in labelled:
            annotations.save(session, project, row.id, [ClassLabel(Path(row.source).stem.split("-")[0])],
                             author="ann", base_version=None)
    ctx = JobContext(0, {}, lambda *a: None, lambda line: None)
    train_micro(workspace, project, {"all_classes": True, "seed": 0}, ctx)
    models, _ = resolve_chain(workspace, project, ["micro:ant", "micro:bee"])
    open_ids = [r.id for r in items if r not in labelled]
    predict_chain(workspace, project, models, open_ids, ctx)
    with workspace.session() as session:
        chain_scores = dict(session.execute(select(PredictionRow.item_id, PredictionRow.score)).all())
    labelled_ids = [r.id for r in labelled]
    pool = pool_scores(workspace, project, Chain(tuple(models)), open_ids, labelled_ids)
    assert pool.uncertainty.tolist() == pytest.approx([1 - chain_scores[i] for i in open_ids])
    assert len(set(pool.uncertainty.round(4))) > 1  # a real order, not a constant
    assert pool.embeddings.shape == (len(open_ids), 32) and pool.labelled_embeddings.shape == (len(labelled_ids), 32)
    newest = newest_model(workspace, project)  # what the real queue ranks by when no model is given
    assert newest.kind.startswith("micro:")
    same = pool_scores(workspace, project, newest, open_ids, labelled_ids)
    assert np.array_equal(same.uncertainty, pool.uncertainty)
    with workspace.session() as session:
        update_settings(session, get_row(session, "syn"), {"sampling": "k-center"})
        project = get_project(session, "syn")
    with caplog.at_level("INFO", logger="labelloop.services.assist.sampling"):
        ranked = refresh_ranks(workspace, project, seed=0)  # crashed before: a micro-model's ref holds two ':'
    assert ranked["strategy"] == "k-center" and ranked["model"] == newest.ref
    assert "falls back" not in caplog.text  # k-center had its embeddings
