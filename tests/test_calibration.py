"""Calibration on synthetic scores: held-out folds, the precision bound, thresholds, the pre-labeller contract."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from labelloop.ml.calibration import (
    MIN_HELD_OUT,
    calibrate,
    choose_threshold,
    examples_needed,
    held_out_folds,
    precision_lower_bound,
    reliability_bins,
    reliability_png,
)
from labelloop.ml.classifier import EmbeddingClassifier, PreLabeller


def test_lower_bound_is_exact_for_all_correct_and_grows_with_evidence():
    # n of n correct: the one-sided Clopper-Pearson bound is (1 - confidence) ** (1 / n).
    assert precision_lower_bound(20, 20, 0.8) == pytest.approx(0.2 ** (1 / 20))
    assert precision_lower_bound(0, 10, 0.8) == 0.0
    bounds = [precision_lower_bound(n, n, 0.8) for n in (5, 10, 40, 160)]
    assert bounds == sorted(bounds) and bounds[-1] < 1
    needed = examples_needed(0.95, 0.8)
    assert precision_lower_bound(needed, needed, 0.8) >= 0.95 > precision_lower_bound(needed - 1, needed - 1, 0.8)


def test_held_out_folds_are_seeded_stratified_and_cover_everything():
    y = np.array([0] * 50 + [1] * 30 + [2] * 20)
    folds = held_out_folds(y, 0.2, seed=3)
    assert np.array_equal(folds, held_out_folds(y, 0.2, seed=3))
    assert not np.array_equal(folds, held_out_folds(y, 0.2, seed=4))
    assert sorted(set(folds.tolist())) == [0, 1, 2, 3, 4]
    for k, count in ((0, 50), (1, 30), (2, 20)):
        assert ((folds == 0) & (y == k)).sum() == count // 5  # 20% of every class in the held-out fold


def test_multilabel_folds_stratify_on_the_rarest_label():
    y = np.zeros((100, 3), int)
    y[:, 0] = 1
    y[:10, 2] = 1  # a rare class: its 10 items spread over the 5 folds, 2 each
    folds = held_out_folds(y, 0.2, seed=0)
    assert [int(((folds == f) & (y[:, 2] == 1)).sum()) for f in range(5)] == [2, 2, 2, 2, 2]


def _calibrated_scores(n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Scores whose probability of being right equals the score itself."""
    scores = rng.uniform(0.5, 1.0, n)
    return scores, rng.random(n) < scores


def test_threshold_is_the_lowest_that_reaches_the_target():
    rng = np.random.default_rng(0)
    scores, correct = _calibrated_scores(400, rng)
    chosen = choose_threshold("a", scores, correct, int(correct.sum()), target=0.95, confidence=0.8)
    assert chosen.threshold is not None and chosen.precision_bound >= 0.95
    above = scores >= chosen.threshold
    assert chosen.above == above.sum() and chosen.precision == pytest.approx(correct[above].mean())
    lower = scores[scores < chosen.threshold].max()
    admitted = scores >= lower
    assert precision_lower_bound(int(correct[admitted].sum()), int(admitted.sum()), 0.8) < 0.95


def test_the_bound_keeps_true_precision_at_the_target_in_most_trials():
    """Over many held-out draws, the precision of fresh items above the chosen threshold falls short of the
    target in at most about (1 - confidence) of the trials: the guarantee the bound is there for."""
    rng = np.random.default_rng(1)
    target, confidence, trials, short, coverage = 0.9, 0.8, 200, 0, []
    for _ in range(trials):
        scores, correct = _calibrated_scores(300, rng)
        chosen = choose_threshold("a", scores, correct, int(correct.sum()), target=target, confidence=confidence)
        if chosen.threshold is None:
            continue
        # The true precision above t for uniform(0.5, 1) scores that are right with probability = score.
        true_precision = (1 + chosen.threshold) / 2
        short += true_precision < target
        coverage.append((1 - chosen.threshold) / 0.5)
    assert short / trials <= (1 - confidence) + 0.05
    # The oracle threshold (0.8) pre-labels 40% of items; the bound costs some of that, not most of it.
    assert 0.25 < np.mean(coverage) <= 0.42


def test_too_few_examples_and_unreachable_targets_give_reasons():
    few = choose_threshold("wasp", np.array([0.99, 0.98, 0.97]), np.array([True, True, True]), 3,
                           target=0.95, confidence=0.8)
    assert few.threshold is None and few.reason.startswith("too few held-out examples") and "'wasp'" in few.reason
    rng = np.random.default_rng(2)
    noisy = choose_threshold("b", rng.random(200), rng.random(200) < 0.6, 120, target=0.95, confidence=0.8)
    assert noisy.threshold is None and noisy.reason.startswith("no threshold reaches precision 0.95")


