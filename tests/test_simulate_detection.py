"""The detection simulated annotator (services/assist/simulation/detection.py): exact accounting on hand-made boxes,
action by action, box F1, the cost variant with traditionally drawn boxes, and end to end on a raccoon slice."""

from __future__ import annotations

import json
import shutil

import pytest

from labelloop.domain import Box, ProjectKind
from labelloop.errors import InvalidInput
from labelloop.services.assist.simulation.annotators import task_for
from labelloop.services.assist.simulation.costs import CostModel, default_cost_model
from labelloop.services.assist.simulation.detection import DetectionTask

from simulate_support import ws  # noqa: F401 (fixture)

COSTS = default_cost_model()


def _shown(label: str, x0: float, y0: float, x1: float, y1: float, score: float = 0.9, prelabel: bool = True) -> dict:
    return {"type": "box", "label": label, "x0": x0, "y0": y0, "x1": x1, "y1": y1, "score": score,
            "attributes": {"prelabel": prelabel, "threshold": 0.5}}


def _annotate(shown: list[dict], truth: list[Box]) -> tuple[float, list]:
    outcome = DetectionTask().annotate(shown, truth)
    seconds = outcome.seconds(COSTS)
    assert outcome.shapes == truth, "the stored label is the truth's boxes"
    return seconds, outcome.actions


def test_detection_is_registered_for_detection_projects():
    task = task_for(ProjectKind.detection)
    assert isinstance(task, DetectionTask) and task.default_model == "detector"
    assert task.budget_param == "time_budget" and task.auto_accepted([_shown("cat", 0, 0, 10, 10)]) is None


def test_scratch_draws_every_true_box():
    truth = [Box("cat", 0, 0, 10, 10), Box("dog", 20, 20, 40, 40), Box("cat", 50, 50, 60, 60)]
    outcome = DetectionTask().scratch(truth)
    assert outcome.actions == [("draw_box", 3)] and outcome.seconds(COSTS) == 3 * 7.0 and outcome.shapes == truth


def test_each_action_is_priced_exactly():
    cat = Box("cat", 0, 0, 100, 100)
    # right box (IoU 1 >= 0.9): verified, 1.6 s
    assert _annotate([_shown("cat", 0, 0, 100, 100)], [cat]) == (1.6, [("verify_box", 1)])
    # IoU 0.9 exactly still counts as right
    assert _annotate([_shown("cat", 0, 0, 100, 90)], [cat]) == (1.6, [("verify_box", 1)])
    # IoU 0.8 (>= 0.5, < 0.9): adjusted, 4 s
    assert _annotate([_shown("cat", 0, 0, 100, 80)], [cat]) == (4.0, [("adjust_box", 1)])
    # IoU 0.4: no match, so the shown box is deleted (1 s) and the true one drawn (7 s)
    assert _annotate([_shown("cat", 0, 0, 100, 40)], [cat]) == (8.0, [("delete_shape", 1), ("draw_box", 1)])
    # a false box where nothing is: deleted; nothing shown: drawn
    assert _annotate([_shown("cat", 0, 0, 100, 100), _shown("cat", 200, 200, 250, 250)], [cat]) == \
        (2.6, [("verify_box", 1), ("delete_shape", 1)])
    assert _annotate([], [cat]) == (7.0, [("draw_box", 1)])


def test_a_wrong_class_box_gets_its_class_changed_when_that_is_cheaper_than_delete_and_draw():
    cat = Box("cat", 0, 0, 100, 100)
    # in place, wrong class: change_class (3 s) < delete + draw (8 s)
    assert _annotate([_shown("dog", 0, 0, 100, 100)], [cat]) == (3.0, [("change_class", 1)])
    # wrong class and loose (IoU 0.8): change class + adjust (7 s) < delete + draw (8 s)
    assert _annotate([_shown("dog", 0, 0, 100, 80)], [cat]) == (7.0, [("adjust_box", 1), ("change_class", 1)])
    # a cost model where changing a class costs more than redrawing: delete + draw
    dear = CostModel("dear class changes", {**COSTS.seconds, "change_class": 10.0})
    outcome = DetectionTask().annotate([_shown("dog", 0, 0, 100, 100)], [cat])
    assert outcome.seconds(dear) == 8.0 and outcome.actions == [("delete_shape", 1), ("draw_box", 1)]


