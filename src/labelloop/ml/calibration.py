"""Held-out splits and per-class thresholds that reach a target precision, with a confidence bound.

Pure numpy/scipy: scores and truths in, thresholds and figures out.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


def precision_lower_bound(correct: int, total: int, confidence: float) -> float:
    """One-sided Clopper–Pearson lower bound on a proportion: exact, and cautious where counts are small."""
    if total <= 0 or correct <= 0:
        return 0.0
    from scipy.stats import beta

    return float(beta.ppf(1.0 - confidence, correct, total - correct + 1))


def precision_lower_bounds(correct: np.ndarray, total: np.ndarray, confidence: float) -> np.ndarray:
    """`precision_lower_bound` over arrays of counts."""
    from scipy.stats import beta

    correct, total = np.asarray(correct, float), np.asarray(total, float)
    with np.errstate(all="ignore"):
        bounds = beta.ppf(1.0 - confidence, np.maximum(correct, 1e-12), total - correct + 1)
    return np.where((correct > 0) & (total > 0), np.nan_to_num(bounds), 0.0)


def examples_needed(target: float, confidence: float) -> int:
    """The fewest held-out predictions, all correct, whose lower bound reaches the target."""
    if confidence <= 0:
        return 1
    return max(1, math.ceil(math.log(1.0 - confidence) / math.log(target)))


def strata(y: np.ndarray) -> np.ndarray:
    """The stratum of each item: its class (1-D labels), or its rarest present class (0/1 matrix; -1 when none)."""
    y = np.asarray(y)
    if y.ndim == 1:
        return y
    counts = y.sum(axis=0)
    rarity = np.where(y > 0, counts[None, :], np.inf)
    return np.where(y.any(axis=1), rarity.argmin(axis=1), -1)


def held_out_folds(y: np.ndarray, fraction: float = 0.2, seed: int = 0) -> np.ndarray:
    """Fold number of each item, stratified and seeded: fold 0 is a `fraction` held-out split, and the
    round(1/fraction) folds together hold every item out once (for cross-fitted scores)."""
    if not 0 < fraction < 1:
        raise ValueError(f"held-out fraction must lie between 0 and 1, got {fraction}")
    folds = max(2, round(1 / fraction))
    groups = strata(y)
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(groups), np.int64)
    offset = 0
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        rng.shuffle(members)
        # Deal members round-robin, continuing where the previous class stopped: fold sizes stay even.
        fold[members] = (np.arange(len(members)) + offset) % folds
        offset = (offset + len(members)) % folds
    return fold


@dataclass
class ClassCalibration:
    """The threshold chosen for one class on held-out predictions, with its figures."""

    name: str
    threshold: float | None  # None: this class gets no pre-labels
    held_out: int  # held-out items truly of this class
    predicted: int  # held-out items predicted as this class
    above: int  # held-out predictions at or above the threshold
    precision: float | None  # measured on held-out at the threshold
    precision_bound: float | None  # its lower confidence bound
    recall: float | None  # held-out items of the class that got a pre-label
    reason: str = ""

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def choose_threshold(name: str, scores: np.ndarray, correct: np.ndarray, positives: int, *, target: float,
                     confidence: float) -> ClassCalibration:
    """The lowest score threshold whose held-out precision, as a lower confidence bound, reaches the target.

    `scores` and `correct` describe the held-out items predicted as this class; `positives` counts the
    held-out items truly of it (for recall)."""
    scores, correct = np.asarray(scores, float), np.asarray(correct, bool)
    needed = examples_needed(target, confidence)
    empty = ClassCalibration(name, None, positives, len(scores), 0, None, None, None)
    if min(len(scores), positives) < needed:  # correct predictions can be no more than either count
        empty.reason = (f"too few held-out examples: {positives} held-out items of {name!r}, {len(scores)} "
                        f"predicted as it; a precision of {target:g} needs at least {needed} correct predictions "
                        f"at {confidence:g} confidence; label more {name!r} items")
        return empty
    order = np.argsort(-scores, kind="stable")
    sorted_scores, hits = scores[order], np.cumsum(correct[order])
    counts = np.arange(1, len(scores) + 1)
    bounds = precision_lower_bounds(hits, counts, confidence)
    # A threshold admits every item with an equal score: only the last of a run of ties is a valid cut.
    valid = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    passing = np.flatnonzero(valid & (bounds >= target))
    if len(passing) == 0:
        top = int(np.argmax(np.where(valid, bounds, -1.0)))
        empty.reason = (f"no threshold reaches precision {target:g}: the best held-out lower bound is "
                        f"{bounds[top]:.3f} ({int(hits[top])} of the {top + 1} most confident correct); label more "
                        f"items or lower the target")
        empty.precision, empty.precision_bound = float(hits[top] / (top + 1)), float(bounds[top])
        return empty
    best = int(passing[-1]) + 1  # the lowest threshold: the most items admitted
    correct_above = int(hits[best - 1])
    return ClassCalibration(name, float(sorted_scores[best - 1]), positives, len(scores), best,
                            correct_above / best, float(bounds[best - 1]),
                            correct_above / positives if positives else None)


def calibrate(proba: np.ndarray, y: np.ndarray, names: list[str], *, target: float, confidence: float,
              multilabel: bool) -> list[ClassCalibration]:
    """Per-class thresholds from held-out probabilities (N×K) and truths (class indices, or an N×K 0/1 matrix).

    Multi-class: an item is predicted as its most probable class, scored by that probability.
    Multi-label: each class is its own yes/no decision on its own probability."""
    proba = np.asarray(proba, float)
    results = []
    y = np.asarray(y)
    for k, name in enumerate(names):
        if multilabel:
            truth = np.asarray(y)[:, k] > 0
            results.append(choose_threshold(name, proba[:, k], truth, int(truth.sum()), target=target,
                                            confidence=confidence))
        else:
            chosen = proba.argmax(axis=1) == k
            results.append(choose_threshold(name, proba[chosen, k], y[chosen] == k, int((y == k).sum()),
                                            target=target, confidence=confidence))
    return results


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> list[dict]:
    """Mean confidence against the share correct in equal-width confidence bins (for the reliability plot)."""
    confidence, correct = np.asarray(confidence, float), np.asarray(correct, bool)
    edges = np.linspace(0.0, 1.0, bins + 1)
    where = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        members = where == b
        if members.any():
            rows.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": int(members.sum()),
                         "confidence": round(float(confidence[members].mean()), 4),
                         "accuracy": round(float(correct[members].mean()), 4)})
    return rows


def expected_calibration_error(bins: list[dict]) -> float:
    total = sum(b["count"] for b in bins)
    return round(sum(b["count"] * abs(b["confidence"] - b["accuracy"]) for b in bins) / total, 4) if total else 0.0


def reliability_png(bins: list[dict], title: str) -> bytes:
    """A reliability diagram (share correct against confidence, with counts) as PNG bytes."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.5, 4.5), dpi=100)
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], color="#999999", linestyle="--", linewidth=1, label="perfectly calibrated")
    if bins:
        centres = [(b["low"] + b["high"]) / 2 for b in bins]
        axes.bar(centres, [b["accuracy"] for b in bins], width=0.09, color="#0072B2", alpha=0.8, label="held-out")
        for x, b in zip(centres, bins):
            axes.annotate(str(b["count"]), (x, b["accuracy"]), ha="center", va="bottom", fontsize=7)
    axes.set(xlim=(0, 1), ylim=(0, 1.05), xlabel="predicted probability", ylabel="share correct", title=title)
    axes.legend(loc="upper left", fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
