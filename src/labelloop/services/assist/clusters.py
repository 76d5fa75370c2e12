"""Groups of similar items, and "the next page of similar unlabelled images" for grid labelling."""

from __future__ import annotations

import hashlib
import threading
from collections import Counter, OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select

from labelloop.errors import InvalidInput
from labelloop.ml.pretrained import DEFAULT_MODEL
from labelloop.services.labelling.annotations import latest_for_items
from labelloop.services.assist.embeddings import encoder_key, load_embeddings
from labelloop.services.data.project_data import item_pages
from labelloop.services.projects import ProjectInfo
from labelloop.store.tables import ItemRow

PAGE_SIZES = (4, 6, 9)
METHODS = ("kmeans", "hdbscan")
_CACHED = 8  # clusterings kept per process: grid pages ask again after every page of labels
_cache: OrderedDict[tuple, tuple[np.ndarray, int, float | None]] = OrderedDict()
_cache_lock = threading.Lock()


@dataclass
class Cluster:
    id: int  # -1: HDBSCAN's items that belong to no group
    size: int
    unlabelled: int
    labels: dict[str, int]  # labelled items per class inside the cluster
    examples: list[int]  # a few item ids, nearest the cluster's centre first


@dataclass
class Clustering:
    method: str
    k: int
    silhouette: float | None
    encoder: str
    clusters: list[Cluster] = field(default_factory=list)
    assignment: dict[int, int] = field(default_factory=dict)  # item id -> cluster id

    def to_dict(self, *, with_assignment: bool = False) -> dict[str, Any]:
        data = {"method": self.method, "k": self.k, "silhouette": self.silhouette, "encoder": self.encoder,
                "clusters": [asdict(c) for c in self.clusters]}
        if with_assignment:
            data["assignment"] = {str(k): v for k, v in self.assignment.items()}
        return data


@dataclass
class SimilarPage:
    """Unlabelled items to label together in a grid: the first unlabelled item in labelling order and the
    unlabelled items of its cluster most similar to it."""

    cluster: int
    item_ids: list[int]
    remaining_in_cluster: int
    remaining_unlabelled: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _project_items(workspace, project: ProjectInfo) -> tuple[list[int], set[int], dict[int, list[str]]]:
    """Item ids in labelling order, the labelled ones, and their class names."""
    ids: list[int] = []
    labels: dict[int, list[str]] = {}
    for page in item_pages(workspace, project.id, ids_only=True):
        with workspace.session() as session:
            for item_id, row in latest_for_items(session, page).items():
                names = [s["label"] for s in row.shapes if s.get("type") == "class"]
                if names:
                    labels[item_id] = names
        ids.extend(page)
    with workspace.session() as session:
        position = dict(session.execute(select(ItemRow.id, ItemRow.position).where(ItemRow.project_id == project.id)).all())
    ids.sort(key=lambda i: (position[i], i))
    return ids, set(labels), labels


def cluster_project(workspace, project: ProjectInfo, *, method: str = "kmeans", k: int | None = None,
                    model_name: str = DEFAULT_MODEL, weights: str | None = None, seed: int = 0,
                    min_cluster_size: int = 5, examples: int = 9) -> Clustering:
    """Cluster every item of the project on its cached embeddings (normalised)."""
    from labelloop.ml.classifier import normalise
    from labelloop.ml.clustering import hdbscan, kmeans_auto

    if method not in METHODS:
        raise InvalidInput(f"clustering method {method!r}: choose one of {', '.join(METHODS)}")
    if k is not None and k < 1:
        raise InvalidInput(f"--k {k}: give a positive number of clusters, or auto")
    ids, _, labels = _project_items(workspace, project)
    if not ids:
        raise InvalidInput(f"project {project.name!r} has no items to cluster")
    encoder = encoder_key(model_name, weights)
    X = load_embeddings(workspace, ids, encoder)
    if k is not None and k > len(ids):
        raise InvalidInput(f"--k {k}: the project has only {len(ids)} items")
    key = (method, k, seed, min_cluster_size, hashlib.blake2b(X.tobytes(), digest_size=16).digest())
    with _cache_lock:
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
    if found is None:
        if method == "kmeans":
            found = kmeans_auto(X, k, seed)
        else:
            groups = hdbscan(X, min_cluster_size)
            found = (groups, len(set(groups.tolist()) - {-1}), None)
        with _cache_lock:  # keyed by the embeddings themselves (in order), so a new item or encoder misses
            _cache[key] = found
            while len(_cache) > _CACHED:
                _cache.popitem(last=False)
    assigned, k, silhouette = found
    Z = normalise(X)
    result = Clustering(method, int(k), silhouette, encoder, assignment=dict(zip(ids, assigned.tolist())))
    for cluster in sorted(set(assigned.tolist())):
        rows = np.flatnonzero(assigned == cluster)
        centre = Z[rows].mean(axis=0)
        nearest = rows[np.argsort(-(Z[rows] @ centre), kind="stable")]
        counts = Counter(name for r in rows for name in labels.get(ids[r], []))
        result.clusters.append(Cluster(int(cluster), len(rows), sum(ids[r] not in labels for r in rows),
                                       dict(counts.most_common()), [ids[r] for r in nearest[:examples]]))
    result.clusters.sort(key=lambda c: (c.id == -1, -c.size))
    return result


def next_similar_page(workspace, project: ProjectInfo, size: int = 9, *, clustering: Clustering | None = None,
                      **cluster_options) -> SimilarPage | None:
    """The next grid of similar unlabelled items (4, 6 or 9), or None when everything is labelled.

    The page starts at the first unlabelled item in the project's shuffled labelling order, so pages carry no
    bias of their own; labelling the page moves on to the next one."""
    from labelloop.ml.clustering import nearest_first

    if size not in PAGE_SIZES:
        raise InvalidInput(f"page size {size}: choose one of {', '.join(map(str, PAGE_SIZES))}")
    ids, labelled, _ = _project_items(workspace, project)
    unlabelled = [i for i in ids if i not in labelled]
    if not unlabelled:
        return None
    clustering = clustering or cluster_project(workspace, project, **cluster_options)
    first = unlabelled[0]
    cluster = clustering.assignment[first]
    mates = np.array([i for i in unlabelled if clustering.assignment[i] == cluster and cluster != -1] or [first])
    X = load_embeddings(workspace, [first, *mates.tolist()], clustering.encoder)
    order = nearest_first(X, 0, np.arange(1, len(X)))
    page = list(dict.fromkeys([first, *(int(mates[r - 1]) for r in order)]))[:size]
    return SimilarPage(int(cluster), page, len(mates) - len(page), len(unlabelled))
