"""Micro-models: one small model per class, trained from a handful of examples, chained into one pre-label.

Service and CLI tests run on tiny images whose embeddings are written straight into the cache (well separated
Gaussian blobs per class, as in test_classifier.py); the merge rules run on hand-made outputs.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from labelloop.errors import InvalidInput
from labelloop.ml.micro import box_iou, is_worse, merge_boxes, merge_masks, merge_multiclass, merge_multilabel
from labelloop.services.assist.model_kinds.classifier import DEFAULT_ENCODER
from labelloop.services.data.importing import import_path
from labelloop.services.jobs import create_job, run_job
from labelloop.store.tables import EmbeddingRow, ItemRow, PredictionRow, ProjectRow

from conftest import snapshot


def _done(workspace, kind: str, **params) -> dict:
    job = run_job(workspace, create_job(workspace, kind, params))
    assert job.state == "done", job.error
    return job.result


def _failed(workspace, kind: str, **params) -> str:
    job = run_job(workspace, create_job(workspace, kind, params))
    assert job.state == "failed"
    return job.error


def _write_csv(folder: Path, rows) -> Path:
    with (folder / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "labels", "split"])
        writer.writerows(rows)
    return folder / "labels.csv"


def _project(workspace, make_project, root: Path, counts: dict[str, tuple[int, int]], *, name: str = "syn",
             kind: str = "classification", seed: int = 0, spread: float = 0.35) -> dict[int, str]:
    """Per class (labelled, unlabelled) tiny images with cached embeddings drawn around one centre per class.
    Returns {item id: true class}."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    rows, truth_by_name = [], {}
    for c, (labelled, unlabelled) in counts.items():
        for n in range(labelled + unlabelled):
            file = f"{c}-{n}.png"
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(root / file)
            rows.append((file, c if n < labelled else "", "train"))
            truth_by_name[file] = c
    make_project(name, kind, list(counts))
    import_path(workspace, name, _write_csv(root, rows), format="csv")
    centres = {c: rng.normal(0, 1, 64) for c in counts}
    truth = {}
    with workspace.session() as session:
        project_id = session.scalar(select(ProjectRow.id).where(ProjectRow.name == name))
        for item in session.scalars(select(ItemRow).where(ItemRow.project_id == project_id)):
            vector = (centres[truth_by_name[item.source]] + rng.normal(0, spread, 64)).astype("<f4")
            session.add(EmbeddingRow(item_id=item.id, encoder=DEFAULT_ENCODER, dim=64, vector=vector.tobytes()))
            truth[item.id] = truth_by_name[item.source]
    return truth


def _settings(workspace, name: str = "syn") -> dict:
    with workspace.session() as session:
        return dict(session.scalar(select(ProjectRow).where(ProjectRow.name == name)).settings)


# --- merge rules on hand-made outputs ----------------------------------------------------------------------

def test_multiclass_merge_takes_the_most_likely_passing_class_and_abstains_when_none_passes():
    scores = np.array([[0.9, 0.8, 0.1],    # two pass: the higher calibrated chance wins, not the higher raw score
                       [0.5, 0.5, 0.5],    # none passes: abstain
                       [0.2, 0.1, 0.99]])  # only the third passes
    thresholds = np.array([0.7, 0.7, 0.9])
    chances = np.array([[0.6, 0.95, 0.1], [0.5, 0.5, 0.5], [0.3, 0.2, 0.97]])
    assert merge_multiclass(scores, thresholds, chances).tolist() == [1, -1, 2]
    # a class without a threshold (inf or NaN) never passes, however high its score
    assert merge_multiclass(scores, np.array([np.nan, np.inf, 0.9]), chances).tolist() == [-1, -1, 2]


def test_multilabel_merge_keeps_every_passing_class():
    scores = np.array([[0.9, 0.8, 0.1], [0.1, 0.2, 0.3]])
    assert merge_multilabel(scores, np.array([0.7, 0.7, np.inf])).tolist() == [[True, True, False],
                                                                                [False, False, False]]


