"""Sampling strategies (active learning): which unlabelled item a person should label next.

A strategy is a pure function of the pool's scores and/or embeddings -> an order (indices into the pool, the item
to label first first). One registry, one `@strategy` line per strategy: the queue (services/assist/sampling.py)
caches the order per model version, and the simulation (services/assist/simulation) uses the same functions.

Uncertainty comes from class probabilities (N x K) when a model gives them; tasks without them (boxes, masks) pass
an `uncertainty` vector instead (higher = less certain: an image score from box scores and counts, mean pixel
entropy, uncertain area), which least-confidence, margin and entropy then read as it is."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from labelloop.errors import InvalidInput

STRATEGIES: dict[str, Callable[..., Any]] = {}
NEEDS: dict[str, tuple[str, ...]] = {}  # what each strategy reads: "scores" (probabilities or uncertainty), "embeddings"


@dataclass
class PoolScores:
    """What a model says about the unlabelled pool (row n = pool item n)."""

    size: int
    probabilities: Any = None  # N x K class probabilities (rows sum to 1, or per-class sigmoids)
    uncertainty: Any = None  # N, higher = less certain; used where there are no probabilities
    embeddings: Any = None  # N x D features (diversity)
    labelled_embeddings: Any = None  # M x D features of the labelled items (k-center starts from them)


def strategy(name: str, needs: tuple[str, ...] = ()):
    def register(function):
        STRATEGIES[name] = function
        NEEDS[name] = needs
        return function

    return register


def strategy_names() -> list[str]:
    return list(STRATEGIES)


def check_strategy(name: str) -> str:
    if name not in STRATEGIES:
        raise InvalidInput(f"unknown sampling strategy {name!r}; choose one of: {', '.join(STRATEGIES)}")
    return name


def order(name: str, pool: PoolScores, seed: int = 0):
    """The pool's indices, the item to label first first."""
    import numpy as np

    check_strategy(name)
    if pool.size == 0:
        return np.zeros(0, np.int64)
    if "scores" in NEEDS[name] and pool.probabilities is None and pool.uncertainty is None:
        raise InvalidInput(f"sampling strategy {name!r} needs model scores of the pool; train a model first")
    if "embeddings" in NEEDS[name] and pool.embeddings is None:
        raise InvalidInput(f"sampling strategy {name!r} needs embeddings of the pool; run `labelloop embed` first")
    result = np.asarray(STRATEGIES[name](pool, np.random.default_rng(seed)), np.int64)
    if sorted(result.tolist()) != list(range(pool.size)):  # a strategy must order every item exactly once
        raise RuntimeError(f"strategy {name!r} returned an order that is not a permutation of the pool")
    return result


def _ascending(values, rng):
    """Indices by value, ties broken by a seeded shuffle (not by position, which would favour old items)."""
    import numpy as np

    values = np.asarray(values, np.float64)
    tiebreak = rng.permutation(len(values))
    return np.lexsort((tiebreak, values))


def _certainty(pool: PoolScores, kind: str):
    """Per item, lower = less certain, for one uncertainty measure."""
    import numpy as np

    if pool.probabilities is None:
        return -np.asarray(pool.uncertainty, np.float64)
    p = np.clip(np.asarray(pool.probabilities, np.float64), 1e-12, 1.0)
    if p.ndim == 1:
        p = np.stack([1 - p, p], axis=1)
    if kind == "least-confidence":
        return p.max(axis=1)
    if kind == "margin":
        top = np.sort(p, axis=1)
        return top[:, -1] - top[:, -2] if p.shape[1] > 1 else top[:, -1]
    return (p * np.log(p)).sum(axis=1)  # entropy, negated: lower = more uncertain


@strategy("random")
def random_order(pool: PoolScores, rng):
    return rng.permutation(pool.size)


@strategy("least-confidence", needs=("scores",))
def least_confidence(pool: PoolScores, rng):
    return _ascending(_certainty(pool, "least-confidence"), rng)


@strategy("margin", needs=("scores",))
def margin(pool: PoolScores, rng):
    return _ascending(_certainty(pool, "margin"), rng)


@strategy("entropy", needs=("scores",))
def entropy(pool: PoolScores, rng):
    return _ascending(_certainty(pool, "entropy"), rng)


def _unit(x):
    import numpy as np

    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@strategy("k-center", needs=("embeddings",))
def k_center(pool: PoolScores, rng):
    """Greedy k-center (Sener & Savarese 2018): each next item is the one farthest (cosine) from everything
    labelled or picked so far; with nothing labelled the first is a seeded random pick."""
    import numpy as np

    x = _unit(pool.embeddings)
    n = len(x)
    if pool.labelled_embeddings is not None and len(pool.labelled_embeddings):
        nearest = 1 - (x @ _unit(pool.labelled_embeddings).T).max(axis=1)
    else:
        nearest = np.full(n, np.inf)
    picked = np.zeros(n, bool)
    result = []
    for _ in range(n):
        if np.isinf(nearest).all():
            choice = int(rng.integers(n))
        else:
            candidates = np.where(picked, -np.inf, nearest)
            choice = int(np.argmax(candidates))
        result.append(choice)
        picked[choice] = True
        nearest = np.minimum(nearest, 1 - x @ x[choice])
        nearest[picked] = -np.inf
    return result


@strategy("hybrid", needs=("scores", "embeddings"))
def hybrid(pool: PoolScores, rng, clusters: int | None = None):
    """Uncertainty within diversity: k-means clusters of the embeddings, margin order inside each cluster, and the
    clusters taken in turn (the cluster whose best item is least certain first), so a batch spreads over the pool
    instead of piling onto one confusing corner of it."""
    import numpy as np
    from sklearn.cluster import KMeans

    n = pool.size
    k = clusters or max(1, min(20, n // 10))
    certainty = _certainty(pool, "margin")
    if k <= 1:
        return _ascending(certainty, rng)
    labels = KMeans(n_clusters=k, n_init=3, random_state=int(rng.integers(2**31))).fit_predict(_unit(pool.embeddings))
    within = [members[_ascending(certainty[members], rng)] for members in
              (np.flatnonzero(labels == c) for c in range(k)) if len(members)]
    within.sort(key=lambda m: certainty[m[0]])
    result = []
    for depth in range(max(len(m) for m in within)):
        result.extend(int(m[depth]) for m in within if depth < len(m))
    return result
