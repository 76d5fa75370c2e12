"""Grid pages of the classifier's suggestions (services/assist/grid_pages.py, GET /similar?suggest=true) and the
simulated annotator labelling on them (`simulate --grid N`): one class per page, nearest items first, each item
leased to one person only, clear refusals, and the grid's seconds counted page by page."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select

from labelloop.domain import ClassLabel
from labelloop.errors import InvalidInput
from labelloop.services.assist.grid_pages import suggested_page
from labelloop.services.assist.simulation import plan_simulation, run_simulation
from labelloop.services.assist.simulation.costs import default_cost_model
from labelloop.services.jobs import create_job, run_job
from labelloop.services.labelling import annotations, queue
from labelloop.services.labelling.users import create_user
from labelloop.services.projects import get_project
from labelloop.services.transactions import write_transaction
from labelloop.store.tables import AssignmentRow, ItemRow

from server_support import build_team
from simulate_support import synthetic_project, ws  # noqa: F401 (fixture)

CLASSES = ("ant", "bee", "wasp")


def _truth(workspace) -> dict[int, str]:
    with workspace.session() as session:
        return {item.id: item.source.split("/")[-1].split("-")[0] for item in session.scalars(select(ItemRow))}


def _label(workspace, project, item_ids, truth, user_id=None) -> None:
    with write_transaction(workspace) as session:
        for item_id in item_ids:
            annotations.save(session, project, item_id, [ClassLabel(truth[item_id])], author="me", base_version=None)
            if user_id is not None:
                queue.mark_done(session, project, item_id, user_id)


def _trained(workspace, tmp_path, per_class=20, labelled=5):
    synthetic_project(workspace, tmp_path / "syn", per_class=per_class, classes=CLASSES, spread=0.5)
    truth = _truth(workspace)
    with workspace.session() as session:
        project = get_project(session, "syn")
    first = [i for c in CLASSES for i in sorted(k for k, v in truth.items() if v == c)[:labelled]]
    with workspace.session() as session:
        me = create_user(session, "me").id
    _label(workspace, project, first, truth, me)  # submitted through the queue, as the labelling view does
    job = run_job(workspace, create_job(workspace, "train", {"project": "syn", "model": "classifier", "seed": 0,
                                                             "calibration_folds": 3}))
    assert job.state == "done", job.error
    return project, truth, set(first)


def test_a_page_is_one_suggested_class_nearest_first_and_leased_to_one_person(ws, tmp_path):
    project, truth, labelled = _trained(ws, tmp_path)
    with ws.session() as session:
        alice, bob = create_user(session, "alice").id, create_user(session, "bob").id
    page = suggested_page(ws, project, alice, 9)
    assert len(page.item_ids) == 9 and page.model == "classifier:1" and not labelled & set(page.item_ids)
    assert {page.suggestions[i][0] for i in page.item_ids} == {page.page_class}  # one class per page
    assert all(0 < p <= 1 for _, p in page.suggestions.values())
    assert sum(truth[i] == page.page_class for i in page.item_ids) >= 8  # separable blobs: the model is right
    other = suggested_page(ws, project, bob, 4)
    assert len(other.item_ids) == 4 and not set(other.item_ids) & set(page.item_ids)  # leased: never twice
    with ws.session() as session:
        leased = set(session.scalars(select(AssignmentRow.item_id).where(AssignmentRow.user_id == alice,
                                                                         AssignmentRow.state == "leased")))
    assert leased == set(page.item_ids)
    # alice labels her page; her next page holds none of it, and pages go on until the queue is empty
    _label(ws, project, page.item_ids, truth, alice)
    seen = set(page.item_ids) | set(other.item_ids)
    while (nxt := suggested_page(ws, project, alice, 9)) is not None:
        assert not set(nxt.item_ids) & seen
        seen |= set(nxt.item_ids)
        _label(ws, project, nxt.item_ids, truth, alice)
    assert seen == set(truth) - labelled


def test_without_a_classifier_or_on_other_kinds_nothing_is_claimed_and_the_reason_is_clear(ws, tmp_path):
    synthetic_project(ws, tmp_path / "syn", per_class=5, classes=CLASSES)
    with ws.session() as session:
        project, user = get_project(session, "syn"), create_user(session, "alice").id
    with pytest.raises(InvalidInput, match="no classifier"):
        suggested_page(ws, project, user, 9)
    with pytest.raises(InvalidInput, match="page size"):
        suggested_page(ws, project, user, 5)
    with ws.session() as session:
        assert session.scalar(select(AssignmentRow.id)) is None  # nothing leased


def test_the_api_serves_suggested_pages_and_falls_back_without_a_model(workspace, tmp_path):
    from fastapi.testclient import TestClient

    from labelloop.ml.embeddings import DEFAULT_MODEL
    from labelloop.server import create_app
    from labelloop.services.assist.model_kinds.classifier import DEFAULT_ENCODER
    from labelloop.store.tables import EmbeddingRow

    team = build_team(workspace, tmp_path / "images", items=24, kind="classification", classes=("cat", "dog"),
                      settings={"classifier_features": "pooled"})
    rng = np.random.default_rng(0)
    centres = np.eye(16, dtype=np.float32)[:2] * 3
    group = {item: n % 2 for n, item in enumerate(team.item_ids)}
    # Two groups apart in 2 of the 16 dims, the others constant: with noise in all 16, a classifier of 8 labels
    # (standardised dims) sometimes read the noise dims and put a wrong, unsure suggestion on a page.
    spread = np.zeros(16, np.float32)
    spread[:2] = 0.3
    with workspace.session() as session:
        for item, g in group.items():
            for encoder in {DEFAULT_MODEL, DEFAULT_ENCODER}:
                vector = (centres[g] + rng.normal(0, 1, 16) * spread).astype("<f4")
                session.add(EmbeddingRow(item_id=item, encoder=encoder, dim=16, vector=vector.tobytes()))
    with TestClient(create_app(workspace)) as client:
        url = f"/api/projects/{team.project_id}/similar?size=4&suggest=true"
        plain = client.get(url, headers=team.auth("annotator")).json()  # no model: the similar-images page
        assert plain["similar"] is True and plain["suggestions"] == {} and "no classifier" in plain["reason"]
        assert plain["model"] is None and len(plain["item_ids"]) >= 1
        with workspace.session() as session:
            project = get_project(session, "zoo")
        names = {0: "cat", 1: "dog"}
        _label(workspace, project, team.item_ids[:8], {i: names[group[i]] for i in team.item_ids},
               team.user_ids["manager"])
        job = run_job(workspace, create_job(workspace, "train", {"project": "zoo", "model": "classifier", "seed": 0,
                                                                 "calibration_folds": 2}))
        assert job.state == "done", job.error
        page = client.get(url, headers=team.auth("annotator")).json()
        assert page["model"] == "classifier:1" and len(page["item_ids"]) == 4
        assert {s["label"] for s in page["suggestions"].values()} == {page["page_class"]}
        assert set(map(int, page["suggestions"])) == set(page["item_ids"])
        assert {names[group[i]] for i in page["item_ids"]} == {page["page_class"]}
        other = client.get(url, headers=team.auth("annotator2")).json()
        assert not set(other["item_ids"]) & set(page["item_ids"])
        assert client.get(url, headers=team.auth("outsider")).status_code == 403


def _simulate(workspace, truth, **options):
    defaults = {"strategy": "random", "start": 6, "batch": 9, "until_done": True, "seeds": "0",
                "model_params": {"calibration_folds": 3}}
    plan = plan_simulation(workspace, "syn", truth, **{**defaults, **options})
    return run_simulation(workspace, plan)


def test_simulated_grid_pages_cost_one_look_a_page_and_a_fix_per_wrong_suggestion(ws, tmp_path):
    truth = synthetic_project(ws, tmp_path / "syn", per_class=25, classes=CLASSES, spread=1.2)
    costs = default_cost_model()
    grid = _simulate(ws, truth, grid=9)
    single = _simulate(ws, truth)
    run = grid["runs"][0]
    assert grid["plan"]["grid"] == 9 and run["grid_pages"] > 0
    assert run["unlabelled"] == 0 and run["human_labelled"] + run["auto_accepted"] == run["pool"]
    actions = run["actions"]
    assert actions["grid_page"] == run["grid_pages"]
    assert run["human_seconds"] == pytest.approx(sum(costs.cost(a) * n for a, n in actions.items()))
    on_pages = _page_items(run)  # the rest were labelled from scratch or one by one (rounds without a model)
    assert run["grid_pages"] <= on_pages <= 9 * run["grid_pages"] and actions.get("grid_fix", 0) <= on_pages
    assert run["dataset_quality"] >= single["runs"][0]["dataset_quality"] - 0.02
    assert run["effort_ratio"] > single["runs"][0]["effort_ratio"]  # the page's glance beats item by item
    steps = [b["human_labelled"] - a["human_labelled"] for a, b in zip(run["curve"], run["curve"][1:])]
    assert all(0 < s <= 9 + 8 for s in steps)  # --batch, rounded up to whole pages


def test_a_page_costs_one_look_and_a_fix_per_item_whose_suggestion_is_wrong():
    from labelloop.domain import ProjectKind
    from labelloop.services.assist.simulation.annotators import task_for

    task, costs = task_for(ProjectKind.classification), default_cost_model()
    truths = [[ClassLabel(c)] for c in ("ant", "ant", "bee", "ant")]
    outcomes = task.annotate_page(["ant", "ant", "ant", None], truths)
    assert [o.shapes for o in outcomes] == truths  # the truth is written, whatever was suggested
    assert [o.actions for o in outcomes] == [[("grid_page", 1)], [], [("grid_fix", 1)], [("grid_fix", 1)]]
    assert sum(o.seconds(costs) for o in outcomes) == 2.0 + 2 * 1.5


def _page_items(run) -> int:
    """Items labelled on grid pages: every one not labelled item by item."""
    one_by_one = sum(run["actions"].get(a, 0) for a in ("classify", "confirm_class", "change_class"))
    return run["human_labelled"] - one_by_one


def test_grid_options_are_checked_before_anything_runs(ws, tmp_path):
    truth = synthetic_project(ws, tmp_path / "syn", per_class=10, classes=CLASSES)
    with pytest.raises(InvalidInput, match="--grid 5"):
        plan_simulation(ws, "syn", truth, grid=5)
    with pytest.raises(InvalidInput, match="micro"):
        plan_simulation(ws, "syn", truth, grid=9, model="micro")