def test_box_merge_suppresses_duplicates_class_by_class_and_the_same_object_claimed_twice():
    boxes = np.array([[0, 0, 10, 10],     # cat, best
                      [1, 1, 11, 11],     # cat again (IoU 0.68): a duplicate
                      [20, 20, 30, 30],   # cat elsewhere: kept
                      [0, 0, 10, 10.5],   # dog on (nearly) the cat's box: the same object claimed twice
                      [5, 0, 15, 10],     # dog overlapping the cat at IoU 0.33: another object, kept
                      [40, 40, 50, 50]])  # dog below its threshold: dropped
    classes = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.95, 0.9, 0.8, 0.7, 0.75, 0.3])
    kept = merge_boxes(boxes, classes, scores, np.array([0.5, 0.5]))
    assert kept.tolist() == [0, 2, 4]
    # without cross-class suppression the dog on the cat's box stays too
    assert sorted(merge_boxes(boxes, classes, scores, np.array([0.5, 0.5]), other_class_iou=None).tolist()) == [0, 2, 3, 4]
    assert box_iou(boxes[:1], boxes[1:2])[0, 0] == pytest.approx(81 / 119)


def test_mask_merge_is_the_passing_class_with_the_highest_probability_else_background():
    p = np.zeros((2, 2, 3))
    p[0] = [[0.9, 0.6, 0.1], [0.2, 0.8, 0.0]]
    p[1] = [[0.8, 0.7, 0.2], [0.1, 0.9, 0.0]]
    labels = merge_masks(p, np.array([0.5, 0.75]))
    # (0,1): class 1 passes at 0.6, class 2 does not pass at 0.7 -> 1; (1,1): both pass, class 2 higher -> 2
    assert labels.tolist() == [[1, 1, 0], [0, 2, 0]]


def test_self_validation_rule():
    current = {"ready": True, "average_precision": 0.9}
    assert is_worse({"ready": False, "average_precision": 0.95}, current).startswith("it has no calibrated")
    assert "average precision" in is_worse({"ready": True, "average_precision": 0.8}, current)
    assert is_worse({"ready": True, "average_precision": 0.89}, current) == ""  # within the noise tolerance
    assert is_worse({"ready": False, "average_precision": 0.1}, None) == ""  # a first version is always used


# --- training ------------------------------------------------------------------------------------------------

def test_a_class_below_min_examples_gets_a_reason_while_the_others_train(workspace, make_project, tmp_path):
    _project(workspace, make_project, tmp_path / "syn", {"ant": (12, 30), "bee": (12, 30), "wasp": (3, 20)})
    before = snapshot(workspace)
    result = _done(workspace, "micro-train", project="syn", all_classes=True, min_examples=5)
    classes = result["classes"]
    assert classes["ant"]["trained"] and classes["bee"]["trained"]
    assert classes["ant"]["model"] == "micro:ant:1" and classes["ant"]["in_use"]
    assert not classes["wasp"]["trained"] and "3 labelled example(s)" in classes["wasp"]["reason"]
    assert "fewer than --min-examples 5" in classes["wasp"]["reason"]
    assert len(result["lines"]) == 3 and result["lines"][2].startswith("wasp: not trained")
    # well separated classes with 12 examples each: a calibrated threshold with held-out precision >= target
    assert classes["ant"]["ready"] and classes["ant"]["precision"] >= 0.95
    # --class for the class without enough examples: a clear error and no model
    error = _failed(workspace, "train", project="syn", model="micro", **{"class": "wasp"})
    assert "no micro-model for 'wasp'" in error and "label 2 more" in error
    from labelloop.services.assist.micro import chain_state
    from labelloop.services.projects import get_project

    with workspace.session() as session:
        state = {c["class"]: c for c in chain_state(workspace, get_project(session, "syn"))["classes"]}
    assert state["ant"]["ready"] and state["ant"]["model"] == "micro:ant:1" and state["ant"]["examples"] == 12
    assert not state["wasp"]["ready"] and "fewer than --min-examples" in state["wasp"]["why_not"]
    assert before["items"] == snapshot(workspace)["items"]