def test_a_mixed_image_adds_up_action_by_action():
    truth = [Box("cat", 0, 0, 10, 10), Box("cat", 20, 20, 30, 30), Box("dog", 40, 40, 50, 50),
             Box("cat", 60, 60, 70, 70), Box("dog", 80, 80, 90, 90)]
    shown = [_shown("cat", 0, 0, 10, 10, 0.95),  # verify (IoU 1)
             _shown("cat", 20, 20, 30, 32, 0.9),  # adjust (IoU 100/120 = 0.83)
             _shown("cat", 40, 40, 50, 50, 0.8),  # wrong class, in place: change class
             _shown("cat", 100, 100, 110, 110, 0.7),  # nothing there: delete
             _shown("dog", 80, 80, 90, 90, 0.3, prelabel=False)]  # below the threshold: not shown, so drawn
    seconds, actions = _annotate(shown, truth)
    assert actions == [("verify_box", 1), ("adjust_box", 1), ("change_class", 1), ("delete_shape", 1),
                       ("draw_box", 2)]
    assert seconds == pytest.approx(1.6 + 4.0 + 3.0 + 1.0 + 2 * 7.0)


def test_matching_is_greedy_by_score_and_one_to_one():
    cat = Box("cat", 0, 0, 100, 100)
    # two shown boxes on one true box: the higher-scored one takes it (adjust), the other is a duplicate (delete)
    shown = [_shown("cat", 0, 0, 100, 100, 0.6), _shown("cat", 0, 0, 100, 80, 0.9)]
    assert _annotate(shown, [cat]) == (5.0, [("adjust_box", 1), ("delete_shape", 1)])


def test_box_f1_pools_items_and_an_unlabelled_item_misses_every_box():
    task = DetectionTask()
    a, b = Box("cat", 0, 0, 10, 10), Box("cat", 20, 20, 30, 30)
    truth = {1: [a, b], 2: [a]}
    assert task.dataset_quality({1: [a, b], 2: [a]}, truth) == 1.0
    assert task.dataset_quality({1: [a, b]}, truth) == pytest.approx(2 * 2 / (2 * 2 + 1))  # 2 TP, 1 FN
    wrong = Box("dog", 0, 0, 10, 10)
    assert task.dataset_quality({1: [a, wrong], 2: [a]}, truth) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))


def test_the_traditional_box_variant_prices_draws_at_35_seconds():
    (name, variant), = DetectionTask().cost_variants(COSTS).items()
    assert name == "draw_box_traditional" and variant.cost("draw_box") == 35.0
    assert variant.cost("verify_box") == 1.6


def _raccoon_slice(shared_data, folder, count: int):
    source = shared_data / "raccoon"
    if not (source / "annotations").is_dir():
        pytest.skip(f"{source} is missing")
    (folder / "images").mkdir(parents=True)
    (folder / "annotations").mkdir()
    boxes = 0
    for n in range(1, count + 1):
        shutil.copy(source / "images" / f"raccoon-{n}.jpg", folder / "images")
        xml = source / "annotations" / f"raccoon-{n}.xml"
        shutil.copy(xml, folder / "annotations")
        boxes += xml.read_text().count("<object>")
    return boxes


def test_bad_detector_params_are_refused_before_anything_runs(ws, shared_data, tmp_path):
    from labelloop.services.assist.simulation import plan_simulation
    from labelloop.services.data.importing import import_path
    from labelloop.services.projects import create_project

    _raccoon_slice(shared_data, tmp_path / "slice", 3)
    with ws.session() as session:
        create_project(session, "raccoons", "detection", ["raccoon"])
    import_path(ws, "raccoons", tmp_path / "slice" / "images", format="images")
    truth = tmp_path / "slice"
    with pytest.raises(InvalidInput, match="min size"):
        plan_simulation(ws, "raccoons", truth, format="voc", start=1, model_params={"min_size": 10})
    with pytest.raises(InvalidInput, match="--round-budget"):
        plan_simulation(ws, "raccoons", truth, format="voc", start=1, model_params={"time_budget": 5})
    plan = plan_simulation(ws, "raccoons", truth, format="voc", start=1, model_params={"min_size": 128})
    assert plan.task.name == "detection" and plan.model == "detector" and plan.to_dict()["model_params"] == \
        {"min_size": 128}


