"""Quality checks: label errors (cleanlab on cross-fitted probabilities), duplicates and leakage, outliers and
bad images, spot-checks of auto-accepted pre-labels, and the suspects queue through services, CLI and API."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter
from sqlalchemy import select

from labelloop.errors import InvalidInput, NotFound
from labelloop.services.data.importing import import_path
from labelloop.services.jobs import create_job, run_job
from labelloop.services.assist.model_kinds.classifier import DEFAULT_ENCODER
from labelloop.services.projects import get_project
from labelloop.store.tables import EmbeddingRow, ItemRow, SuspectRow

from conftest import SHARED_DATA, snapshot

HYMENOPTERA = SHARED_DATA / "hymenoptera"
CLOTHING10 = SHARED_DATA / "clothing10" / "images"


def _done(workspace, kind: str, **params) -> dict:
    job = run_job(workspace, create_job(workspace, kind, params))
    assert job.state == "done", job.error
    return job.result


def _write_csv(folder: Path, rows) -> Path:
    with (folder / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "labels", "split"])
        writer.writerows(rows)
    return folder / "labels.csv"


def _photos(n: int) -> list[Path]:
    if not HYMENOPTERA.is_dir():
        pytest.skip(f"hymenoptera not found at {HYMENOPTERA}")
    return sorted((HYMENOPTERA / "train" / "ants").glob("*.jpg"))[:n]


# --- pure parts -------------------------------------------------------------------------------------------


def test_spot_check_interval_covers_the_true_precision_at_its_confidence():
    from labelloop.ml.spot_checks import clopper_pearson, sample_size

    rng = np.random.default_rng(0)
    for precision in (0.8, 0.95, 0.99):
        n = sample_size(precision, 0.03, 0.9)
        low, high = clopper_pearson(round(precision * n), n, 0.9)
        assert (high - low) / 2 <= 0.03 + 1e-9
        assert sample_size(precision, 0.03, 0.9, population=20) == 20
        covered = 0
        for _ in range(400):
            correct = int(rng.binomial(n, precision))
            low, high = clopper_pearson(correct, n, 0.9)
            covered += low <= precision <= high
        assert covered / 400 >= 0.88  # exact intervals are conservative: at least the stated 90 %, less noise
    assert sample_size(0.5, 0.03, 0.9) > sample_size(0.95, 0.03, 0.9)  # a proportion near 1 needs fewer reviews


def test_spot_check_verdict_and_raised_threshold():
    from labelloop.ml.spot_checks import judge, raised_threshold

    assert judge("ants", 80, 100, 0.95).verdict == "below"
    assert judge("ants", 100, 100, 0.95, 0.9).verdict == "meets"
    assert judge("ants", 19, 20, 0.95).verdict == "undecided"
    scores = np.array([0.99, 0.98, 0.97, 0.9, 0.85, 0.8])
    correct = np.array([1, 1, 1, 0, 1, 0], bool)
    assert raised_threshold(scores, correct, 0.95, 0.7) == 0.97
    assert raised_threshold(scores, ~correct, 0.95, 0.7) is None


def test_hamming_pairs_match_brute_force_and_neighbours_match_exact_search():
    from labelloop.ml.duplicates import hamming_pairs
    from labelloop.ml.neighbours import approximate_neighbours, exact_neighbours, recall_at_k

    rng = np.random.default_rng(1)
    base = rng.integers(-(1 << 62), 1 << 62, 300, dtype=np.int64)
    flips = np.array([sum(1 << int(b) for b in rng.choice(63, d, replace=False)) for d in rng.integers(0, 9, 300)])
    hashes = np.concatenate([base, base ^ flips])
    brute = {(i, j) for i in range(600) for j in range(i + 1, 600)
             if bin(int(hashes[i] ^ hashes[j]) & ((1 << 64) - 1)).count("1") <= 6}
    assert {(i, j) for i, j, _ in hamming_pairs(hashes, 6)} == brute
    X = rng.normal(size=(2000, 32)).astype(np.float32)
    exact, similarity = exact_neighbours(X, 10)
    assert (exact != np.arange(2000)[:, None]).all() and (np.diff(similarity, axis=1) <= 1e-6).all()
    approximate, _ = approximate_neighbours(X, 10)
    assert recall_at_k(approximate, exact) >= 0.95



def test_the_neighbour_cache_searches_once_per_content_and_hands_each_reader_the_first_k(monkeypatch):
    from labelloop.ml import neighbours

    X = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
    builds = []
    exact = neighbours.exact_neighbours
    monkeypatch.setattr(neighbours, "exact_neighbours", lambda X, k: builds.append(k) or exact(X, k))
    cache = neighbours.NeighbourCache(10)
    for k, vectors in ((5, X), (8, X.copy()), (10, X[::-1][::-1])):  # another array of the same content shares
        index, similarity = cache.neighbours(vectors, k)
        np.testing.assert_array_equal(index, exact(X, k)[0])
        np.testing.assert_allclose(similarity, exact(X, k)[1])
    assert builds == [10]
    assert cache.neighbours(X, 12)[0].shape == (300, 12) and builds == [10, 12]  # more than searched: again
    assert cache.neighbours(X + 1, 5)[0].shape == (300, 5) and builds == [10, 12, 10]  # other vectors


def test_semantic_pairs_are_judged_on_the_full_vectors_not_the_compacted_ones():
    from labelloop.ml.duplicates import semantic_pairs

    rng = np.random.default_rng(0)
    X = rng.normal(size=(6, 64)).astype(np.float32)
    X[1] = X[0] + 0.05 * rng.normal(size=64)  # a near copy of row 0: full cosine ~0.999
    # neighbours as the compacted search reports them: every pair looks like a copy
    index = np.array([[1], [0], [3], [2], [5], [4]])
    lifted = np.full((6, 1), 0.97, np.float32)
    pairs = semantic_pairs(X, 0.95, found=(index, lifted))
    assert [p[:3] for p in pairs] == [(0, 1, "semantic")]  # rows 2-5 are unrelated in full
    full = float(X[0] @ X[1] / np.linalg.norm(X[0]) / np.linalg.norm(X[1]))
    assert pairs[0][3] == pytest.approx(full, abs=1e-5)  # the similarity reported is the full one


def test_hamming_pairs_searching_chunks_within_a_radius_match_brute_force():
    from labelloop.ml.duplicates import _chunk_plan, hamming_pairs

    rng = np.random.default_rng(2)
    base = rng.integers(-(1 << 62), 1 << 62, 2500, dtype=np.int64)
    flips = np.array([sum(1 << int(b) for b in rng.choice(63, d, replace=False)) for d in rng.integers(0, 12, 2500)])
    hashes = np.concatenate([base, base ^ flips])
    assert _chunk_plan(len(hashes), 8)[1] == 1  # 5,000 items: five chunks, each searched within 1 bit
    assert _chunk_plan(100_000, 8) == (3, 2)
    unsigned = hashes.view(np.uint64)
    distance = np.bitwise_count(unsigned[:, None] ^ unsigned[None, :])
    i, j = np.nonzero(np.triu(distance <= 8, 1))
    assert hamming_pairs(hashes, 8) == list(zip(i.tolist(), j.tolist(), distance[i, j].astype(int).tolist()))

def test_copies_are_grouped_exact_jpeg_and_half_size(tmp_path):
    from labelloop.ml.duplicates import find_duplicates, phash

    files = _photos(6)
    images = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    original = images[0]
    buffer = io.BytesIO()
    Image.fromarray(original).save(buffer, "JPEG", quality=60)
    jpeg = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    half = np.asarray(Image.fromarray(original).resize((original.shape[1] // 2, original.shape[0] // 2)))
    pictures = images + [original, jpeg, half]
    content = [f"f{i}" for i in range(6)] + ["f0", "jpeg", "half"]
    hashes = np.array([phash(p) for p in pictures], np.int64)
    groups = find_duplicates(content, hashes, picture=lambda i: pictures[i])
    assert len(groups) == 1
    assert groups[0].members == [0, 6, 7, 8]
    assert groups[0].kind == "exact"
    assert {p[2] for p in groups[0].pairs} == {"exact", "perceptual"}


def _garments(*names: str) -> list[np.ndarray]:
    if not CLOTHING10.is_dir():
        pytest.skip(f"clothing10 not found at {CLOTHING10}")
    return [np.asarray(Image.open(CLOTHING10 / name).convert("RGB")) for name in names]


def test_different_garments_on_the_same_wall_are_not_duplicates_but_a_cropped_copy_is():
    from labelloop.ml.duplicates import find_duplicates, hamming_pairs, phash
    from labelloop.ml.same_picture import MIN_AGREEMENT, agreement, picture_keys

    # two pairs of different jeans hung on the same white wall: pHash 6 bits apart, closer than the cut (8)
    pictures = _garments("pants/030a5708-f6d7-441f-86ee-0b51b33f3f51.jpg",
                         "pants/a88db2dc-9282-4e0f-a412-9a126b4c1b02.jpg",
                         "pants/8c098167-44ea-4d37-86a9-5f5ad67aaddc.jpg",
                         "pants/9cb9ae19-00e1-4423-a940-a65200940627.jpg")
    hashes = np.array([phash(p) for p in pictures], np.int64)
    assert {(i, j) for i, j, _ in hamming_pairs(hashes)} >= {(0, 1), (2, 3)}
    assert find_duplicates([f"f{i}" for i in range(4)], hashes) != []  # pHash alone pairs them
    assert find_duplicates([f"f{i}" for i in range(4)], hashes, picture=lambda i: pictures[i]) == []
    # a copy with 5 % cut off each side still agrees with its original once aligned
    jeans = pictures[0]
    dy, dx = round(jeans.shape[0] * 0.05), round(jeans.shape[1] * 0.05)
    crop = np.ascontiguousarray(jeans[dy:-dy, dx:-dx])
    assert agreement(picture_keys(jeans), picture_keys(crop)) >= MIN_AGREEMENT
    assert agreement(picture_keys(pictures[0]), picture_keys(pictures[1])) < MIN_AGREEMENT


def test_blank_frames_of_one_shade_are_grouped_and_of_two_shades_are_not():
    from labelloop.ml.duplicates import find_duplicates, phash

    frames = [np.zeros((48, 64, 3), np.uint8), np.full((24, 32, 3), 1, np.uint8), np.full((48, 64, 3), 255, np.uint8)]
    hashes = np.array([phash(p) for p in frames], np.int64)
    groups = find_duplicates(["black.png", "black-small.jpg", "white.png"], hashes, picture=lambda i: frames[i])
    assert [g.members for g in groups] == [[0, 1]]


def test_the_same_photo_filed_under_two_classes_is_grouped():
    from labelloop.ml.duplicates import find_duplicates, phash

    # clothing10 holds one photo twice, re-encoded, as shorts and as a skirt (docs/quality.md)
    pictures = _garments("shorts/6075b4a5-5b1a-4ce0-aea0-9dbfbca7c35c.jpg",
                         "skirt/637a56e4-7fa6-4f75-8859-0f8902461554.jpg",
                         "pants/030a5708-f6d7-441f-86ee-0b51b33f3f51.jpg")
    hashes = np.array([phash(p) for p in pictures], np.int64)
    groups = find_duplicates(["a", "b", "c"], hashes, picture=lambda i: pictures[i])
    assert [g.members for g in groups] == [[0, 1]] and groups[0].kind == "perceptual"


def test_image_checks_find_blur_darkness_and_a_truncated_picture():
    from labelloop.ml.outliers import image_checks

    photo = np.asarray(Image.open(_photos(1)[0]).convert("RGB"))
    assert image_checks(photo).problems() == []
    blurred = np.asarray(Image.fromarray(photo).filter(ImageFilter.GaussianBlur(6)))
    assert [p[0] for p in image_checks(blurred).problems()] == ["blur"]
    dark = (photo * 0.03).astype(np.uint8)
    assert "dark" in [p[0] for p in image_checks(dark).problems()]
    truncated = photo.copy()
    truncated[int(photo.shape[0] * 0.7):] = 128
    assert "corrupt" in [p[0] for p in image_checks(truncated).problems()]


def test_flipped_labels_are_found_by_cleanlab_on_cross_fitted_probabilities():
    from labelloop.ml.label_errors import find_suspects

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (3, 16))
    y = np.repeat(np.arange(3), 60)
    X = centres[y] + rng.normal(0, 0.3, (180, 16))
    flipped = rng.choice(180, 12, replace=False)
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, 3, 12)) % 3
    suspects, scores, _ = find_suspects(X, noisy, ["a", "b", "c"])
    found = {s.index for s in suspects}
    assert found == set(flipped.tolist())
    s = suspects[0]
    assert f"labelled {'abc'[noisy[s.index]]}; the model says {'abc'[y[s.index]]}" in s.reason
    assert "of its 8 nearest labelled neighbours are" in s.reason
    multilabel = np.eye(3, dtype=int)[noisy]
    suspects, _, _ = find_suspects(X, multilabel, ["a", "b", "c"])
    assert len({s.index for s in suspects} & set(flipped.tolist())) >= 10



def test_cross_fitted_folds_in_threads_give_the_same_probabilities():
    from labelloop.ml.label_errors import cross_fitted_proba

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    X = rng.normal(0, 1, (3, 8))[y] + rng.normal(0, 0.5, (120, 8))
    one = cross_fitted_proba(X, y, 3)
    np.testing.assert_allclose(cross_fitted_proba(X, y, 3, threads=2), one, atol=1e-6)
    with pytest.raises(ValueError, match="threads must be 1 or more"):
        cross_fitted_proba(X, y, 3, threads=0)

# --- services and CLI ---------------------------------------------------------------------------------------


def _blob_project(workspace, make_project, root: Path, *, per_class: int = 40, flips: int = 6, seed: int = 0,
                  unlabelled: int = 0):
    """A classification project of tiny distinct images whose cached embeddings are separated blobs, labelled
    from the truth except `flips` items given another class. Returns (truth by item id, flipped item ids)."""
    from labelloop.ml.pretrained import DEFAULT_MODEL

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    classes = ["ants", "bees", "wasps"]
    rows, truth_by_name = [], {}
    order = rng.permutation((per_class + unlabelled) * len(classes))
    flipped_names = set()
    for n, k in enumerate(order):
        label = classes[k % len(classes)]
        name = f"{label}-{n}.png"
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(root / name)
        given = label
        if len(flipped_names) < flips and n % 7 == 3:
            given = classes[(classes.index(label) + 1) % len(classes)]
            flipped_names.add(name)
        rows.append((name, given if n < per_class * len(classes) else "", "train"))
        truth_by_name[name] = label
    make_project("syn", "classification", classes)
    import_path(workspace, "syn", _write_csv(root, rows), format="csv")
    centres = {name: rng.normal(0, 1, 64) for name in classes}
    truth, flipped = {}, set()
    with workspace.session() as session:
        for item in session.scalars(select(ItemRow)):
            vector = (centres[truth_by_name[item.source]] + rng.normal(0, 0.3, 64)).astype("<f4")
            for encoder in {DEFAULT_ENCODER, DEFAULT_MODEL}:
                session.add(EmbeddingRow(item_id=item.id, encoder=encoder, dim=64, vector=vector.tobytes()))
            truth[item.id] = truth_by_name[item.source]
            if item.source in flipped_names:
                flipped.add(item.id)
    return truth, flipped


def test_quality_without_a_classifier_says_what_to_train_and_changes_nothing(workspace, make_project, tmp_path):
    from labelloop.services.quality.runs import run_checks

    _blob_project(workspace, make_project, tmp_path / "syn")
    project = _project(workspace, "syn")
    before = snapshot(workspace)
    with pytest.raises(InvalidInput, match=r"train one first with `labelloop train syn --model classifier`"):
        run_checks(workspace, project, "label")
    with pytest.raises(InvalidInput, match="suspect kind 'labels'"):
        run_checks(workspace, project, "labels")
    assert snapshot(workspace) == before
    with workspace.session() as session:
        assert session.scalar(select(SuspectRow.id)) is None


def _project(workspace, name):
    with workspace.session() as session:
        return get_project(session, name)


def test_flipped_labels_become_suspects_kept_decisions_survive_and_fixes_reopen(workspace, make_project, tmp_path):
    from labelloop.services.quality.actions import decide
    from labelloop.services.quality.runs import report, run_checks

    truth, flipped = _blob_project(workspace, make_project, tmp_path / "syn")
    _done(workspace, "train", project="syn", model="classifier", seed=0)
    project = _project(workspace, "syn")
    first = run_checks(workspace, project, "label")["label"]
    assert first["rescored"] and first["labelled"] == 120
    found = report(workspace, project, "label", every=True)["suspects"]
    assert {s["item_id"] for s in found} == flipped
    assert [s["score"] for s in found] == sorted((s["score"] for s in found), reverse=True)
    s = found[0]
    assert s["reason"].startswith(f"labelled {s['details']['labels'][0]}; the model says {truth[s['item_id']]}")
    # nothing changed: not scored again
    assert run_checks(workspace, project, "label")["label"]["rescored"] is False
    kept = decide(workspace, project, found[0]["id"], "keep", user="ann")
    assert kept["state"] == "kept"
    fixed = decide(workspace, project, found[1]["id"], "fix", user="ann", labels=[truth[found[1]["item_id"]]])
    assert fixed["state"] == "fixed"
    before = snapshot(workspace)
    with pytest.raises(InvalidInput, match="exactly one label"):
        decide(workspace, project, found[2]["id"], "fix", user="ann", labels=["ants", "bees"])
    with pytest.raises(InvalidInput, match="only a duplicate can be dropped"):
        decide(workspace, project, found[2]["id"], "drop", user="ann")
    with pytest.raises(NotFound):
        decide(workspace, project, 10_000, "keep", user="ann")
    assert snapshot(workspace) == before
    # a label changed: scored again; the fixed item is no longer suspect, the kept one stays kept
    again = run_checks(workspace, project, "label")["label"]
    assert again["rescored"]
    listed = report(workspace, project, "label", every=True)["suspects"]
    assert {x["item_id"] for x in listed} == flipped - {found[0]["item_id"], found[1]["item_id"]}


@pytest.mark.parametrize("search", ["exact", "hnswlib"])
def test_a_full_run_searches_the_neighbours_once_and_finds_what_each_check_finds_alone(
        workspace, make_project, tmp_path, monkeypatch, search):
    from labelloop.ml import neighbours, same_picture
    from labelloop.services.quality.runs import CHECKS, report, run_checks

    _blob_project(workspace, make_project, tmp_path / "syn")
    # the blobs' embeddings pair hundreds of items at cosine >= 0.9: let every pair's pixels agree, so that the
    # duplicate groups come from the neighbours alone (and the pixel check's minutes are not spent)
    monkeypatch.setattr(same_picture, "same_picture_pairs", lambda pairs, picture, progress=None: list(pairs))
    _done(workspace, "train", project="syn", model="classifier", seed=0)
    project = _project(workspace, "syn")
    if search == "hnswlib":  # 120 items above the limit: compacted, then an hnswlib graph
        monkeypatch.setattr(neighbours, "EXACT_LIMIT", 50)
    builds = []
    for builder in ("compact", "exact_neighbours", "approximate_neighbours"):
        original = getattr(neighbours, builder)
        monkeypatch.setattr(neighbours, builder,
                            lambda *a, _f=original, _n=builder, **kw: builds.append(_n) or _f(*a, **kw))

    def suspects() -> list:
        return sorted((s["kind"], s["item_id"], s["details"].get("check", ""), s["score"], s["reason"])
                      for s in report(workspace, project, every=True)["suspects"])

    together = run_checks(workspace, project)
    assert all(together[check]["rescored"] for check in CHECKS)
    # label errors, semantic duplicates and outliers read the same 120 embeddings: one search between them
    assert builds == (["exact_neighbours"] if search == "exact" else ["compact", "approximate_neighbours"])
    found_together = suspects()
    assert {"label", "duplicate"} <= {kind for kind, *_ in found_together}
    builds.clear()
    for check in CHECKS:
        run_checks(workspace, project, check, force=True)
    assert len(builds) == (3 if search == "exact" else 6)
    assert suspects() == found_together


def _copies_folder(root: Path) -> Path:
    """Three photos, plus a JPEG re-encode and a half-size copy of the first, and an exact copy under a new name."""
    root.mkdir(parents=True)
    files = _photos(3)
    for f in files:
        (root / f.name).write_bytes(f.read_bytes())
    original = Image.open(files[0]).convert("RGB")
    original.save(root / "copy-q60.jpg", "JPEG", quality=60)
    original.resize((original.width // 2, original.height // 2)).save(root / "copy-half.png")
    (root / "copy-exact.jpg").write_bytes(files[0].read_bytes())
    return root


def test_copies_grouped_leakage_first_and_export_keeps_one(workspace, make_project, tmp_path):
    from labelloop.services.quality.runs import report, run_checks

    folder = _copies_folder(tmp_path / "imgs")
    make_project("dups", "classification", ["ants"])
    first = _photos(1)[0].name
    rows = [(first, "ants", "train"), ("copy-q60.jpg", "ants", "test"), ("copy-half.png", "ants", "train"),
            ("copy-exact.jpg", "ants", "train")] + [(f.name, "ants", "train") for f in _photos(3)[1:]]
    import_path(workspace, "dups", _write_csv(folder, rows), format="csv")
    project = _project(workspace, "dups")
    result = run_checks(workspace, project, "duplicate")["duplicate"]
    # the exact copy has the same bytes: one item (the content hash deduplicates on import)
    assert result["groups"] == 1 and result["leakage_groups"] == 1
    found = report(workspace, project, "duplicate", every=True)["suspects"]
    with workspace.session() as session:
        names = {r.id: r.source for r in session.scalars(select(ItemRow))}
    assert sorted(names[s["item_id"]] for s in found) == sorted([first, "copy-q60.jpg", "copy-half.png"])
    assert all(s["reason"].startswith("leakage") for s in found)
    assert len({s["group"] for s in found}) == 1
    # new items: only they are measured; the group is scored again
    assert run_checks(workspace, project, "duplicate")["duplicate"]["rescored"] is False


def test_cli_quality_json_lists_every_suspect_and_spot_check_needs_prelabels(workspace, make_project, tmp_path, capsys):
    from labelloop.cli.main import main

    truth, flipped = _blob_project(workspace, make_project, tmp_path / "syn")
    data = ["--data-dir", str(workspace.root)]
    with pytest.raises(SystemExit) as exit_info:
        main(["quality", "syn", "--kind", "label", *data])
    assert exit_info.value.code == 1
    assert "train one first" in capsys.readouterr().err
    _done(workspace, "train", project="syn", model="classifier", seed=0)
    main(["quality", "syn", "--kind", "label", "--json", *data])
    listed = json.loads(capsys.readouterr().out)
    assert {s["item_id"] for s in listed["suspects"]} == flipped
    assert {"item_id", "file", "score", "reason", "group"} <= set(listed["suspects"][0])
    main(["quality", "syn", *data])
    shown = capsys.readouterr().out
    assert "label: " in shown and "duplicate: " in shown and "outlier: " in shown
    with pytest.raises(SystemExit):
        main(["spot-check", "syn", *data])
    assert "no auto-accepted pre-labels" in capsys.readouterr().err


# --- API -----------------------------------------------------------------------------------------------------


def test_api_suspects_listed_by_score_acted_on_and_another_projects_suspect_is_404(workspace, tmp_path):
    from fastapi.testclient import TestClient

    from labelloop.server import create_app
    from labelloop.server.background import ThreadExecutor
    from labelloop.services.quality.suspects import Found, store_run

    from server_support import build_team

    team = build_team(workspace, tmp_path / "images", kind="classification")
    # a half-size copy of the first image joins the project: a perceptual duplicate
    copy = tmp_path / "copy"
    copy.mkdir()
    first = Image.open(sorted((tmp_path / "images").glob("*.png"))[0])
    first.resize((first.width // 2, first.height // 2)).save(copy / "half.png")
    import_path(workspace, "zoo", copy, format="images")
    with workspace.session() as session:
        other_item = session.scalar(select(ItemRow.id).where(ItemRow.project_id == team.other_project_id))
        store_run(session, team.other_project_id, "outlier",
                  [Found(other_item, "blur", 0.9, "blurred", "image")], "x", {})
        other_suspect = session.scalar(select(SuspectRow.id).where(SuspectRow.project_id == team.other_project_id))
    executor = ThreadExecutor(workspace)
    with TestClient(create_app(workspace, executor=executor)) as client:
        base = f"/api/projects/{team.project_id}"
        assert client.post(f"{base}/quality?kind=duplicate", headers=team.auth("annotator")).status_code == 403
        ran = client.post(f"{base}/quality?kind=duplicate", headers=team.auth("manager"))
        assert ran.status_code == 200, ran.text
        assert ran.json()["duplicate"]["groups"] == 1
        listed = client.get(f"{base}/suspects?kind=duplicate&limit=1", headers=team.auth("reviewer")).json()
        assert len(listed["items"]) == 1 and listed["next_cursor"] == "1"
        rest = client.get(f"{base}/suspects?kind=duplicate&cursor=1", headers=team.auth("reviewer")).json()
        assert len(rest["items"]) == 1 and rest["next_cursor"] is None
        pair = listed["items"] + rest["items"]
        assert pair[0]["group"] == pair[1]["group"] and pair[0]["score"] >= pair[1]["score"]
        before = snapshot(workspace)
        lost = client.post(f"{base}/suspects/{other_suspect}/action", json={"action": "keep"},
                           headers=team.auth("owner"))
        assert lost.status_code == 404
        bad = client.post(f"{base}/suspects/{pair[0]['id']}/action", json={"action": "fix", "labels": ["cat"]},
                          headers=team.auth("reviewer"))
        assert bad.status_code == 422 or bad.status_code == 400
        assert snapshot(workspace) == before
        with workspace.session() as session:
            assert session.get(SuspectRow, other_suspect).state == "open"
        dropped = client.post(f"{base}/suspects/{pair[1]['id']}/action", json={"action": "drop"},
                              headers=team.auth("reviewer"))
        assert dropped.status_code == 200 and dropped.json()["state"] == "dropped"
        last = client.post(f"{base}/suspects/{pair[0]['id']}/action", json={"action": "drop"},
                           headers=team.auth("reviewer"))
        assert last.status_code == 400 and "last one kept" in last.text
        assert client.get(f"{base}/suspects?kind=duplicate", headers=team.auth("reviewer")).json()["items"] == [pair[0]]
    executor.shutdown(wait=True)


def test_export_exclude_duplicates_keeps_one_per_group(workspace, make_project, tmp_path):
    from labelloop.services.data.exporting import export_project
    from labelloop.services.quality.runs import run_checks

    folder = _copies_folder(tmp_path / "imgs")
    make_project("dups", "classification", ["ants"])
    rows = [(f.name, "ants", "train") for f in sorted(folder.glob("*.*")) if f.suffix in (".jpg", ".png")]
    import_path(workspace, "dups", _write_csv(folder, rows), format="csv")
    run_checks(workspace, _project(workspace, "dups"), "duplicate")
    every = export_project(workspace, "dups", tmp_path / "all", format="csv", images=False)
    assert every.items == 5  # 3 photos + JPEG and half-size copies (the exact copy is one item)
    once = export_project(workspace, "dups", tmp_path / "once", format="csv", images=False, exclude_duplicates=True)
    assert once.items == 3
    assert once.left_out == {"a duplicate of an exported item": 2}
    assert any("quality review" in w for w in once.warnings)


def test_spot_checks_sample_auto_accepted_prelabels_and_raise_a_class_threshold(workspace, make_project, tmp_path):
    from labelloop.services.quality.actions import decide
    from labelloop.services.quality.runs import report
    from labelloop.services.quality.spot_checks import SETTING, draw_spot_checks, spot_check_report

    truth, _ = _blob_project(workspace, make_project, tmp_path / "syn", flips=0, unlabelled=60)
    _done(workspace, "train", project="syn", model="classifier", seed=0)
    predicted = _done(workspace, "predict", project="syn", model="classifier")
    assert predicted["prelabelled"] > 100
    project = _project(workspace, "syn")
    drawn = draw_spot_checks(workspace, project, width=0.1, confidence=0.9, seed=3)
    assert drawn["drawn_now"] and drawn["sample"] == sum(c["sample"] for c in drawn["classes"].values())
    for label, sizes in drawn["classes"].items():
        assert 0 < sizes["sample"] < sizes["auto_accepted"]
    assert draw_spot_checks(workspace, project, width=0.1, confidence=0.9, seed=3)["drawn_now"] is False
    queue = report(workspace, project, "spot_check", every=True)["suspects"]
    assert len(queue) == drawn["sample"]
    # the reviewer says every sampled "ants" pre-label is wrong, and the others right
    for s in queue:
        if s["check"] == "ants":
            decide(workspace, project, s["id"], "fix", user="rev", labels=["bees"])
        else:
            decide(workspace, project, s["id"], "keep", user="rev")
    result = spot_check_report(workspace, project)
    assert result["classes"]["ants"]["verdict"] == "below" and result["classes"]["ants"]["precision"] == 0
    assert result["classes"]["bees"]["verdict"] in ("meets", "undecided")
    assert result["raised_thresholds"] == {"ants": None}
    assert any(m.startswith("ants: precision 0.000") and "no automatic pre-labels" in m for m in result["messages"])
    assert _project(workspace, "syn").settings[SETTING] == {"ants": None}
    again = _done(workspace, "predict", project="syn", model="classifier")
    assert again["prelabels_per_class"]["ants"] == 0 and again["prelabels_per_class"]["bees"] > 0
    assert again["raised_by_spot_checks"] == {"ants": None}


def test_cohens_kappa_for_classes():
    from labelloop.domain import ProjectKind
    from labelloop.services.labelling.agreement import class_kappa

    class P:
        kind = ProjectKind.classification

        @staticmethod
        def class_names():
            return ["x", "y"]

    pairs = [(["x"], ["x"]), (["x"], ["y"]), (["y"], ["y"]), (["y"], ["y"])]
    # observed 0.75; chance 0.5·0.25 + 0.5·0.75 = 0.5; kappa (0.75 - 0.5) / 0.5
    assert class_kappa(pairs, P) == pytest.approx(0.5)
    assert class_kappa([(["x"], ["x"])] * 3, P) is None
    P.kind = ProjectKind.multilabel
    multi = [(["x"], ["x"]), (["x", "y"], ["x"]), ([], []), (["y"], ["y"])]
    # x: a=[1,1,0,0] b=[1,1,0,0] -> 1.0; y: a=[0,1,0,1] b=[0,0,0,1] -> po .75, pe .5·.25+.5·.75=.5 -> 0.5
    assert class_kappa(multi, P) == pytest.approx(0.75)


@pytest.mark.slow
def test_flipped_classes_found_on_a_real_hymenoptera_slice(tmp_path):
    """48 real photos (24 ants, 24 bees), 4 labels flipped: lite2 embeddings, the classifier, then `quality`."""
    from labelloop.services.projects import create_project
    from labelloop.services.quality.runs import report, run_checks
    from labelloop.services.workspace import Workspace

    if not HYMENOPTERA.is_dir():
        pytest.skip(f"hymenoptera not found at {HYMENOPTERA}")
    root = tmp_path / "csv"
    root.mkdir()
    (root / "data").symlink_to(HYMENOPTERA)
    rng = np.random.default_rng(0)
    rows, flipped_names = [], set()
    for label, other in (("ants", "bees"), ("bees", "ants")):
        files = sorted((HYMENOPTERA / "train" / label).glob("*.jpg"))
        for n, i in enumerate(sorted(rng.choice(len(files), 24, replace=False))):
            name = f"data/train/{label}/{files[i].name}"
            given = other if n < 2 else label
            if given != label:
                flipped_names.add(name)
            rows.append((name, given, "train"))
    workspace = Workspace.init(tmp_path / "ws")
    try:
        with workspace.session() as session:
            create_project(session, "bugs", "classification", ["ants", "bees"])
        import_path(workspace, "bugs", _write_csv(root, rows), format="csv")
        _done(workspace, "train", project="bugs", model="classifier", seed=0)
        run_checks(workspace, _project(workspace, "bugs"), "label")
        found = report(workspace, _project(workspace, "bugs"), "label", every=True)["suspects"]
        names = {s["file"] for s in found}
        assert len(names & flipped_names) >= 3  # of 4 flipped
        assert len(names - flipped_names) <= 2  # few correct labels put up for review
        flipped_hit = next(s for s in found if s["file"] in flipped_names)
        assert "nearest labelled neighbours are" in flipped_hit["reason"]
    finally:
        workspace.close()


def test_a_new_item_is_the_only_one_measured_again(workspace, make_project, tmp_path):
    from labelloop.services.quality.runs import run_checks

    folder = tmp_path / "imgs"
    folder.mkdir()
    for f in _photos(4)[:3]:
        (folder / f.name).write_bytes(f.read_bytes())
    make_project("inc", "detection", ["ant"])
    import_path(workspace, "inc", folder, format="images")
    totals = []
    progress = lambda done, total, message: totals.append(total) if message == "measuring images" else None  # noqa: E731
    first = run_checks(workspace, _project(workspace, "inc"), progress=progress)
    assert "skipped" in first["label"] and first["duplicate"]["rescored"] and totals == [3]
    more = tmp_path / "more"
    more.mkdir()
    (more / "new.jpg").write_bytes(_photos(4)[3].read_bytes())
    import_path(workspace, "inc", more, format="images")
    totals.clear()
    again = run_checks(workspace, _project(workspace, "inc"), progress=progress)
    assert totals == [1]  # duplicates measures the new item; outliers finds it measured already
    assert again["duplicate"]["rescored"] and again["outlier"]["rescored"]
    totals.clear()
    unchanged = run_checks(workspace, _project(workspace, "inc"), progress=progress)
    assert totals == [] and not unchanged["duplicate"]["rescored"] and not unchanged["outlier"]["rescored"]