def test_each_class_retrains_alone_and_a_worse_retrain_is_kept_but_not_used(workspace, make_project, tmp_path):
    truth = _project(workspace, make_project, tmp_path / "syn", {"ant": (12, 40), "bee": (12, 40), "fly": (12, 40)})
    first = _done(workspace, "micro-train", project="syn", all_classes=True)["classes"]
    assert all(c["trained"] and c["ready"] for c in first.values())
    # Nothing new: --all-classes leaves every class as it is
    again = _done(workspace, "micro-train", project="syn", all_classes=True)["classes"]
    assert not any(c["trained"] for c in again.values()) and "no new labels since micro:ant:1" in again["ant"]["reason"]
    # Wrong labels on many 'ant' items: bee and fly items labelled ant. Only 'ant' has new examples.
    wrong = [(item, c) for item, c in truth.items() if c != "ant"][:24:2]
    from labelloop.domain import ClassLabel
    from labelloop.services.labelling.annotations import latest, save
    from labelloop.services.projects import get_project

    with workspace.session() as session:
        project = get_project(session, "syn")
        for item_id, _ in wrong:
            previous = latest(session, item_id)
            save(session, project, item_id, [ClassLabel("ant")], author="tester",
                 base_version=previous.version if previous else None)
    retrained = _done(workspace, "micro-train", project="syn", all_classes=True)["classes"]
    assert retrained["ant"]["trained"] and retrained["ant"]["model"] == "micro:ant:2"
    assert not retrained["ant"]["in_use"] and "worse than micro:ant:1 (kept, not used)" in retrained["ant"]["self_validation"]
    assert not retrained["fly"]["trained"] or retrained["fly"]["model"] == "micro:fly:2"
    from labelloop.services.assist.micro import chain_state, resolve_chain, set_chain

    set_chain(workspace, "syn", ["micro:ant", "micro:bee"])
    with workspace.session() as session:
        project = get_project(session, "syn")
    models, _ = resolve_chain(workspace, project)
    assert [m.ref for m in models] == ["micro:ant:1", "micro:bee:1"]  # the chain keeps the better ant
    state = {c["class"]: c for c in chain_state(workspace, project)["classes"]}
    assert state["ant"]["model"] == "micro:ant:1" and state["ant"]["not_used"].startswith("micro:ant:2: worse")
    # ...and a version named explicitly is used as named
    set_chain(workspace, "syn", ["micro:ant:2"])
    with workspace.session() as session:
        assert [m.ref for m in resolve_chain(workspace, get_project(session, "syn"))[0]] == ["micro:ant:2"]


def test_the_chain_prelabels_in_one_job_and_records_which_micro_model_made_each_label(workspace, make_project,
                                                                                       tmp_path):
    truth = _project(workspace, make_project, tmp_path / "syn", {"ant": (12, 40), "bee": (12, 40), "fly": (12, 40)})
    _done(workspace, "micro-train", project="syn", all_classes=True)
    from labelloop.services.assist.micro import set_chain

    state = set_chain(workspace, "syn", ["micro:ant", "micro:bee", "micro:fly"])
    assert _settings(workspace)["micro_chain"] == ["micro:ant", "micro:bee", "micro:fly"]
    assert all(c["in_chain"] for c in state["classes"])
    result = _done(workspace, "chain-predict", project="syn")
    assert result["chain"] == ["micro:ant:1", "micro:bee:1", "micro:fly:1"] and result["predictions"] == 120
    assert result["prelabelled"] > 60
    with workspace.session() as session:
        rows = session.scalars(select(PredictionRow).where(PredictionRow.model_version == "chain")).all()
        assert len(rows) == 120
        labelled = [r for r in rows if r.shapes]
        assert all(len(r.shapes) == 1 for r in labelled)  # multi-class: one class per item
        right = [r.shapes[0]["label"] == truth[r.item_id] for r in labelled]
        assert np.mean(right) >= 0.95
        shape = labelled[0].shapes[0]
        assert shape["attributes"]["micro_model"] == f"micro:{shape['label']}:1"
    # running it again replaces the chain's pending pre-labels instead of queueing items twice
    _done(workspace, "chain-predict", project="syn")
    with workspace.session() as session:
        assert len(session.scalars(select(PredictionRow).where(PredictionRow.model_version == "chain")).all()) == 120


def test_multilabel_chain_gives_every_passing_class(workspace, make_project, tmp_path):
    _project(workspace, make_project, tmp_path / "ml", {"sky": (10, 20), "sea": (10, 20)}, name="ml", kind="multilabel")
    result = _done(workspace, "micro-train", project="ml", all_classes=True)
    assert all(c["trained"] for c in result["classes"].values())
    from labelloop.services.assist.micro import set_chain

    set_chain(workspace, "ml", ["micro:sky", "micro:sea"])
    predicted = _done(workspace, "chain-predict", project="ml")
    assert predicted["predictions"] == 40 and predicted["prelabelled"] > 20


