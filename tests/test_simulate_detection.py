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
    """12 raccoon photos with their VOC boxes, a detector trained 20 s a round, each round fine-tuning the last
    (--from-previous): every second is an action of the cost model, the pool is labelled by hand (no auto-accept),
    and the real project is unchanged."""
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
        "--set", "eval_period=100", "--set", "calibration_folds=0", "--from-previous", "--json"])
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
    assert "from" not in trained[0] and trained[1]["from"] == run["curve"][0]["model"], \
        "round 1 fine-tunes round 0's detector"
    assert run["curve"][1]["model"] != run["curve"][0]["model"] and result["plan"]["from_previous"] is True


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


# --- the whole loop with a stand-in detector whose pre-labels are known, so every second can be predicted -------

SIZE = 64
CAT = (8, 8, 40, 40)  # the one true box of every image (a cat; a dog on the dog images)
KINDS = ("verify", "adjust", "relabel", "extra", "hidden", "none")  # image n is of kind n % 6


def _shows(n: int) -> tuple[str, list[dict]]:
    """Image n's true class and what the stand-in detector shows on it, by the action it should cost."""
    x0, y0, x1, y1 = CAT
    kind = KINDS[n % 6]
    truth = "dog" if kind == "relabel" else "cat"
    shown = {"verify": [_shown("cat", x0, y0, x1, y1, 0.9)],
             "adjust": [_shown("cat", x0, y0, x1, y1 - 6, 0.8)],  # IoU 26/32 = 0.81
             "relabel": [_shown("cat", x0, y0, x1, y1, 0.7)],
             "extra": [_shown("cat", x0, y0, x1, y1, 0.95), _shown("cat", 44, 44, 60, 60, 0.6)],
             "hidden": [_shown("cat", x0, y0, x1, y1, 0.3, prelabel=False)],
             "none": []}[kind]
    return truth, shown


class StandInDetector:
    """Trains in no time; shows `_shows(n)` on image n (its file name) whatever it was taught."""

    name = "stand-in-detector"
    description = "test double"
    project_kinds = (ProjectKind.detection,)
    figures = ()
    card_note = ""

    def train(self, workspace, project, params, ctx):
        from labelloop.services.assist.models import start_model, update_model

        model = start_model(workspace, project, self.name, params={"class_names": project.class_names()},
                            item_ids=[])
        return update_model(workspace, model, status="ready")

    def predict(self, workspace, project, model, item_ids, params, ctx):
        from pathlib import PurePosixPath

        from labelloop.services.assist.predictions import save_predictions
        from labelloop.services.data.project_data import item_rows
        from labelloop.store.tables import PredictionRow

        rows = []
        for item in item_rows(workspace, item_ids):
            _, shown = _shows(int(PurePosixPath(item.source).stem))
            rows.append(PredictionRow(item_id=item.id, model_id=model.id, model_version=model.ref, shapes=shown,
                                      score=max((s["score"] for s in shown), default=None), review_state="pending"))
        with workspace.session() as session:
            save_predictions(session, rows)
        return {"predictions": len(rows)}


