"""Spot-checks of auto-accepted pre-labels: how many to review for a stated interval width, which ones (seeded),
and what the reviewed ones say about the precision (exact Clopper–Pearson interval).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

WIDTH = 0.03  # half-width of the interval: ± 3 points
CONFIDENCE = 0.9  # two-sided


def clopper_pearson(correct: int, total: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Exact two-sided interval for a proportion (correct of total)."""
    from scipy.stats import beta

    if total <= 0:
        return 0.0, 1.0
    alpha = 1.0 - confidence
    low = 0.0 if correct <= 0 else float(beta.ppf(alpha / 2, correct, total - correct + 1))
    high = 1.0 if correct >= total else float(beta.ppf(1 - alpha / 2, correct + 1, total - correct))
    return low, high


def sample_size(expected: float, width: float = WIDTH, confidence: float = CONFIDENCE,
                population: int | None = None) -> int:
    """The fewest reviews whose Clopper–Pearson interval, at the expected precision, is at most ± width wide;
    never more than the population (reviewing every item leaves no sampling error)."""
    if not 0 < width < 0.5 or not 0 < confidence < 1 or not 0 <= expected <= 1:
        raise ValueError("width must lie in (0, 0.5), confidence in (0, 1), expected precision in [0, 1]")
    from scipy.stats import norm

    z = norm.ppf(0.5 + confidence / 2)
    p = min(max(expected, 1e-3), 1 - 1e-3)
    n = max(1, math.floor(z * z * p * (1 - p) / width ** 2))  # the normal approximation, then the exact check
    while True:
        low, high = clopper_pearson(round(p * n), n, confidence)
        if (high - low) / 2 <= width:
            break
        n = max(n + 1, math.ceil(n * 1.02))
    return n if population is None else min(n, population)


def draw(ids: list[int], n: int, seed: int) -> list[int]:
    """A seeded random sample without replacement, in a stable order."""
    rng = np.random.default_rng(seed)
    if n >= len(ids):
        return list(ids)
    return [ids[i] for i in sorted(rng.choice(len(ids), size=n, replace=False).tolist())]


@dataclass
class SpotCheckResult:
    label: str
    reviewed: int
    correct: int
    precision: float | None
    low: float
    high: float
    target: float
    verdict: str  # meets | below | undecided | no reviews yet
    message: str

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def judge(label: str, correct: int, reviewed: int, target: float, confidence: float = CONFIDENCE) -> SpotCheckResult:
    if reviewed == 0:
        return SpotCheckResult(label, 0, 0, None, 0.0, 1.0, target, "no reviews yet",
                               f"{label}: no spot-check reviewed yet")
    low, high = clopper_pearson(correct, reviewed, confidence)
    precision = correct / reviewed
    span = f"{precision:.3f} ({low:.3f}–{high:.3f} at {confidence:.0%}, {correct}/{reviewed})"
    if high < target:
        verdict, message = "below", f"{label}: precision {span} lies below the target {target}"
    elif low >= target:
        verdict, message = "meets", f"{label}: precision {span} meets the target {target}"
    else:
        verdict, message = "undecided", f"{label}: precision {span}; review more to decide against {target}"
    return SpotCheckResult(label, reviewed, correct, precision, low, high, target, verdict, message)


def raised_threshold(scores: np.ndarray, correct: np.ndarray, target: float, current: float) -> float | None:
    """The lowest score cut, above the current one, at which the reviewed pre-labels reach the target precision
    (point estimate); None when no cut does (the class should get no automatic pre-labels)."""
    scores, correct = np.asarray(scores, float), np.asarray(correct, bool)
    order = np.argsort(-scores)
    hits = np.cumsum(correct[order])
    precision = hits / np.arange(1, len(order) + 1)
    good = np.flatnonzero((precision >= target) & (scores[order] > current))
    if not len(good):
        return None
    return float(scores[order][good[-1]])