def test_a_bad_chain_is_refused_and_changes_nothing(workspace, make_project, tmp_path):
    _project(workspace, make_project, tmp_path / "a", {"ant": (8, 5), "bee": (8, 5)}, name="a")
    _project(workspace, make_project, tmp_path / "b", {"ant": (8, 5), "bee": (8, 5)}, name="b", seed=1)
    _done(workspace, "micro-train", project="a", all_classes=True)
    other = _done(workspace, "micro-train", project="b", all_classes=True)
    from labelloop.services.assist.micro import set_chain
    from labelloop.services.assist.models import list_models
    from labelloop.services.projects import get_project

    set_chain(workspace, "a", ["micro:ant"])
    before = (_settings(workspace, "a"), snapshot(workspace))
    with pytest.raises(InvalidInput, match="project 'a' has no class 'cat'"):
        set_chain(workspace, "a", ["micro:ant", "micro:cat"])
    with workspace.session() as session:
        b_models = {m.ref: m.id for m in list_models(workspace, get_project(session, "b"))}
    assert other["classes"]["bee"]["model"] in b_models
    with pytest.raises(InvalidInput, match="belongs to project 'b', not 'a'"):
        set_chain(workspace, "a", ["micro:ant", str(b_models["micro:bee:1"])])
    with pytest.raises(InvalidInput, match="micro:bee has no version 7"):
        set_chain(workspace, "a", ["micro:bee:7"])
    with pytest.raises(InvalidInput, match="appears twice"):
        set_chain(workspace, "a", ["micro:ant", "micro:ant:1"])
    with pytest.raises(InvalidInput, match="micro:CLASS"):
        set_chain(workspace, "a", ["classifier"])
    assert (_settings(workspace, "a"), snapshot(workspace)) == before
    # a job given a bad chain fails before writing a prediction
    error = _failed(workspace, "chain-predict", project="a", chain=["micro:cat"])
    assert "no class 'cat'" in error
    with workspace.session() as session:
        assert session.scalars(select(PredictionRow)).all() == []


def test_other_bases_and_project_kinds_are_refused_in_words(workspace, make_project, tmp_path):
    _project(workspace, make_project, tmp_path / "syn", {"ant": (8, 5), "bee": (8, 5)})
    assert "--base detector serves detection projects" in _failed(workspace, "micro-train", project="syn",
                                                                  all_classes=True, base="detector")
    assert "choose one of classifier" in _failed(workspace, "micro-train", project="syn", all_classes=True, base="x")
    assert "at least 2 examples" in _failed(workspace, "micro-train", project="syn", all_classes=True, min_examples=1)
    make_project("boxes", "detection", ["car"])
    assert "classification, multilabel projects" in _failed(workspace, "micro-train", project="boxes",
                                                            all_classes=True, base="classifier")
    make_project("cells", "instance", ["cell"])
    assert "serves semantic projects" in _failed(workspace, "micro-train", project="cells", all_classes=True,
                                                 base="unet")


# --- command line ----------------------------------------------------------------------------------------------

def test_cli_train_chain_predict_models(workspace, make_project, tmp_path, capsys):
    from labelloop.cli.main import main

    _project(workspace, make_project, tmp_path / "syn", {"ant": (10, 20), "bee": (10, 20), "wasp": (2, 5)})

    def run(*args: str, code: int = 0) -> str:
        try:
            main([*args, "--data-dir", str(workspace.root)])
            got = 0
        except SystemExit as exc:
            got = exc.code or 0
        captured = capsys.readouterr()
        assert got == code, captured.err + captured.out
        return captured.out if "--json" in args else captured.out + captured.err

    out = run("train", "syn", "--model", "micro", "--all-classes", "--min-examples", "3")
    lines = [line for line in out.splitlines() if line.strip()]
    assert any(line.startswith("ant: micro:ant:1 on 10 examples") for line in lines)
    assert any(line.startswith("wasp: not trained") for line in lines)
    assert "no micro-model for 'wasp'" in run("train", "syn", "--model", "micro", "--class", "wasp", code=1)
    assert "micro:bee:2" in run("train", "syn", "--model", "micro", "--class", "bee")
    assert "has no class 'cat'" in run("chain", "syn", "micro:ant", "micro:cat", code=1)
    chain = json.loads(run("chain", "syn", "micro:ant", "micro:bee", "--json"))
    assert chain["chain"] == ["micro:ant", "micro:bee"]
    predicted = json.loads(run("predict", "syn", "--chain", "--unlabelled", "--json"))
    assert predicted["chain"] == ["micro:ant:1", "micro:bee:2"] and predicted["predictions"] == 45
    assert "pre-labelled" in run("predict", "syn", "--chain", "--items", "1,2")
    assert "pseudo-labels" in run("train", "syn", "--model", "micro", "--class", "ant", "--pseudo-labels")
    models = json.loads(run("models", "syn", "--json"))
    assert {m["ref"] for m in models} >= {"micro:ant:1", "micro:bee:1", "micro:bee:2"}
    table = run("models", "syn")
    assert "micro-models" in table and "wasp" in table


