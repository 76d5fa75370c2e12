"""The semantic simulated annotator (services/assist/simulation/semantic.py): exact accounting on hand-made masks,
then end to end on a slice of the bundled nuclei sample (as a semantic task)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from labelloop.domain import ClassDef, Mask, Scribble
from labelloop.errors import InvalidInput
from labelloop.geometry import rle
from labelloop.services.assist.simulation.costs import default_cost_model
from labelloop.services.assist.simulation.semantic import START_PIXELS, SemanticTask, outline

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "labelloop" / "sample" / "nuclei"
COSTS = default_cost_model()


def _task() -> SemanticTask:
    return SemanticTask().use_classes([ClassDef("nucleus", 1, "#ff0000"), ClassDef("background", 2, "#000000")])


def _mask(region: np.ndarray, label: str = "nucleus") -> Mask:
    size, counts = rle.encode(region)
    return Mask(label, size, counts)


def _two_squares() -> tuple[np.ndarray, np.ndarray]:
    a = np.zeros((40, 40), bool)
    a[5:15, 5:15] = True
    b = np.zeros((40, 40), bool)
    b[25:35, 25:35] = True
    return a, b


def test_scratch_draws_every_object_and_reads_the_start_scribbles_off_the_masks():
    a, b = _two_squares()
    outcome = _task().scratch([_mask(a | b)])
    assert outcome.actions == [("draw_mask", 2)]
    assert outcome.seconds(COSTS) == 2 * 91.0
    masks = [s for s in outcome.shapes if isinstance(s, Mask)]
    scribbles = {s.label: rle.decode(s).astype(bool) for s in outcome.shapes if isinstance(s, Scribble)}
    assert len(masks) == 1 and np.array_equal(rle.decode(masks[0]).astype(bool), a | b)
    assert scribbles["nucleus"].sum() == 200 and (scribbles["nucleus"] <= (a | b)).all()  # all 200 nucleus pixels
    assert scribbles["background"].sum() == START_PIXELS and not (scribbles["background"] & (a | b)).any()
    again = _task().scratch([_mask(a | b)])
    assert [s.counts for s in again.shapes] == [s.counts for s in outcome.shapes]  # seeded by the truth itself


def test_a_missed_object_costs_one_stroke_and_its_outline():
    a, b = _two_squares()
    shown = [{"type": "mask", "label": "nucleus", "size": [40, 40], "counts": _mask(a).counts}]
    outcome = _task().annotate(shown, [_mask(a | b)])
    seconds = outcome.seconds(COSTS)
    assert outline(b) == 36
    assert outcome.actions == [("scribble_stroke", 1), ("mask_correction_per_px", 36)]
    assert seconds == pytest.approx(2.0 + 36 * 0.05)
    stroke = [rle.decode(s).astype(bool) for s in outcome.shapes if isinstance(s, Scribble)]
    assert len(stroke) == 1 and 0 < stroke[0].sum() <= 200 and (stroke[0] <= b).all()
    label = [rle.decode(s).astype(bool) for s in outcome.shapes if isinstance(s, Mask)]
    assert np.array_equal(label[0], a | b), "the stored label is the truth"


def test_a_right_prelabel_costs_nothing_and_a_hopeless_one_is_redrawn():
    a, b = _two_squares()
    right = [{"type": "mask", "label": "nucleus", "size": [40, 40], "counts": _mask(a | b).counts}]
    outcome = _task().annotate(right, [_mask(a | b)])
    assert outcome.seconds(COSTS) == 0 and outcome.actions == [("scribble_stroke", 0)]
    dot = np.zeros((100, 100), bool)
    dot[50:53, 51:54] = True  # one small object
    speckle = np.zeros((100, 100), bool)
    speckle[::2, ::2] = True  # 2,500 one-pixel blobs: tracing them costs more than drawing the one object
    noisy = [{"type": "mask", "label": "nucleus", "size": [100, 100], "counts": _mask(speckle).counts}]
    outcome = _task().annotate(noisy, [_mask(dot)])
    assert outcome.seconds(COSTS) == 2 * 2.0 + 91.0
    assert outcome.actions == [("scribble_stroke", 2), ("draw_mask", 1)]


def test_no_prelabel_is_labelled_from_scratch():
    a, b = _two_squares()
    assert _task().annotate([], [_mask(a | b)]).actions == [("draw_mask", 2)]


def test_dataset_quality_is_foreground_iou_pooled_and_missing_labels_count_as_background():
    a, b = _two_squares()
    task = _task()
    truth = {1: [_mask(a)], 2: [_mask(b)]}
    assert task.dataset_quality({1: [_mask(a)], 2: [_mask(b)]}, truth) == 1.0
    assert task.dataset_quality({1: [_mask(a)]}, truth) == pytest.approx(0.5)
    half = b.copy()
    half[30:35] = False
    assert task.dataset_quality({1: [_mask(a)], 2: [_mask(half)]}, truth) == pytest.approx(150 / 200)


def test_a_truth_without_masks_is_refused():
    with pytest.raises(InvalidInput, match="masks"):
        _task().scratch([])


def _semantic_sample(folder: Path, count: int) -> Path:
    """The first `count` sample images with semantic masks (nucleus = 255) made from their instance labels."""
    from PIL import Image

    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for image in sorted((SAMPLE / "images").glob("*.png"))[:count]:
        (folder / "images" / image.name).write_bytes(image.read_bytes())
        labels = np.asarray(Image.open(SAMPLE / "labels" / image.name))
        Image.fromarray(((labels > 0) * 255).astype(np.uint8)).save(folder / "masks" / image.name)
    (folder / "classes.txt").write_text("nucleus\n")
    return folder


@pytest.fixture
def nuclei_project(tmp_path):
    from labelloop.services.data.importing import import_path
    from labelloop.services.projects import create_project
    from labelloop.services.workspace import Workspace

    truth = _semantic_sample(tmp_path / "truth", 4)
    ws = Workspace.init(tmp_path / "ws")
    with ws.session() as session:
        create_project(session, "nuclei", "semantic", ["nucleus"])
    import_path(ws, "nuclei", truth / "images", format="images")
    yield ws, truth
    ws.close()


def test_simulate_semantic_end_to_end_on_the_sample(nuclei_project):
    from labelloop.services.assist.simulation import plan_simulation, run_simulation
    from labelloop.services.projects import get_project

    ws, truth = nuclei_project
    plan = plan_simulation(ws, "nuclei", truth, format="masks", start=1, batch=2, seeds="0")
    result = run_simulation(ws, plan)
    (run,) = result["runs"]
    assert run["human_labelled"] == 4 and run["dataset_quality"] == 1.0
    from PIL import Image
    from scipy import ndimage

    nuclei = sum(ndimage.label(np.asarray(Image.open(m)) > 0, structure=np.ones((3, 3)))[1]
                 for m in (truth / "masks").glob("*.png"))
    assert run["scratch_seconds"] == nuclei * 91.0, "scratch: every 8-connected nucleus drawn at 91 s"
    assert run["effort_ratio"] == pytest.approx(run["scratch_seconds"] / run["human_seconds"], rel=1e-3)
    assert run["actions"]["scribble_stroke"] >= 1, "queued items get corrective strokes"
    assert run["curve"][0]["human_labelled"] == 1 and run["curve"][-1]["dataset_quality"] == 1.0
    assert [p["human_seconds"] for p in run["curve"]] == sorted(p["human_seconds"] for p in run["curve"])
    with ws.session() as session:
        assert get_project(session, "nuclei").class_names() == ["nucleus"], "the real project is unchanged"
    again = run_simulation(ws, plan_simulation(ws, "nuclei", truth, format="masks", start=1, batch=2, seeds="0"))
    def strip(r):
        return json.dumps([{k: v for k, v in x.items() if k != "timing"} for x in r["runs"]], sort_keys=True)

    assert strip(again) == strip(result), "the same seeds give the same result"


def test_simulate_route_runs_a_job_and_serves_its_figure(workspace, tmp_path):
    """POST /simulate on the project's own labels: a job with progress whose result has the totals; the PNG served;
    bad input answers an error and starts nothing."""
    from fastapi.testclient import TestClient
    from server_support import build_team, wait_for_job

    from labelloop.server import create_app
    from labelloop.server.background import ThreadExecutor
    from labelloop.services.data.importing import import_path
    from labelloop.services.jobs import list_jobs

    team = build_team(workspace, tmp_path / "images", items=2, kind="semantic", classes=("nucleus",))
    import_path(workspace, "zoo", _semantic_sample(tmp_path / "nuclei", 3), format="masks")
    with TestClient(create_app(workspace, executor=ThreadExecutor(workspace))) as client:
        url = f"/api/projects/{team.project_id}/simulate"
        before = len(list_jobs(workspace))
        for body, who, status in (({"strategy": "nope"}, "manager", 400), ({"start": 99}, "manager", 400),
                                  ({"cost_model": {"draw_mask": -1}}, "manager", 400),
                                  ({"model_params": {"seed": 3}}, "manager", 400),  # --set seed: the seeds are its own
                                  ({"truth": str(tmp_path / "nuclei")}, "manager", 403), ({}, "annotator", 403),
                                  ({"truth": str(tmp_path / "nowhere")}, "admin", 400)):
            answer = client.post(url, json=body, headers=team.auth(who))
            assert answer.status_code == status, (body, answer.text)
            assert answer.json()["detail"]
            if "model_params" in body:
                assert "the simulation sets these itself" in answer.json()["detail"]
        assert len(list_jobs(workspace)) == before, "a refused simulation starts no job"
        started = client.post(url, json={"truth": "labels", "start": 1, "batch": 2, "seeds": [0]},
                              headers=team.auth("manager"))
        assert started.status_code == 202, started.text
        job = wait_for_job(client, started.json()["id"], team, timeout=300)
        assert job["state"] == "done", job
        (run,) = job["result"]["simulation"]["runs"]
        assert run["pool"] == 3 and run["human_labelled"] == 3 and run["dataset_quality"] == 1.0
        assert run["scratch_seconds"] > 0 and run["effort_ratio"] == pytest.approx(
            run["scratch_seconds"] / run["human_seconds"], rel=1e-3)
        assert "effort ratio" in job["result"]["summary"] and job["message"] == job["result"]["summary"]
        png = client.get(f"/api/projects/{team.project_id}/simulations/{job['id']}/effort.png",
                         headers=team.auth("annotator"))
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
        missing = client.get(f"/api/projects/{team.project_id}/simulations/999999/effort.png",
                             headers=team.auth("manager"))
        assert missing.status_code == 404
    assert not list((workspace.root / "simulations").glob("staging-*")), "the exported labels are removed"
