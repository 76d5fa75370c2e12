"""Label errors by confident learning (cleanlab) on cross-fitted probabilities: each labelled item is scored by a
classifier that never trained on it, so a wrong label cannot vouch for itself.

Arrays in, arrays out: `cross_fitted_proba` (embeddings + labels -> out-of-sample probabilities), `label_issues`
(probabilities + labels -> flagged and a suspicion score), `neighbour_votes` and `reason` (the words a person
reads beside the suspect).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.base import clone

from labelloop.ml.calibration import held_out_folds
from labelloop.ml.neighbours import NeighbourCache

FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given")
DEFAULT_FILTER = "prune_by_noise_rate"  # chosen on hymenoptera, reported on clothing10 (docs/quality.md)
FOLDS = 5
VOTERS = 8  # nearest labelled neighbours quoted in a reason
# The default cut (multi-class): cleanlab flags the item AND at least this share of its VOTERS nearest labelled
# neighbours carry another label. Chosen on hymenoptera with 10 % flipped labels (precision 0.67 -> 0.88 at
# recall ~0.9), reported on clothing10 (docs/quality.md). Multi-label items use cleanlab's flag alone.
VOTE_CUT = 0.5


def cross_fitted_proba(X: np.ndarray, y: np.ndarray, n_classes: int, *, estimator=None, folds: int = FOLDS,
                       seed: int = 0, threads: int = 1) -> np.ndarray:
    """N×K probabilities, each row from a model fitted on the other folds (seeded, stratified).

    y: class indices (multi-class) or an N×K 0/1 matrix (multi-label, one sigmoid per class). `threads` folds are
    fitted at once, each on one BLAS thread: the logistic regression's products (N×D by D×K) gain little from
    BLAS threads, and on a busy machine spinning BLAS threads cost several times the work (docs/benchmarks.md).
    The probabilities do not depend on `threads`."""
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    from labelloop.ml.classifier import EmbeddingClassifier

    if threads < 1:
        raise ValueError(f"threads must be 1 or more, got {threads}")
    y = np.asarray(y)
    multilabel = y.ndim == 2
    base = estimator if estimator is not None else EmbeddingClassifier(multilabel=multilabel, random_state=seed)
    fold = held_out_folds(y, 1.0 / folds, seed)
    proba = np.zeros((len(y), n_classes))

    def fit_fold(f: int) -> None:
        test, train = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
        model = clone(base).fit(X[train], y[train])
        p = model.predict_proba(X[test])
        if multilabel:
            proba[test] = p
        else:
            proba[np.ix_(test, np.asarray(model.classes_, int))] = p

    with threadpool_limits(limits=1, user_api="blas"):
        if threads == 1:
            for f in np.unique(fold):
                fit_fold(f)
        else:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(fit_fold, np.unique(fold)))
    return proba


def label_issues(proba: np.ndarray, y: np.ndarray, *, filter_by: str = DEFAULT_FILTER
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(flagged N bool, score N in [0, 1]: 1 - cleanlab's self-confidence label quality, higher = more suspect)."""
    if filter_by not in FILTERS:
        raise ValueError(f"filter {filter_by!r}: choose one of {', '.join(FILTERS)}")
    y = np.asarray(y)
    proba = np.clip(np.asarray(proba, np.float64), 1e-6, 1.0)
    if y.ndim == 2:
        from cleanlab.multilabel_classification.filter import find_label_issues
        from cleanlab.multilabel_classification.rank import get_label_quality_scores

        labels = [np.flatnonzero(row).tolist() for row in y]
        proba = np.minimum(proba, 1 - 1e-6)
        flagged = find_label_issues(labels, proba, filter_by=filter_by, n_jobs=1)
        quality = get_label_quality_scores(labels, proba)
    else:
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores

        proba = proba / proba.sum(axis=1, keepdims=True)
        flagged = find_label_issues(y, proba, filter_by=filter_by, n_jobs=1)
        quality = get_label_quality_scores(y, proba)
    return np.asarray(flagged, bool), 1.0 - np.asarray(quality, np.float64)