@pytest.mark.slow
def test_simulate_detection_end_to_end_on_a_raccoon_slice(ws, shared_data, tmp_path, monkeypatch):
    """12 raccoon photos with their VOC boxes, a detector trained 20 s a round: every second is an action of the
    cost model, the pool is labelled by hand (no auto-accept), and the real project is unchanged."""
    from test_simulate import _snapshot
    from typer.testing import CliRunner

    from labelloop.cli.main import app
    from labelloop.services.data.importing import import_path
    from labelloop.services.projects import create_project

    boxes = _raccoon_slice(shared_data, tmp_path / "slice", 12)
    with ws.session() as session:
        create_project(session, "raccoons", "detection", ["raccoon"])
    import_path(ws, "raccoons", tmp_path / "slice" / "images", format="images")
    before = _snapshot(ws)
    monkeypatch.setenv("LABELLOOP_DATA_DIR", str(ws.root))
    answer = CliRunner().invoke(app, [
        "simulate", "raccoons", "--truth", str(tmp_path / "slice"), "--format", "voc",
        "--model", "detector", "--strategy", "least-confidence", "--start", "6", "--batch", "3", "--until-done",
        "--round-budget", "20s", "--seeds", "0", "--set", "min_size=256", "--set", "max_size=416",
        "--set", "eval_period=100", "--set", "calibration_folds=0", "--json"])
    assert answer.exit_code == 0, answer.output
    result = json.loads(answer.stdout)
    (tmp_path / "simulation.json").write_text(answer.stdout)
    assert _snapshot(ws) == before, "the real project is unchanged"
    assert result["truth"]["matched"] == 12 and result["plan"]["task"] == "detection"
    (run,) = result["runs"]
    assert run["pool"] == 12 and run["held_out"] == 0 and run["model_quality"] is None  # < 50 items: none held out
    assert run["scratch_seconds"] == boxes * 7.0, "scratch: every true box drawn at 7 s"
    assert run["human_labelled"] == 12 and run["auto_accepted"] == 0 and run["unlabelled"] == 0
    assert run["dataset_quality"] == 1.0, "every item labelled by the person, with the truth"
    assert set(run["curve"][0]["actions"]) == {"draw_box"}, "the start items are drawn from scratch"
    for point in run["curve"]:
        assert point["human_seconds"] == pytest.approx(sum(COSTS.cost(a) * n for a, n in point["actions"].items()))
    assert [p["human_labelled"] for p in run["curve"]] == [6, 9, 12]
    assert run["effort_ratio"] == pytest.approx(run["scratch_seconds"] / run["human_seconds"], rel=1e-3)
    actions = run["actions"]
    # every true box is either drawn or came from a shown box (verified, adjusted, relabelled)
    assert actions.get("draw_box", 0) + actions.get("verify_box", 0) + actions.get("adjust_box", 0) + \
        actions.get("change_class", 0) == boxes
    variant = run["cost_variants"]["draw_box_traditional"]
    assert variant["scratch_seconds"] == boxes * 35.0
    assert variant["human_seconds"] == pytest.approx(run["human_seconds"] + 28.0 * actions.get("draw_box", 0))
    trained = run["timing"]["rounds"][:-1]  # the last round finds nothing open: no training
    assert len(trained) == 2 and all(t["train_seconds"] > 0 for t in trained)


def test_uncertainty_strategies_read_the_detectors_image_score(ws, tmp_path):
    """A detector prediction's image score is its highest box score: uncertainty = 1 - it, 1 with no box."""
    import numpy as np
    from PIL import Image
    from sqlalchemy import select

    from labelloop.services.assist.models import start_model
    from labelloop.services.assist.predictions import save_predictions
    from labelloop.services.assist.sampling import pool_scores
    from labelloop.services.data.importing import import_path
    from labelloop.services.labelling.strategies import order
    from labelloop.services.projects import create_project, get_project
    from labelloop.store.tables import ItemRow, PredictionRow

    (tmp_path / "images").mkdir()
    for n in range(4):
        Image.fromarray(np.full((8, 8), n * 40, np.uint8)).save(tmp_path / "images" / f"{n}.png")
    with ws.session() as session:
        create_project(session, "boxes", "detection", ["cat"])
    import_path(ws, "boxes", tmp_path / "images", format="images")
    with ws.session() as session:
        project = get_project(session, "boxes")
        ids = list(session.scalars(select(ItemRow.id).order_by(ItemRow.source)))
    model = start_model(ws, project, "detector", params={}, item_ids=[])
    found = {ids[0]: [0.95, 0.2], ids[1]: [0.3], ids[2]: [], ids[3]: [0.6, 0.55]}
    with ws.session() as session:
        save_predictions(session, [PredictionRow(
            item_id=i, model_id=model.id, model_version=model.ref, review_state="pending",
            shapes=[_shown("cat", 0, 0, 4, 4, s, s >= 0.5) for s in scores], score=max(scores, default=None))
            for i, scores in found.items()])
    pool = pool_scores(ws, project, model, ids)
    assert pool.uncertainty.tolist() == pytest.approx([0.05, 0.7, 1.0, 0.4])
    for strategy in ("least-confidence", "margin", "entropy"):
        assert [ids[k] for k in order(strategy, pool)] == [ids[2], ids[1], ids[3], ids[0]]