def test_calibrate_multiclass_and_multilabel():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    proba = np.where(y[:, None] == np.arange(2), 0.97, 0.03)
    flip = rng.random(300) < 0.02
    proba[flip] = proba[flip][:, ::-1]
    results = calibrate(proba, y, ["ants", "bees"], target=0.9, confidence=0.8, multilabel=False)
    assert [r.name for r in results] == ["ants", "bees"] and all(r.threshold == pytest.approx(0.97) for r in results)
    labels = np.stack([y, 1 - y, np.zeros(300, int)], axis=1)
    labels[:2, 2] = 1
    multi = calibrate(np.clip(labels + rng.normal(0, 0.05, labels.shape), 0, 1), labels, ["a", "b", "rare"],
                      target=0.9, confidence=0.8, multilabel=True)
    assert multi[0].threshold is not None and multi[1].threshold is not None
    assert multi[2].threshold is None and "too few held-out examples" in multi[2].reason


def _two_class_scores(n: int, rng, claimed=None, right_rate=None) -> tuple[np.ndarray, np.ndarray]:
    """Binary probabilities and truths: the predicted class's score is `claimed` (default uniform 0.5..1) and it
    is right with probability `right_rate` (default: the score itself, i.e. perfectly calibrated)."""
    scores = rng.uniform(0.5, 1.0, n) if claimed is None else np.full(n, claimed)
    predicted = rng.integers(0, 2, n)
    right = rng.random(n) < (scores if right_rate is None else right_rate)
    proba = np.where(np.arange(2)[None, :] == predicted[:, None], scores[:, None], 1 - scores[:, None])
    return proba, np.where(right, predicted, 1 - predicted)


def test_estimate_reaches_the_target_where_the_bound_lacks_evidence():
    """With 50 held-out items (25 a class) the bound rarely certifies 0.9; the estimate, which also reads the
    unlabelled items' scores, pre-labels more, and its realised precision falls short of the target in at most
    about (1 - confidence) of the trials."""
    rng = np.random.default_rng(6)
    target, confidence, trials, short, coverage, bound_coverage = 0.9, 0.8, 100, 0, [], []

    def covered(chosen, pool):
        thresholds = np.array([np.inf if c.threshold is None else c.threshold for c in chosen])
        return pool.max(axis=1) >= thresholds[pool.argmax(axis=1)]

    for _ in range(trials):
        held, held_y = _two_class_scores(50, rng)
        pool, pool_y = _two_class_scores(400, rng)
        chosen = calibrate(held, held_y, ["a", "b"], target=target, confidence=confidence, multilabel=False,
                           method="estimate", pool=pool)
        assert all(c.method == "estimate" and (c.threshold is None or c.assurance >= confidence) for c in chosen)
        accepted = covered(chosen, pool)
        if accepted.any():
            short += (pool.argmax(axis=1) == pool_y)[accepted].mean() < target
        coverage.append(accepted.mean())
        bound_coverage.append(covered(calibrate(held, held_y, ["a", "b"], target=target, confidence=confidence,
                                                multilabel=False), pool).mean())
    assert short / trials <= (1 - confidence) + 0.05
    # The oracle threshold (score 0.8) would pre-label 40%; the estimate is cautious (the temperature may only
    # soften), but pre-labels more than the bound does from the same held-out items.
    assert np.mean(bound_coverage) < np.mean(coverage) <= 0.42


def test_estimate_softens_an_overconfident_classifier():
    """Scores that claim 0.99 but are right 85% of the time: the held-out errors pull the temperature up, so the
    calibrated chances fall near 0.85 and no class gets pre-labels at 0.95, with a reason."""
    rng = np.random.default_rng(7)
    held, held_y = _two_class_scores(100, rng, claimed=0.99, right_rate=0.85)
    pool, _ = _two_class_scores(400, rng, claimed=0.99, right_rate=0.85)
    chosen = calibrate(held, held_y, ["a", "b"], target=0.95, confidence=0.8, multilabel=False, method="estimate",
                       pool=pool)
    for c in chosen:
        assert c.threshold is None and c.reason.startswith("no threshold reaches precision 0.95"), c
        assert c.estimated_precision < 0.92


