"""Held-out splits and per-class thresholds that reach a target precision.

Three methods (project setting `calibration_method`):
- `estimate`: a temperature fitted on the cross-fitted held-out scores (a posterior over it, never
  sharper than the classifier's own probabilities) turns the scores of the *unlabelled* items into calibrated
  chances of being right; a threshold passes when the chance that the pre-labels above it reach the target
  precision is at least `confidence`, and the held-out items above it do not contradict the target.
- `bound`: the held-out precision above the threshold, as a one-sided Clopper-Pearson lower bound at
  `confidence`, must reach the target (needs ~32 held-out items of a class for 0.95 at 0.8).
- `auto` (default): both; per class the higher of the two thresholds where both exist, else the one that exists
  (the bound certifies, it never refutes). With few labels the bound certifies nothing and the estimate
  decides; with many, the bound's evidence guards against a classifier over-confident on the unlabelled items
  (which the estimate cannot see).

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
    method: str = "bound"
    estimated_precision: float | None = None  # `estimate`: mean calibrated chance over unlabelled items above
    assurance: float | None = None  # `estimate`: chance that their precision reaches the target

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


METHODS = ("estimate", "bound", "auto")
MIN_HELD_OUT = 10  # `estimate`: held-out items a class needs before its calibrated scores are trusted
LOG_TEMPERATURES = np.linspace(0.0, 3.0, 61)  # T = 1 (the classifier's own probabilities) .. e^3 (much softer)
PRIOR_SD = 1.0  # of the normal prior on log T


def _logits(proba: np.ndarray, multilabel: bool) -> np.ndarray:
    """Scores on the scale a temperature divides: log-probabilities (softmax) or log-odds (sigmoids)."""
    p = np.clip(np.asarray(proba, float), 1e-9, 1 - 1e-9)
    return np.log(p / (1 - p)) if multilabel else np.log(p)


def _tempered(logits: np.ndarray, temperature: float, multilabel: bool) -> np.ndarray:
    z = logits / temperature
    if multilabel:
        return 1.0 / (1.0 + np.exp(-z))
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def temperature_posterior(proba: np.ndarray, y: np.ndarray, multilabel: bool) -> tuple[np.ndarray, np.ndarray]:
    """(temperatures, weights): a grid posterior over one temperature shared by all classes, from held-out
    probabilities and truths, with a normal prior on log T truncated at T = 1. Held-out items that happen to be
    all right cannot make the classifier look surer than it says it is; wrong ones soften it."""
    logits, y = _logits(proba, multilabel), np.asarray(y)
    nll = []
    for log_t in LOG_TEMPERATURES:
        q = np.clip(_tempered(logits, np.exp(log_t), multilabel), 1e-12, 1 - 1e-12)
        if multilabel:
            nll.append(-np.sum(np.where(y > 0, np.log(q), np.log(1 - q))))
        else:
            nll.append(-np.sum(np.log(q[np.arange(len(y)), y])) if len(y) else 0.0)
    log_post = -np.asarray(nll) - 0.5 * (LOG_TEMPERATURES / PRIOR_SD) ** 2
    weights = np.exp(log_post - log_post.max())
    keep = weights > 1e-4
    return np.exp(LOG_TEMPERATURES[keep]), weights[keep] / weights[keep].sum()


def _held_out_agrees(scores: np.ndarray, correct: np.ndarray, threshold: float, target: float,
                     confidence: float) -> bool:
    """The held-out items above the threshold do not contradict the target: their precision's one-sided upper
    Clopper-Pearson bound at `confidence` reaches it."""
    above = scores >= threshold
    total, right = int(above.sum()), int(correct[above].sum())
    if right == total:
        return True
    from scipy.stats import beta

    return float(beta.ppf(confidence, right + 1, total - right)) >= target


def estimate_threshold(name: str, pool_scores: np.ndarray, pool_chances: np.ndarray, weights: np.ndarray,
                       scores: np.ndarray, correct: np.ndarray, positives: int, *, target: float,
                       confidence: float) -> ClassCalibration:
    """The lowest threshold whose pre-labels reach the target precision with chance >= confidence.

    `pool_scores`: the unlabelled items' scores for this class (those it would pre-label with it);
    `pool_chances`: their calibrated chances of being right, one column per temperature of the posterior whose
    `weights` are given; `scores`/`correct`: the held-out items predicted as this class. The number of wrong
    pre-labels among n is taken as binomial with their mean chance of being wrong (wider than the exact
    Poisson-binomial: a little cautious), so `assurance` = sum over temperatures of weight × P(wrong <= (1 -
    target) n)."""
    from scipy.stats import binom

    scores, correct = np.asarray(scores, float), np.asarray(correct, bool)
    precision, bound = _held_out_figures(scores, correct, confidence)
    empty = ClassCalibration(name, None, positives, len(scores), 0, precision, bound, None, method="estimate")
    if positives < MIN_HELD_OUT:
        empty.reason = (f"too few held-out examples: {positives} held-out items of {name!r}; the estimate needs at "
                        f"least {MIN_HELD_OUT}; label more {name!r} items")
        return empty
    if len(pool_scores) == 0:
        empty.reason = f"no unlabelled item is predicted as {name!r}"
        return empty
    order = np.argsort(-np.asarray(pool_scores, float), kind="stable")
    sorted_scores, chances = np.asarray(pool_scores, float)[order], np.asarray(pool_chances, float)[order]
    counts = np.arange(1, len(sorted_scores) + 1)
    allowed = np.floor((1 - target) * counts + 1e-9)
    wrong = np.clip(np.cumsum(1 - chances, axis=0) / counts[:, None], 0.0, 1.0)
    assurance = binom.cdf(allowed[:, None], counts[:, None], wrong) @ weights
    estimated = (np.cumsum(chances, axis=0) @ weights) / counts
    valid = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    # The lowest threshold (most pre-labels) first: the first candidate the held-out items agree with wins.
    passing = next((int(n) for n in np.flatnonzero(valid & (assurance >= confidence))[::-1]
                    if _held_out_agrees(scores, correct, sorted_scores[n], target, confidence)), None)
    if passing is None:
        top = int(np.argmax(np.where(valid, assurance, -1.0)))
        empty.reason = (f"no threshold reaches precision {target:g} with {confidence:g} confidence: at best a "
                        f"{assurance[top]:.2f} chance (estimated precision {estimated[top]:.3f} on the "
                        f"{top + 1} most confident unlabelled items), or the held-out items contradict it; label "
                        f"more items or lower the target")
        empty.estimated_precision, empty.assurance = float(estimated[top]), float(assurance[top])
        return empty
    n = passing
    threshold = float(sorted_scores[n])
    above = scores >= threshold
    right = int(correct[above].sum())
    held_precision, held_bound = _held_out_figures(scores[above], correct[above], confidence)
    return ClassCalibration(name, threshold, positives, len(scores), int(above.sum()), held_precision, held_bound,
                            right / positives if positives else None, method="estimate",
                            estimated_precision=float(estimated[n]), assurance=float(assurance[n]))


def _held_out_figures(scores: np.ndarray, correct: np.ndarray, confidence: float) -> tuple[float | None, float | None]:
    if len(scores) == 0:
        return None, None
    right = int(np.sum(correct))
    return right / len(scores), precision_lower_bound(right, len(scores), confidence)


def calibrate(proba: np.ndarray, y: np.ndarray, names: list[str], *, target: float, confidence: float,
              multilabel: bool, method: str = "bound", pool: np.ndarray | None = None) -> list[ClassCalibration]:
    """Per-class thresholds from held-out probabilities (N×K) and truths (class indices, or an N×K 0/1 matrix).

    Multi-class: an item is predicted as its most probable class, scored by that probability.
    Multi-label: each class is its own yes/no decision on its own probability.
    `method="estimate"` also reads `pool`, the unlabelled items' probabilities (M×K; the held-out ones if None)."""
    if method not in METHODS:
        raise ValueError(f"calibration method {method!r}: choose one of {', '.join(METHODS)}")
    if method == "auto":
        kwargs = dict(target=target, confidence=confidence, multilabel=multilabel)
        estimated = calibrate(proba, y, names, method="estimate", pool=pool, **kwargs)
        bounded = calibrate(proba, y, names, method="bound", **kwargs)
        return [_stricter(e, b) for e, b in zip(estimated, bounded)]
    proba, y = np.asarray(proba, float), np.asarray(y)
    if method == "estimate":
        pool = proba if pool is None else np.asarray(pool, float)
        temperatures, weights = temperature_posterior(proba, y, multilabel)
        pool_logits = _logits(pool, multilabel)
        tempered = [_tempered(pool_logits, t, multilabel) for t in temperatures]
    results = []
    for k, name in enumerate(names):
        if multilabel:
            chosen, correct = np.ones(len(y), bool), y[:, k] > 0
            positives = int(correct.sum())
        else:
            chosen = proba.argmax(axis=1) == k
            correct, positives = y[chosen] == k, int((y == k).sum())
        if method == "bound":
            results.append(choose_threshold(name, proba[chosen, k], correct, positives, target=target,
                                            confidence=confidence))
            continue
        in_pool = np.ones(len(pool), bool) if multilabel else pool.argmax(axis=1) == k
        chances = np.stack([q[in_pool, k] for q in tempered], axis=1)
        results.append(estimate_threshold(name, pool[in_pool, k], chances, weights, proba[chosen, k], correct,
                                          positives, target=target, confidence=confidence))
    return results


def _stricter(estimated: ClassCalibration, bounded: ClassCalibration) -> ClassCalibration:
    """`auto`: the higher threshold of the two where both exist, else the one that exists. The bound's lack of a
    threshold is a lack of evidence (it certifies, it never refutes: with 16 held-out predictions even one error
    keeps 0.9 out of reach), so it never takes away the estimate's; the estimate already refuses thresholds that
    the held-out items contradict. `method` names the rule whose threshold was kept and `reason` says why."""
    if bounded.threshold is None:
        if estimated.threshold is None:
            return estimated  # neither: the estimate's reason says what is missing
        chosen, why = estimated, "the bound certifies no threshold yet"
    elif estimated.threshold is None or bounded.threshold > estimated.threshold:
        chosen = bounded
        why = ("the estimate has no threshold" if estimated.threshold is None
               else f"the bound's threshold is the stricter (estimate: {estimated.threshold:.4f})")
    else:
        chosen, why = estimated, f"the estimate's threshold is the stricter (bound: {bounded.threshold:.4f})"
    return ClassCalibration(**{**asdict(chosen), "reason": f"auto: {why}"})


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
