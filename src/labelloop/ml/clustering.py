"""Groups of similar images from their embeddings: k-means with an automatic k, or HDBSCAN."""

from __future__ import annotations

import numpy as np

from labelloop.ml.classifier import normalise

AUTO_K_SAMPLE = 2000  # silhouette scores on at most this many items: k is chosen in seconds on big projects


def candidate_ks(n: int, most: int = 30) -> list[int]:
    """k from 2 up to about sqrt(n/2) (at most `most`): several items per group, even on small projects."""
    top = min(most, max(2, int(np.sqrt(n / 2)) + 1), n - 1)
    return list(range(2, top + 1))


def kmeans_auto(X: np.ndarray, k: int | None = None, seed: int = 0) -> tuple[np.ndarray, int, float | None]:
    """Cluster labels for normalised embeddings; k=None picks the k with the best silhouette score.
    Returns (labels, k, silhouette of the chosen k or None)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    Z = normalise(X)
    if k is not None:
        if len(Z) < k:
            raise ValueError(f"{len(Z)} items cannot form {k} clusters")
        return KMeans(k, n_init=4, random_state=seed).fit_predict(Z), k, None
    if len(Z) < 3:
        return np.zeros(len(Z), np.int64), 1, None
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(Z), AUTO_K_SAMPLE, replace=False) if len(Z) > AUTO_K_SAMPLE else np.arange(len(Z))
    best: tuple[float, int, np.ndarray] | None = None
    for candidate in candidate_ks(len(Z)):
        labels = KMeans(candidate, n_init=4, random_state=seed).fit_predict(Z)
        if len(np.unique(labels[sample])) < 2:
            continue
        score = float(silhouette_score(Z[sample], labels[sample], metric="cosine"))
        if best is None or score > best[0]:
            best = (score, candidate, labels)
    if best is None:
        return np.zeros(len(Z), np.int64), 1, None
    return best[2], best[1], round(best[0], 4)


def hdbscan(X: np.ndarray, min_cluster_size: int = 5) -> np.ndarray:
    """Density clusters of normalised embeddings; -1 marks items that belong to no group."""
    from sklearn.cluster import HDBSCAN

    return HDBSCAN(min_cluster_size=min_cluster_size, copy=True).fit_predict(normalise(X))


def nearest_first(X: np.ndarray, seed_row: int, candidates: np.ndarray) -> np.ndarray:
    """`candidates` (row numbers) ordered by cosine similarity to row `seed_row`, most similar first."""
    Z = normalise(X)
    similarity = Z[candidates] @ Z[seed_row]
    return candidates[np.argsort(-similarity, kind="stable")]