def _boxes_project(ws, folder, count: int):
    import numpy as np
    from PIL import Image

    from labelloop.services.assist.model_kinds import register_model_kind
    from labelloop.services.data.importing import import_path
    from labelloop.services.projects import create_project

    register_model_kind(StandInDetector)
    (folder / "images").mkdir(parents=True)
    images, annotations = [], []
    x0, y0, x1, y1 = CAT
    for n in range(count):
        Image.fromarray(np.full((SIZE, SIZE), n, np.uint8)).save(folder / "images" / f"{n}.png")
        images.append({"id": n + 1, "file_name": f"{n}.png", "width": SIZE, "height": SIZE})
        label = _shows(n)[0]
        annotations.append({"id": n + 1, "image_id": n + 1, "category_id": 1 if label == "cat" else 2,
                            "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    (folder / "images" / "annotations.json").write_text(json.dumps(
        {"images": images, "annotations": annotations,
         "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}))
    with ws.session() as session:
        create_project(session, "boxes", "detection", ["cat", "dog"])
    import_path(ws, "boxes", folder / "images", format="images")
    return folder / "images" / "annotations.json"


def test_the_loop_prices_each_shown_box_and_least_confidence_takes_empty_images_first(ws, tmp_path):
    """48 images (none held out below 50), 8 of each kind: the human seconds are exactly the start images drawn
    plus each queued image's actions; least-confidence takes first the images the detector showed nothing on."""
    from labelloop.services.assist.simulation import plan_simulation, run_simulation

    truth = _boxes_project(ws, tmp_path / "boxes", 48)
    plan = plan_simulation(ws, "boxes", truth, format="coco", model="stand-in-detector", strategy="least-confidence",
                           compare="random", start=6, batch=6, until_done=True, seeds="0")
    result = run_simulation(ws, plan)
    assert result["truth"]["matched"] == 48
    seconds = {"verify": 1.6, "adjust": 4.0, "relabel": 3.0, "extra": 1.6 + 1.0, "hidden": 7.0, "none": 7.0}
    for run in result["runs"]:
        assert run["pool"] == 48 and run["held_out"] == 0 and run["human_labelled"] == 48
        assert run["dataset_quality"] == 1.0 and run["auto_accepted"] == 0 and run["scratch_seconds"] == 48 * 7.0
        start = [int(name.split(".")[0]) for name in run["start_items"]]
        assert len(start) == 6
        queued = [n for n in range(48) if n not in start]
        assert run["human_seconds"] == pytest.approx(6 * 7.0 + sum(seconds[KINDS[n % 6]] for n in queued))
        assert run["actions"] == {"adjust_box": 8 - sum(KINDS[n % 6] == "adjust" for n in start),
                                  "change_class": 8 - sum(KINDS[n % 6] == "relabel" for n in start),
                                  "delete_shape": 8 - sum(KINDS[n % 6] == "extra" for n in start),
                                  "draw_box": 6 + sum(KINDS[n % 6] in ("hidden", "none") for n in queued),
                                  "verify_box": sum(KINDS[n % 6] in ("verify", "extra") for n in queued)}
        assert run["cost_variants"]["draw_box_traditional"]["human_seconds"] == pytest.approx(
            run["human_seconds"] + 28.0 * run["actions"]["draw_box"])
    lc = next(r for r in result["runs"] if r["strategy"] == "least-confidence")
    drawn = [p["actions"]["draw_box"] for p in lc["curve"]]
    assert drawn[1] - drawn[0] == 6, "the first batch: images with no box shown (uncertainty 1), then hidden (0.7)"
    assert lc["seconds_to_goal"] == lc["human_seconds"], "no auto-accept: box F1 reaches 0.98 only at the end"


def test_model_quality_is_the_map_of_the_shown_boxes_on_the_held_out_images(ws, tmp_path):
    from labelloop.services.assist.simulation import plan_simulation, run_simulation

    truth = _boxes_project(ws, tmp_path / "boxes", 60)
    result = run_simulation(ws, plan_simulation(ws, "boxes", truth, format="coco", model="stand-in-detector",
                                                start=6, batch=12, rounds=1, seeds="1"))
    (run,) = result["runs"]
    assert run["held_out"] == 12 and run["pool"] == 48
    qualities = {p["model_quality"] for p in run["curve"]}
    assert len(qualities) == 1 and 0.3 < qualities.pop() < 1, "the same stand-in each round: one mAP, neither 0 nor 1"


def test_from_previous_is_refused_for_kinds_that_train_anew_and_as_a_set_key(ws, shared_data, tmp_path):
    from labelloop.services.assist.simulation import plan_simulation
    from labelloop.services.data.importing import import_path
    from labelloop.services.projects import create_project

    _raccoon_slice(shared_data, tmp_path / "slice", 3)
    with ws.session() as session:
        create_project(session, "raccoons", "detection", ["raccoon"])
        create_project(session, "photos", "classification", ["raccoon", "other"])
    import_path(ws, "raccoons", tmp_path / "slice" / "images", format="images")
    import_path(ws, "photos", tmp_path / "slice" / "images", format="images")
    with pytest.raises(InvalidInput, match="--from-previous"):
        plan_simulation(ws, "raccoons", tmp_path / "slice", format="voc", start=1, model_params={"from": 1})
    truth = tmp_path / "classes.csv"
    truth.write_text("file,label\n" + "".join(f"raccoon-{n}.jpg,raccoon\n" for n in range(1, 4)))
    with pytest.raises(InvalidInput, match="the classifier kind trains anew"):
        plan_simulation(ws, "photos", truth, format="csv", start=1, from_previous=True)
    plan = plan_simulation(ws, "raccoons", tmp_path / "slice", format="voc", start=1, from_previous=True)
    assert plan.from_previous and plan.to_dict()["from_previous"] is True


def test_fine_tuning_keeps_the_base_versions_split(ws, tmp_path):
    """`train --from V` with a test share: V's test images stay test images and V's training images stay training
    images (the threshold is never chosen on images the network learnt); the share comes from the new images."""
    from types import SimpleNamespace

    from labelloop.services.assist.model_kinds.detector import Detector
    from labelloop.services.assist.models import get_model, start_model, update_model
    from labelloop.services.projects import create_project

    with ws.session() as session:
        project = create_project(session, "boxes", "detection", ["cat"])
    base = start_model(ws, project, "detector", params={"test_item_ids": [3, 7]}, item_ids=list(range(1, 11)))
    update_model(ws, base, status="ready")
    rows = [(SimpleNamespace(id=i), []) for i in range(1, 31)]  # 10 the base saw, 20 new
    params = {"from": base.ref, "test_fraction": 0.2, "seed": 0}
    base = get_model(ws, project, base.ref)
    test = Detector()._test_items(project, rows, params, base)
    assert {3, 7} <= test, "the base version's test images stay held out"
    assert not test & (set(range(1, 11)) - {3, 7}), "the base version's training images are never test images"
    assert len(test - {3, 7}) == 4 and test - {3, 7} <= set(range(11, 31)), "20 % of the 20 new images"
    assert Detector()._test_items(project, rows, params, base) == test, "seeded"
    assert len(Detector()._test_items(project, rows, {"test_fraction": 0.2, "seed": 0})) == 6, "anew: 6 of 30"
