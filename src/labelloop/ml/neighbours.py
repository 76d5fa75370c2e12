"""Nearest neighbours by cosine similarity: exact (numpy, in blocks) up to EXACT_LIMIT items, hnswlib beyond
(on vectors compacted to COMPACT_DIM dimensions).

Arrays in, arrays out. Vectors are L2-normalised first, so cosine similarity is a dot product. Memory stays
bounded: exact search holds one BLOCK×N block of similarities at a time; the approximate index holds the vectors
once more (float32) plus its graph (M links per item).

The products run on one BLAS thread: on a busy machine OpenBLAS threads spin while waiting for a core, and the
SVD and the exact search took 2.7-4× as long with two than with one (docs/benchmarks.md); hnswlib has its own
`threads`.

A quality run reads the same embeddings in several checks; `NeighbourCache` computes their compaction and their
neighbours once and hands each check the slice it asks for.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np

log = logging.getLogger(__name__)
EXACT_LIMIT = 50_000  # above this many items the exact search (N² dot products) is slower than building an index
BLOCK = 1024  # query rows per block of the exact search: BLOCK × N float32 similarities in memory at once
HNSW_M = 16  # links per node of the hnswlib graph
HNSW_EF = 100  # search breadth when building and querying (its recall is measured in docs/quality.md)
COMPACT_DIM = 128  # above EXACT_LIMIT items, vectors are projected to this many dimensions first
FIT_SAMPLE = 20_000  # rows the projection is fitted on


def compact(X: np.ndarray, dim: int = COMPACT_DIM, seed: int = 0) -> np.ndarray:
    """Unit rows projected onto their top `dim` singular directions (truncated SVD, fitted on a seeded sample,
    no centring: dot products, hence cosine similarities, are kept as well as `dim` directions allow)."""
    if X.shape[1] <= dim or len(X) <= dim:
        return unit_rows(X)
    from sklearn.decomposition import TruncatedSVD
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(seed)
    sample = unit_rows(X[np.sort(rng.choice(len(X), min(len(X), FIT_SAMPLE), replace=False))])
    out = np.empty((len(X), dim), np.float32)
    with threadpool_limits(limits=1, user_api="blas"):
        svd = TruncatedSVD(dim, algorithm="randomized", random_state=seed).fit(sample)
        for start in range(0, len(X), 10_000):  # in blocks: no full-size copy of the input
            out[start:start + 10_000] = svd.transform(unit_rows(X[start:start + 10_000]))
    return unit_rows(out)


def unit_rows(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, np.float32)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def exact_neighbours(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices N×k, similarities N×k) of each row's k most similar other rows, most similar first."""
    X = unit_rows(X)
    n = len(X)
    k = min(k, n - 1)
    index = np.zeros((n, max(k, 0)), np.int64)
    similarity = np.zeros((n, max(k, 0)), np.float32)
    if k <= 0:
        return index, similarity
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        for start in range(0, n, BLOCK):
            block = X[start : start + BLOCK] @ X.T
            rows = np.arange(len(block))
            block[rows, start + rows] = -np.inf  # an item is not its own neighbour
            top = np.argpartition(-block, k - 1, axis=1)[:, :k]
            values = np.take_along_axis(block, top, axis=1)
            order = np.argsort(-values, axis=1)
            index[start : start + len(block)] = np.take_along_axis(top, order, axis=1)
            similarity[start : start + len(block)] = np.take_along_axis(values, order, axis=1)
    return index, similarity


def approximate_neighbours(X: np.ndarray, k: int, *, seed: int = 0, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The same answer from an hnswlib graph (cosine space): approximate, O(N log N)."""
    import hnswlib

    X = unit_rows(X)
    n, dim = X.shape
    k = min(k, n - 1)
    graph = hnswlib.Index(space="ip", dim=dim)
    graph.init_index(max_elements=n, ef_construction=HNSW_EF, M=HNSW_M, random_seed=seed)
    graph.set_num_threads(threads)
    graph.add_items(X, np.arange(n))
    graph.set_ef(max(HNSW_EF, k + 2))
    labels, distances = graph.knn_query(X, k=k + 1)
    labels, similarity = labels.astype(np.int64), (1.0 - distances).astype(np.float32)
    # Drop each item itself (usually first; a duplicate may come before it), keeping k others.
    own = labels == np.arange(n)[:, None]
    keep = ~own
    keep[own.sum(axis=1) == 0, -1] = False
    return labels[keep].reshape(n, k), similarity[keep].reshape(n, k)


def neighbours(X: np.ndarray, k: int, *, exact_limit: int = EXACT_LIMIT, seed: int = 0,
               threads: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """k nearest others by cosine similarity: exact up to `exact_limit` items, hnswlib above."""
    if len(X) <= exact_limit:
        return exact_neighbours(X, k)
    log.info("approximate neighbours (hnswlib) over %d items", len(X))
    return approximate_neighbours(compact(X, seed=seed), k, seed=seed, threads=threads)


def recall_at_k(approximate: np.ndarray, exact: np.ndarray) -> float:
    """Share of the exact k nearest neighbours that the approximate search found."""
    hits = sum(len(set(a.tolist()) & set(e.tolist())) for a, e in zip(approximate, exact))
    return hits / max(exact.size, 1)


def digest(X: np.ndarray) -> str:
    """A key for a matrix's content: its shape, dtype and bytes (SHA-256: ~0.3 s for 100,000 × 1280 float32)."""
    X = np.ascontiguousarray(X)
    return f"{X.shape}:{X.dtype}:{hashlib.sha256(X.data).hexdigest()}"


class NeighbourCache:
    """Compacted vectors and nearest neighbours, computed once per matrix and seed, shared by the checks of one
    quality run (at 100,000 items the SVD and the hnswlib graph were built once per check, docs/benchmarks.md).

    Keyed by content (`digest`), so two checks that load the same embeddings separately still share. The
    neighbours are computed for the most any reader asks (`k`, or more when asked) and sliced: the first j of an
    exact or hnswlib answer for k are the answer for j (up to ties in similarity; hnswlib searches with the same
    breadth, HNSW_EF, for any k below it)."""

    def __init__(self, k: int = 0, *, threads: int = 2):
        self.k, self.threads = k, threads
        self._compacted: dict[tuple[str, int], np.ndarray] = {}
        self._found: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}

    def compacted(self, X: np.ndarray, *, seed: int = 0, key: str | None = None) -> np.ndarray:
        """X as the search reads it: compacted above EXACT_LIMIT items, itself below."""
        if len(X) <= EXACT_LIMIT:
            return X
        cached = (key or digest(X), seed)
        if cached not in self._compacted:
            self._compacted[cached] = compact(X, seed=seed)
        return self._compacted[cached]

    def neighbours(self, X: np.ndarray, k: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(indices, similarities) of each row's k nearest others, as `neighbours` gives them."""
        key = digest(X)
        found = self._found.get((key, seed))
        if found is None or found[0].shape[1] < min(k, len(X) - 1):
            wanted = max(k, self.k)
            if len(X) <= EXACT_LIMIT:
                found = exact_neighbours(X, wanted)
            else:
                log.info("approximate neighbours (hnswlib) over %d items", len(X))
                found = approximate_neighbours(self.compacted(X, seed=seed, key=key), wanted, seed=seed,
                                               threads=self.threads)
            self._found[(key, seed)] = found
        return found[0][:, :k], found[1][:, :k]
