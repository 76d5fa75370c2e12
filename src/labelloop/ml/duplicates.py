"""Duplicates and near-duplicates: exact (content hash), perceptual (pHash within a Hamming distance) and
semantic (embedding cosine similarity at or above a cut), joined into groups with union-find. Given the pictures,
perceptual and semantic pairs only count when the pixels agree as one photograph (ml.same_picture).

Arrays in, groups out. A group holding items of both the training and a held-out split is leakage.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

# Both cuts chosen on hymenoptera with injected copies (docs/quality.md), reported on clothing10: pHash <= 8 of 64
# bits (no pair of distinct pictures up to 10, 4 pairs at 14); cosine >= 0.9 of lite2 pooled embeddings (every 5 %
# crop found, no pair of distinct pictures down to 0.88, one at 0.85). On clothing10 they alone pair 80 different
# pictures (garments on the same floor or carpet), hence the pixel check of ml.same_picture on what they nominate.
MAX_HAMMING = 8
MIN_COSINE = 0.9
NEIGHBOURS = 10  # candidates per item for the semantic search
HELD_OUT_SPLITS = ("test", "val")
KIND_ORDER = ("exact", "perceptual", "semantic")  # the strongest evidence first


def phash(image: np.ndarray) -> int:
    """64-bit perceptual hash (imagehash pHash) of a decoded RGB or grey image, as a signed int64."""
    import imagehash
    from PIL import Image

    bits = imagehash.phash(Image.fromarray(np.asarray(image))).hash.flatten()
    value = int("".join("1" if b else "0" for b in bits), 2)
    return value - (1 << 64) if value >= 1 << 63 else value


PAIR_BLOCK = 1 << 22  # candidate pairs hamming_pairs holds at once
MAX_CHUNK_BITS = 22  # widest chunk hamming_pairs indexes: a table of 2**22 + 1 bucket starts, 32 MB


def _chunk_plan(n: int, max_distance: int) -> tuple[int, int]:
    """(chunks, radius) for hamming_pairs: the cheapest split by expected work per item, for uniform hashes."""
    best = None
    for chunks in range(3, max(max_distance + 1, 3) + 1):
        width = 64 // chunks + (64 % chunks > 0)
        if width > MAX_CHUNK_BITS:
            continue
        radius = -(-(max_distance + 1) // chunks) - 1
        probes = sum(math.comb(width, t) for t in range(min(radius, width) + 1))
        cost = chunks * probes * (1 + n / 2**(64 // chunks))
        if best is None or cost < best[0]:
            best = (cost, chunks, radius)
    return best[1], best[2]


def hamming_pairs(hashes: np.ndarray, max_distance: int = MAX_HAMMING) -> list[tuple[int, int, int]]:
    """(i, j, distance) of every pair within `max_distance` bits, i < j.

    Pigeonhole: split the 64 bits into c chunks; two hashes within d bits differ in at most r bits of one chunk
    when c·(r + 1) > d. Each item looks up, chunk by chunk, the bucket of every value within r bits of its own
    (multi-index hashing), and only those candidates are compared. c and r are chosen for the collection's size:
    with d = 8, nine exact-match chunks below ~1,000 items, five searched within 1 bit up to ~85,000, three
    within 2 bits above (at 100,000, nine 7-bit chunks would compare each item with ~1/128 of the others)."""
    hashes = np.asarray(hashes, np.int64)
    n = len(hashes)
    if n < 2 or max_distance < 0:
        return []
    unsigned = hashes.view(np.uint64)
    chunks, radius = _chunk_plan(n, max_distance)
    bounds = np.linspace(0, 64, chunks + 1).astype(int)
    codes, distances = [], []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        width = int(hi - lo)
        key = ((unsigned >> np.uint64(lo)) & np.uint64((1 << width) - 1)).astype(np.int64)
        order = np.argsort(key, kind="stable")
        starts = np.zeros((1 << width) + 1, np.int64)  # order[starts[v]:starts[v + 1]]: the items whose chunk is v
        np.cumsum(np.bincount(key, minlength=1 << width), out=starts[1:])
        taken = starts[1:] > starts[:-1]  # a table small enough to stay in cache: most probes find nothing
        for t in range(min(radius, width) + 1):
            for bits in itertools.combinations(range(width), t):
                probe = key ^ sum(1 << b for b in bits)
                items = np.flatnonzero(np.take(taken, probe))
                first = starts[probe[items]]
                count = starts[probe[items] + 1] - first
                # in blocks of queries, so that one crowded bucket cannot hold more than PAIR_BLOCK pairs at once
                block_of = np.cumsum(count) // PAIR_BLOCK
                for block in range(int(block_of[-1]) + 1 if len(block_of) else 0):
                    part = block_of == block
                    c = count[part]
                    q = np.repeat(items[part], c)
                    within = np.arange(len(q)) - np.repeat(np.cumsum(c) - c, c)
                    p = order[np.repeat(first[part], c) + within]
                    keep = q < p
                    q, p = q[keep], p[keep]
                    distance = np.bitwise_count(unsigned[q] ^ unsigned[p])
                    close = distance <= max_distance
                    codes.append(q[close] * n + p[close])
                    distances.append(distance[close])
    if not codes:
        return []
    # a pair close in several chunks is found once per chunk
    code, first_seen = np.unique(np.concatenate(codes), return_index=True)
    distance = np.concatenate(distances)[first_seen]
    return list(zip((code // n).tolist(), (code % n).tolist(), distance.astype(int).tolist()))


class UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


@dataclass
class DuplicateGroup:
    members: list[int]  # row indices, smallest first: the first is the one an export keeps
    kind: str  # the strongest evidence joining any pair: exact, perceptual or semantic
    similarity: float  # the weakest link's similarity (1.0 exact; 1 - hamming/64; cosine)
    leakage: bool = False  # members in a training split and in a held-out split
    pairs: list[tuple[int, int, str, float]] = field(default_factory=list)

    @property
    def score(self) -> float:
        """Leakage first, then by how sure the match is."""
        return round((1.0 if self.leakage else 0.0) + self.similarity, 6)


Pair = tuple[int, int, str, float]  # (i, j, kind, similarity), i < j


def exact_pairs(content: Sequence[str]) -> list[Pair]:
    """Rows with the same content key (file hash), each joined to the first of its kind."""
    by_content: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(content):
        by_content[key].append(i)
    return [(m[0], other, "exact", 1.0) for m in by_content.values() if len(m) > 1 for other in m[1:]]


def perceptual_pairs(hashes: np.ndarray, max_hamming: int = MAX_HAMMING) -> list[Pair]:
    return [(i, j, "perceptual", 1.0 - d / 64) for i, j, d in hamming_pairs(hashes, max_hamming)]


def semantic_pairs(embeddings: np.ndarray, min_cosine: float = MIN_COSINE, k: int = NEIGHBOURS, *,
                   found: tuple | None = None) -> list[Pair]:
    """Pairs among each row's k nearest neighbours whose cosine similarity reaches `min_cosine` (`found`:
    neighbours computed already). The neighbour search nominates; each pair's cosine is then taken on the full
    vectors: above EXACT_LIMIT items the search reads vectors compacted to COMPACT_DIM dimensions, whose cosines run
    higher (100,000 synthetic items: ~2,500 pairs at 0.9 compacted were 0.27-0.39 in full)."""
    from labelloop.ml.neighbours import neighbours, unit_rows

    if len(embeddings) < 2:
        return []
    index, similarity = found if found is not None else neighbours(embeddings, k)
    rows, cols = np.nonzero(similarity >= min_cosine)
    candidates = sorted({(min(i, j), max(i, j)) for i, j in zip(rows.tolist(), index[rows, cols].tolist()) if i != j})
    if not candidates:
        return []
    first, second = (np.fromiter((p[n] for p in candidates), np.int64, len(candidates)) for n in (0, 1))
    full = np.empty(len(candidates), np.float32)
    for start in range(0, len(candidates), 10_000):  # in blocks: two 10,000 × D slices at a time
        a, b = unit_rows(embeddings[first[start:start + 10_000]]), unit_rows(embeddings[second[start:start + 10_000]])
        full[start:start + 10_000] = np.einsum("ij,ij->i", a, b)
    return [(i, j, "semantic", float(s)) for (i, j), s in zip(candidates, full.tolist()) if s >= min_cosine]


def group_pairs(pairs: Sequence[Pair], n: int, splits: Sequence[str] | None = None) -> list[DuplicateGroup]:
    """Union-find over the pairs: groups of two or more rows, leakage first, then the surest."""
    joined = UnionFind(n)
    for i, j, _, _ in pairs:
        joined.union(i, j)
    links: dict[int, list[Pair]] = defaultdict(list)
    for pair in pairs:
        links[joined.find(pair[0])].append(pair)
    groups = []
    for root, group_links in links.items():
        group_links = sorted(set(group_links))
        rows = sorted({x for p in group_links for x in p[:2]})
        kind = min((p[2] for p in group_links), key=KIND_ORDER.index)
        # The weakest evidence still needed: the minimum over members of their best link.
        best: dict[int, float] = defaultdict(float)
        for i, j, _, s in group_links:
            best[i], best[j] = max(best[i], s), max(best[j], s)
        leakage = splits is not None and any(splits[i] == "train" for i in rows) and any(
            splits[i] in HELD_OUT_SPLITS for i in rows)
        groups.append(DuplicateGroup(rows, kind, round(min(best[i] for i in rows), 6), bool(leakage), group_links))
    return sorted(groups, key=lambda g: (-g.score, g.members[0]))


def find_duplicates(content: Sequence[str] | None = None, hashes: np.ndarray | None = None,
                    embeddings: np.ndarray | None = None, splits: Sequence[str] | None = None, *,
                    picture: Callable[[int], np.ndarray] | None = None, max_hamming: int = MAX_HAMMING,
                    min_cosine: float = MIN_COSINE, neighbours_k: int = NEIGHBOURS) -> list[DuplicateGroup]:
    """Groups of two or more rows that are the same picture by any of the three tests, leakage first.

    `picture(i)`: row i decoded; when given, perceptual and semantic pairs must also agree pixel for pixel."""
    n = next(len(x) for x in (content, hashes, embeddings) if x is not None)
    pairs: list[Pair] = []
    if content is not None:
        pairs += exact_pairs(content)
    nominated: list[Pair] = []
    if hashes is not None:
        nominated += perceptual_pairs(hashes, max_hamming)
    if embeddings is not None:
        nominated += semantic_pairs(embeddings, min_cosine, neighbours_k)
    if picture is not None:
        nominated = pixel_confirmed(nominated, pairs, picture)
    return group_pairs(pairs + nominated, n, splits)


def pixel_confirmed(nominated: Sequence[Pair], exact: Sequence[Pair], picture: Callable[[int], np.ndarray],
                    progress: Callable[[int, int], None] = lambda done, total: None) -> list[Pair]:
    """The nominated pairs whose pixels agree as one photograph (ml.same_picture); a pair of the same bytes
    (`exact`) agrees without being decoded again."""
    from labelloop.ml.same_picture import same_picture_pairs

    same_bytes = {(i, j) for i, j, *_ in exact}
    known = [p for p in nominated if (p[0], p[1]) in same_bytes]
    return known + same_picture_pairs([p for p in nominated if (p[0], p[1]) not in same_bytes], picture,
                                      progress=progress)