def test_the_chain_scores_every_micro_model_in_one_product_with_the_same_results():
    from labelloop.ml.micro import ChainScorer, MicroModel

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (3, 16))
    y = np.repeat(np.arange(3), 12)
    X = centres[y] + rng.normal(0, 0.5, (36, 16))
    pool = centres[np.repeat(np.arange(3), 20)] + rng.normal(0, 0.5, (60, 16))
    models = [MicroModel(str(k)).fit(X, y == k, pool) for k in range(3)]
    scorer = ChainScorer(models)
    assert scorer.linear_ == [0, 1, 2]  # logistic regressions fold into one matrix product
    expected = np.stack([m.scores(pool) for m in models], axis=1)
    np.testing.assert_allclose(scorer.scores(pool), expected, rtol=1e-9, atol=1e-12)
    where = expected >= 0.5
    chances = scorer.chances(expected, where)
    assert np.isnan(chances[~where]).all()
    for k, model in enumerate(models):
        np.testing.assert_allclose(chances[where[:, k], k], model.chances(expected[where[:, k], k]))


# --- API ---------------------------------------------------------------------------------------------------------

def test_api_lists_each_class_micro_model_state_and_refuses_a_bad_chain(workspace, make_project, tmp_path):
    from fastapi.testclient import TestClient

    from labelloop.server import create_app
    from labelloop.server.background import ThreadExecutor
    from labelloop.services.labelling import users

    from server_support import wait_for_job

    _project(workspace, make_project, tmp_path / "syn", {"ant": (10, 20), "bee": (10, 20), "wasp": (2, 5)})
    with workspace.session() as session:
        admin = users.create_user(session, "admin", "correct horse battery", admin=True)
        token = users.create_token(session, admin.id, "tests")[1]
        project_id = session.scalar(select(ProjectRow.id).where(ProjectRow.name == "syn"))

    class Who:  # wait_for_job asks as the manager; here the admin is everyone
        @staticmethod
        def auth(_):
            return {"Authorization": f"Bearer {token}"}

    headers = Who.auth(None)
    executor = ThreadExecutor(workspace)
    with TestClient(create_app(workspace, executor=executor)) as client:
        assert client.get(f"/api/projects/{project_id}/models", headers=headers).json()["micro_models"] is None
        both = client.post(f"/api/projects/{project_id}/micro-models/train", headers=headers,
                           json={"class": "ant", "all_classes": True})
        assert both.status_code == 400 and "either class or all_classes" in both.json()["detail"]
        job = client.post(f"/api/projects/{project_id}/micro-models/train", headers=headers, json={"all_classes": True})
        assert job.status_code == 202
        done = wait_for_job(client, job.json()["id"], Who)
        assert done["state"] == "done", done
        listed = client.get(f"/api/projects/{project_id}/models", headers=headers).json()
        state = {c["class"]: c for c in listed["micro_models"]["classes"]}
        assert state["ant"]["ready"] and state["ant"]["held_out_precision"] >= 0.95 and state["ant"]["examples"] == 10
        assert not state["wasp"]["ready"] and "fewer than --min-examples 5" in state["wasp"]["why_not"]
        cards = {m["ref"]: m["card"] for m in listed["items"]}
        assert any(f["name"] == "held-out precision at the threshold" for f in cards["micro:ant:1"]["figures"])
        bad = client.put(f"/api/projects/{project_id}/chain", headers=headers, json={"chain": ["micro:ant", "micro:cat"]})
        assert bad.status_code == 400 and "no class 'cat'" in bad.json()["detail"]
        assert "micro_chain" not in _settings(workspace)
        assert client.put(f"/api/projects/{project_id}/chain", headers=headers,
                          json={"chain": ["99999999999999"]}).status_code == 404
        chain = client.put(f"/api/projects/{project_id}/chain", headers=headers, json={"chain": ["micro:ant", "micro:bee"]})
        assert chain.status_code == 200 and chain.json()["chain"] == ["micro:ant", "micro:bee"]
        job = client.post(f"/api/projects/{project_id}/chain/predict", headers=headers, json={})
        done = wait_for_job(client, job.json()["id"], Who)
        assert done["state"] == "done" and done["result"]["predictions"] == 45
    executor.shutdown(wait=True)