def test_estimate_needs_a_few_held_out_items_of_each_class():
    rng = np.random.default_rng(8)
    held, held_y = _two_class_scores(200, rng)
    rare = np.flatnonzero(held_y == 1)[MIN_HELD_OUT - 1 :]  # keep MIN_HELD_OUT - 1 items of class b
    keep = np.setdiff1d(np.arange(200), rare)
    pool, _ = _two_class_scores(300, rng)
    a, b = calibrate(held[keep], held_y[keep], ["a", "b"], target=0.9, confidence=0.8, multilabel=False,
                     method="estimate", pool=pool)
    assert a.threshold is not None
    assert b.threshold is None and b.reason.startswith(f"too few held-out examples: {MIN_HELD_OUT - 1} held-out")
    with pytest.raises(ValueError, match="calibration method"):
        calibrate(held, held_y, ["a", "b"], target=0.9, confidence=0.8, multilabel=False, method="guess")


def test_auto_keeps_the_stricter_threshold_and_falls_back_to_the_estimate():
    """`auto`: where the bound has evidence (many held-out items) its threshold guards against over-confidence, so
    each class gets the higher of the two thresholds; with few held-out items the bound certifies nothing and the
    estimate decides alone; where neither has a threshold there are no pre-labels."""
    rng = np.random.default_rng(9)
    kwargs = dict(target=0.9, confidence=0.8, multilabel=False)

    def three_rules(n: int):
        held, held_y = _two_class_scores(n, rng)
        pool, _ = _two_class_scores(400, rng)
        return zip(*(calibrate(held, held_y, ["a", "b"], method=method, pool=pool, **kwargs)
                     for method in ("estimate", "bound", "auto")))

    for e, b, a in three_rules(1000):
        assert e.threshold is not None and b.threshold is not None
        assert a.threshold == max(e.threshold, b.threshold) and a.reason.startswith("auto: ")
        assert a.method == ("bound" if b.threshold > e.threshold else "estimate")
    # 24 held-out items: too few for the bound to certify 0.9 (at 0.8 it needs 16 correct of a class), enough for
    # the estimate.
    decided = 0
    for _ in range(20):
        for e, b, a in three_rules(24):
            assert b.threshold is None
            assert a.threshold == e.threshold and a.method == "estimate"
            decided += e.threshold is not None
    assert decided > 0
    # Neither rule has a threshold (over-confident scores): no pre-labels, and a reason.
    held, held_y = _two_class_scores(400, rng, claimed=0.99, right_rate=0.85)
    for c in calibrate(held, held_y, ["a", "b"], method="auto", target=0.95, confidence=0.8, multilabel=False):
        assert c.threshold is None and c.reason.startswith("no threshold reaches precision 0.95"), c


def test_reliability_bins_and_png():
    bins = reliability_bins(np.array([0.55, 0.58, 0.95, 0.97]), np.array([True, False, True, True]))
    assert [(b["count"], b["accuracy"]) for b in bins] == [(2, 0.5), (2, 1.0)]
    assert reliability_png(bins, "test").startswith(b"\x89PNG")


def _blobs(n: int, k: int, rng, spread: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.normal(0, 1, (k, 32))
    y = rng.integers(0, k, n)
    return centres[y] + rng.normal(0, spread, (n, 32)), y


def test_prelabeller_follows_the_scikit_learn_contract():
    rng = np.random.default_rng(4)
    X, y = _blobs(300, 3, rng)
    model = PreLabeller(EmbeddingClassifier(C=0.5), ("a", "b", "c"), target_precision=0.95, confidence=0.8)
    assert clone(model).get_params()["target_precision"] == 0.95
    assert not hasattr(model, "thresholds_")
    model.fit(X, y, X[:50])
    assert model.held_out_proba_.shape == (300, 3)  # cross-fitted: every labelled item held out once
    assert model.method == "auto" and model.pool_proba_.shape == (50, 3)
    proba, accepted = model.prelabel(X)
    assert np.allclose(proba.sum(axis=1), 1) and accepted.sum(axis=1).max() == 1
    stricter = clone(model).fit(X, y, X[:50]).set_target(0.99)
    assert (stricter.thresholds_ >= model.thresholds_).all()
    bound = clone(model).set_params(method="bound").fit(X, y)
    assert bound.pool_proba_ is None and all(c.method == "bound" for c in bound.calibration_)


def test_multilabel_classifier_handles_a_class_that_is_always_absent():
    rng = np.random.default_rng(5)
    X, first = _blobs(120, 2, rng)
    y = np.stack([first, 1 - first, np.zeros(120, int)], axis=1)
    model = EmbeddingClassifier(multilabel=True).fit(X, y)
    proba = model.predict_proba(X)
    assert proba.shape == (120, 3) and (proba[:, 2] == 0).all()
    assert (model.predict(X)[:, 0] == first).mean() > 0.95