def neighbour_votes(X: np.ndarray, y: np.ndarray, n_classes: int, k: int = VOTERS, *,
                    found: tuple | None = None) -> np.ndarray:
    """N×K counts: the labels of each item's k nearest other labelled items (cosine on embeddings; `found`:
    neighbours computed already, k or more per row, most similar first)."""
    from labelloop.ml.neighbours import neighbours

    y = np.asarray(y)
    if len(y) < 2:
        return np.zeros((len(y), n_classes), np.int64)
    index = (found if found is not None else neighbours(X, k))[0][:, :k]
    if y.ndim == 2:
        return y[index].sum(axis=1).astype(np.int64)
    votes = np.zeros((len(y), n_classes), np.int64)
    np.add.at(votes, (np.repeat(np.arange(len(y)), index.shape[1]), y[index].ravel()), 1)
    return votes


@dataclass
class Suspect:
    index: int
    score: float
    reason: str
    suggested: list[str]  # the label(s) the evidence points to


def reason(names: Sequence[str], given, proba: np.ndarray, votes: np.ndarray) -> tuple[str, list[str]]:
    """Why one item is suspect, in words, and the label it most likely should have."""
    voters = int(votes.sum()) if np.ndim(given) == 0 else None
    if np.ndim(given) == 0:
        given = int(given)
        top = int(proba.argmax())
        text = f"labelled {names[given]}; the model says {names[top]} with {proba[top]:.2f}"
        if top == given:
            text = f"labelled {names[given]}; the model gives it only {proba[given]:.2f}"
        if voters:
            best = int(votes.argmax())
            text += f", and {int(votes[best])} of its {voters} nearest labelled neighbours are {names[best]}"
        return text, [names[top]]
    given = np.asarray(given) > 0
    k = max(int(votes.max()) if votes.size else 0, 1)
    parts = []
    for c in np.flatnonzero(given & (proba < 0.5)):
        parts.append(f"labelled {names[c]}, the model gives it {proba[c]:.2f}")
    for c in np.flatnonzero(~given & (proba >= 0.5)):
        parts.append(f"not labelled {names[c]}, the model says {proba[c]:.2f}")
    if not parts:
        c = int(np.argmax(np.abs(given.astype(float) - proba)))
        parts.append(f"{names[c]} is the least certain label ({proba[c]:.2f})")
    suggested = [names[c] for c in np.flatnonzero(proba >= 0.5)]
    text = "; ".join(parts)
    if votes.size and votes.sum():
        common = [f"{names[c]} {int(votes[c])}" for c in np.argsort(-votes)[:3] if votes[c]]
        text += f" (nearest labelled neighbours: {', '.join(common)})"
    return text, suggested


def disagreement(votes: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Share of each item's voting neighbours whose label differs from its own (multi-class)."""
    total = np.maximum(votes.sum(axis=1), 1)
    return 1.0 - votes[np.arange(len(y)), y] / total


def find_suspects(X: np.ndarray, y: np.ndarray, names: Sequence[str], *, proba: np.ndarray | None = None,
                  filter_by: str = DEFAULT_FILTER, vote_cut: float | None = VOTE_CUT, seed: int = 0,
                  estimator_factory: Callable | None = None, found: tuple | None = None,
                  cache: NeighbourCache | None = None,
                  threads: int = 1) -> tuple[list[Suspect], np.ndarray, np.ndarray]:
    """(flagged suspects most suspect first, every item's score, the cross-fitted probabilities).

    X: embeddings (the classifier is cross-fitted on them, and the neighbours' votes read them); `vote_cut` None
    keeps cleanlab's flag alone; `cache`: compaction and neighbours shared with other checks of the same run;
    `threads`: folds fitted at once (cross_fitted_proba)."""
    y = np.asarray(y)
    cache = cache if cache is not None else NeighbourCache(VOTERS)
    if found is None:
        found = cache.neighbours(X, VOTERS, seed=seed)
    # bounded memory and time: the classifier reads compacted embeddings at scale (the neighbours' own)
    X = cache.compacted(X, seed=seed)
    if proba is None:
        proba = cross_fitted_proba(X, y, len(names), estimator=estimator_factory() if estimator_factory else None,
                                   seed=seed, threads=threads)
    flagged, score = label_issues(proba, y, filter_by=filter_by)
    votes = neighbour_votes(X, y, len(names), found=found)
    if vote_cut is not None and y.ndim == 1:
        flagged &= disagreement(votes, y) >= vote_cut
    suspects = []
    for i in np.flatnonzero(flagged):
        text, suggested = reason(names, y[i], proba[i], votes[i])
        suspects.append(Suspect(int(i), float(score[i]), text, suggested))
    return sorted(suspects, key=lambda s: -s.score), score, proba