# --- pseudo-labels -----------------------------------------------------------------------------------------------

def test_pseudo_labels_train_only_when_they_help_and_never_reach_an_export_of_human_labels(workspace, make_project,
                                                                                           tmp_path):
    from labelloop.services.assist.micro import set_chain
    from labelloop.services.data.exporting import export_project

    truth = _project(workspace, make_project, tmp_path / "syn", {"ant": (12, 40), "bee": (12, 40), "fly": (12, 40)})
    without = _done(workspace, "micro-train", project="syn", all_classes=True, pseudo_labels=True)["classes"]
    assert without["ant"]["pseudo_labels"] == {"requested": True, "available": 0, "positives": 0, "negatives": 0,
                                               "kept": False, "reason": without["ant"]["pseudo_labels"]["reason"]}
    assert "run `predict --chain` first" in without["ant"]["pseudo_labels"]["reason"]
    set_chain(workspace, "syn", ["micro:ant", "micro:bee", "micro:fly"])
    predicted = _done(workspace, "chain-predict", project="syn")
    with_chain = _done(workspace, "micro-train", project="syn", all_classes=True, pseudo_labels=True)
    ant = with_chain["classes"]["ant"]["pseudo_labels"]
    # multi-class: the chain's pre-labels of ant are positives, those of the other classes negatives
    assert ant["available"] == predicted["prelabelled"] and ant["positives"] == predicted["prelabels_per_class"]["ant"]
    assert ant["negatives"] == predicted["prelabelled"] - ant["positives"]
    assert "pseudo-labels" in with_chain["lines"][0]
    from labelloop.services.assist.model_kinds.micro import in_use
    from labelloop.services.projects import get_project

    with workspace.session() as session:
        project = get_project(session, "syn")
    model = in_use(workspace, project, "ant") if ant["kept"] else None
    if model is not None:  # the pseudo-labelled items are recorded apart from the human-labelled ones
        assert len(model.params["pseudo_item_ids"]) == ant["available"] and len(model.item_ids) == 36
    # Wrong pre-labels (every unlabelled bee item said to be an ant): the held-out score turns them off for ant
    with workspace.session() as session:
        for row in session.scalars(select(PredictionRow).where(PredictionRow.model_version == "chain")):
            session.delete(row)
        session.flush()
        labelled = {i for i, in session.execute(select(PredictionRow.item_id))}
        for item_id, c in truth.items():
            if c == "bee" and item_id not in labelled:
                session.add(PredictionRow(item_id=item_id, model_id=None, model_version="chain", review_state="pending",
                                          shapes=[{"type": "class", "label": "ant", "score": 0.99, "attributes": {}}]))
    poisoned = _done(workspace, "micro-train", project="syn", **{"class": "ant"}, pseudo_labels=True)
    ant = poisoned["classes"]["ant"]["pseudo_labels"]
    assert ant["available"] >= 28 and ant["positives"] == ant["available"] and not ant["kept"]
    assert "held-out log loss" in ant["reason"] or "average precision" in ant["reason"]
    assert ant["held_out_log_loss_with"] > ant["held_out_log_loss_without"]
    # An export of human labels holds the 36 labelled items only: no pseudo-label, no pre-label
    summary = export_project(workspace, "syn", tmp_path / "out", format="csv")
    assert summary.items == 36
    rows = list(csv.DictReader((tmp_path / "out" / "labels.csv").open()))
    assert len(rows) == 36 and all(r["labels"] for r in rows)


def test_a_ready_micro_model_without_held_out_items_above_its_threshold_is_reported_not_crashed_on():
    """calibration `auto` can estimate a threshold on the unlabelled items that no held-out item of the class reaches
    (found on clothing10 in a simulation: the whole `--all-classes` run failed on the summary line)."""
    from labelloop.services.assist.micro import _line

    line = _line("shirt", {"trained": True, "ready": True, "threshold": 0.91, "precision": None, "recall": None,
                           "model": "micro:shirt:2", "examples": 12, "self_validation": "first version"})
    assert line == ("shirt: micro:shirt:2 on 12 examples, threshold 0.910, held-out precision n/a (no held-out item "
                    "above the threshold), recall n/a (no held-out item above the threshold); first version")
