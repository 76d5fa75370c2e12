"""The instance simulated annotator (services/assist/simulation/segmentation.py): exact accounting on hand-made
objects, then end to end with the U-Net (split by watershed) on a slice of DSB2018 nuclei."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labelloop.domain import Mask, Polygon, ProjectKind, shape_to_dict
from labelloop.errors import InvalidInput
from labelloop.geometry import rle
from labelloop.services.assist.simulation.annotators import task_for
from labelloop.services.assist.simulation.costs import CostModel, default_cost_model
from labelloop.services.assist.simulation.segmentation import InstanceTask

from simulate_support import ws  # noqa: F401 (fixture)

COSTS = default_cost_model()
SIZE = 160


def _region(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    region = np.zeros((SIZE, SIZE), bool)
    region[y0:y1, x0:x1] = True
    return region


def _mask(region: np.ndarray, score: float | None = None) -> Mask:
    size, counts = rle.encode(region)
    return Mask("nucleus", size, counts, score=score)


def _shown(*regions: np.ndarray) -> list[dict]:
    return [shape_to_dict(_mask(r, 0.9)) for r in regions]


def _image() -> tuple[list[Mask], list[dict]]:
    """Five cases on one image: a good object, a poor one worth correcting, a speckled one worth redrawing, a false
    one and a missed one."""
    good, poor, speckled = _region(2, 12, 2, 12), _region(20, 30, 20, 30), _region(40, 140, 40, 140)
    missed = _region(145, 155, 2, 12)
    holes = speckled.copy()
    holes[40:140:2, 40:140:2] = False  # 2,500 single-pixel holes: IoU 0.75, a wrong outline of 2,500 px
    truth = [_mask(good), _mask(poor), _mask(speckled), _mask(missed)]
    return truth, _shown(good, _region(20, 30, 20, 27), holes, _region(2, 7, 145, 150))


def test_instance_is_registered_for_instance_projects():
    task = task_for(ProjectKind.instance)
    assert isinstance(task, InstanceTask) and task.default_model == "unet" and task.quality_goal == 0.95


def test_scratch_draws_every_true_object():
    truth, _ = _image()
    outcome = InstanceTask().scratch(truth)
    assert outcome.actions == [("draw_mask", 4)] and outcome.seconds(COSTS) == 4 * 91.0
    assert outcome.shapes == truth


def test_each_case_is_priced_exactly_action_by_action():
    truth, shown = _image()
    outcome = InstanceTask().annotate(shown, truth)
    # good: IoU 1 -> verified 1.6 s; poor: IoU 0.7, a 10x3 wrong strip whose outline is 22 px -> 22 x 0.05 = 1.1 s
    # (less than redrawing it); speckled: 2,500 px x 0.05 = 125 s > 91 s -> redrawn; false -> deleted 1 s;
    # missed -> drawn 91 s
    assert outcome.seconds(COSTS) == pytest.approx(1.6 + 1.1 + 91 + 1 + 91)
    assert outcome.actions == [("verify_box", 1), ("mask_correction_per_px", 22), ("delete_shape", 1),
                               ("draw_mask", 2)]
    assert outcome.shapes == truth, "the stored label is the truth's objects"


def test_the_speckled_object_is_corrected_when_drawing_costs_more():
    truth, shown = _image()
    dear = CostModel("dear drawing", {**COSTS.seconds, "draw_mask": 1000.0})
    outcome = InstanceTask().annotate(shown, truth)
    assert outcome.seconds(dear) == pytest.approx(1.6 + (22 + 2500) * 0.05 + 1 + 1000)
    assert outcome.actions == [("verify_box", 1), ("mask_correction_per_px", 2522), ("delete_shape", 1),
                               ("draw_mask", 1)]


def test_a_right_prelabel_costs_one_verification_per_object_and_none_is_drawn_from_scratch():
    truth, _ = _image()
    regions = [rle.decode(m) for m in truth]
    outcome = InstanceTask().annotate(_shown(*regions), truth)
    assert outcome.actions == [("verify_box", 4)] and outcome.seconds(COSTS) == pytest.approx(4 * 1.6)
    hidden = [{**s, "attributes": {"prelabel": False}} for s in _shown(*regions)]
    assert InstanceTask().annotate(hidden, truth).actions == [("draw_mask", 4)], "pre-labels the view hides"


def test_a_merged_object_matches_one_true_object_and_the_other_is_drawn():
    left, right = _region(10, 30, 10, 30), _region(10, 30, 31, 41)
    truth = [_mask(left), _mask(right)]
    outcome = InstanceTask().annotate(_shown(left | right), truth)
    # the merge matches the larger nucleus (IoU 400/600 < 0.9): its wrong area, the smaller one, is outlined
    # (a 20x10 rectangle: 56 px) and corrected; the smaller one is drawn
    assert outcome.actions == [("mask_correction_per_px", 56), ("draw_mask", 1)]


def test_watershed_pieces_of_one_instance_are_one_object_and_polygons_are_matched_as_masks():
    truth = [_mask(_region(10, 30, 10, 30))]
    top = Polygon("nucleus", (((10, 10), (30, 10), (30, 20), (10, 20)),), score=0.9, attributes={"instance": 1})
    bottom = Polygon("nucleus", (((10, 20), (30, 20), (30, 30), (10, 30)),), score=0.9, attributes={"instance": 1})
    outcome = InstanceTask().annotate([shape_to_dict(top), shape_to_dict(bottom)], truth)
    assert ("delete_shape", 1) not in outcome.actions and ("draw_mask", 1) not in outcome.actions
    assert outcome.actions[0][0] in ("verify_box", "mask_correction_per_px")


def test_instance_f1_pools_items_and_an_unlabelled_item_misses_every_object():
    truth, shown = _image()
    task = InstanceTask()
    assert task.dataset_quality({1: truth, 2: truth}, {1: truth, 2: truth}) == 1.0
    assert task.dataset_quality({1: truth}, {1: truth, 2: truth}) == pytest.approx(2 * 4 / (2 * 4 + 4))
    # the shown objects as a label: good, poor and speckled match (IoU >= 0.5), one false, one missed
    assert task.dataset_quality({1: shown}, {1: truth}) == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))


def test_the_assisted_variant_prices_each_drawn_mask_at_34_seconds():
    (name, variant), = InstanceTask().cost_variants(COSTS).items()
    assert name == "draw_mask_assisted" and variant.cost("draw_mask") == 34.0
    assert variant.cost("verify_box") == COSTS.cost("verify_box")


def test_a_truth_without_masks_is_refused():
    with pytest.raises(InvalidInput, match="instance truth needs masks"):
        InstanceTask().scratch([])


TINY_UNET = {"patch": 64, "batch_size": 2, "steps_per_epoch": 4, "epochs": 3, "max_tile": 128, "overlap": 32,
             "tta": 0, "threads": 1, "decoder_channels": [32, 16, 16, 16, 16], "pretrained": False}


def _dsb_slice(shared_data: Path, folder: Path, count: int) -> int:
    """The first `count` 256x256 DSB2018 images and their label images; returns how many nuclei they hold."""
    source = shared_data / "nuclei_dsb2018"
    if not (source / "instances_index.json").is_file():
        pytest.skip(f"{source} is missing (DSB2018 nuclei live in ../shared/data)")
    index = json.loads((source / "instances_index.json").read_text())
    chosen = sorted(e["image_id"] for e in index if (e["height"], e["width"]) == (256, 256))[:count]
    nuclei = 0
    for sub in ("images", "labels"):
        (folder / sub).mkdir(parents=True)
        for image_id in chosen:
            (folder / sub / f"{image_id}.png").write_bytes((source / sub / f"{image_id}.png").read_bytes())
    for image_id in chosen:
        nuclei += len(np.unique(np.asarray(Image.open(folder / "labels" / f"{image_id}.png")))) - 1
    (folder / "classes.txt").write_text("nucleus\n")
    return nuclei


def _nuclei_project(ws, shared_data, tmp_path, count: int) -> tuple[Path, int]:
    from labelloop.services.data.importing import import_path
    from labelloop.services.projects import create_project

    nuclei = _dsb_slice(shared_data, tmp_path / "slice", count)
    with ws.session() as session:
        create_project(session, "nuclei", "instance", ["nucleus"])
    import_path(ws, "nuclei", tmp_path / "slice" / "images", format="images")
    return tmp_path / "slice", nuclei


def test_bad_unet_params_are_refused_before_anything_runs(ws, shared_data, tmp_path):
    from labelloop.services.assist.simulation import plan_simulation

    truth, _ = _nuclei_project(ws, shared_data, tmp_path, 2)
    with pytest.raises(InvalidInput, match="epoch"):
        plan_simulation(ws, "nuclei", truth, format="instances", start=1, model_params={"epochs": 0})
    with pytest.raises(InvalidInput, match="--round-budget"):
        plan_simulation(ws, "nuclei", truth, format="instances", start=1, model_params={"time_budget": 5})
    plan = plan_simulation(ws, "nuclei", truth, format="instances", start=1, model_params={"epochs": 2})
    assert plan.task.name == "instance" and plan.model == "unet"


@pytest.mark.slow
def test_simulate_instance_end_to_end_on_a_dsb2018_slice(ws, shared_data, tmp_path):
    """6 DSB2018 images, a tiny U-Net (12 steps a round) split by watershed: every second is an action of the cost
    model, every pool item is labelled by the person (no auto-accept), and the real project is unchanged."""
    from test_simulate import _snapshot

    from labelloop.services.assist.simulation import plan_simulation, run_simulation

    truth, nuclei = _nuclei_project(ws, shared_data, tmp_path, 6)
    before = _snapshot(ws)
    plan = plan_simulation(ws, "nuclei", truth, format="instances", start=2, batch=2, until_done=True, seeds="0",
                           model_params=TINY_UNET)
    result = run_simulation(ws, plan)
    assert _snapshot(ws) == before, "the real project is unchanged"
    assert result["truth"]["matched"] == 6 and result["plan"]["task"] == "instance"
    (run,) = result["runs"]
    assert run["pool"] == 6 and run["held_out"] == 0 and run["model_quality"] is None  # < 50 items: none held out
    assert run["scratch_seconds"] == nuclei * 91.0, "scratch: every nucleus drawn at 91 s"
    assert run["human_labelled"] == 6 and run["auto_accepted"] == 0 and run["unlabelled"] == 0
    assert run["dataset_quality"] == 1.0, "every item labelled by the person, with the truth"
    assert [p["human_labelled"] for p in run["curve"]] == [2, 4, 6]
    assert set(run["curve"][0]["actions"]) == {"draw_mask"}, "the start items are drawn from scratch"
    for point in run["curve"]:
        assert point["human_seconds"] == pytest.approx(sum(COSTS.cost(a) * n for a, n in point["actions"].items()))
    actions = run["actions"]
    # every true nucleus is drawn, verified or corrected exactly once (corrections are counted in pixels)
    assert actions.get("draw_mask", 0) + actions.get("verify_box", 0) <= nuclei
    variant = run["cost_variants"]["draw_mask_assisted"]
    assert variant["scratch_seconds"] == nuclei * 34.0
    assert variant["human_seconds"] == pytest.approx(run["human_seconds"] - 57.0 * actions.get("draw_mask", 0))
    trained = run["timing"]["rounds"][:-1]  # the last round finds nothing open: no training
    assert len(trained) == 2 and all(t["train_seconds"] > 0 for t in trained)
