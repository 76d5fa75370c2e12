"""Grid pages of the classifier's suggestions: the queue's next item and the open items the model gives the same
most likely class, most similar first, each shown with its suggested class so a person confirms the page at a
glance and fixes the ones that differ (the grid page's cost in docs/simulate.md).

A suggestion is the classifier's most likely class, whatever its probability: it is shown for a person to check,
never written as a label. Auto-acceptance keeps its calibrated thresholds (items above them have left the queue).
The page's items are leased to the person like `GET /next`'s item (queue.claim_next, then queue.claim_items), so
two people on grid pages never get the same item. Scoring reads the classifier's cached embeddings of at most
`CANDIDATES` items of the queue's head, so a page's cost stops growing with the project (64-70 ms a page from 4,000
to 64,000 items on SQLite, benchmarks/grid_pages.py; a million not measured)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from labelloop.domain import ProjectKind
from labelloop.errors import InvalidInput, NotFound
from labelloop.services.projects import ProjectInfo

CANDIDATES = 2000  # queue items scored per page, from its head
_estimators: OrderedDict[tuple, Any] = OrderedDict()  # (model id, checkpoint) -> the loaded PreLabeller
_estimators_lock = threading.Lock()


@dataclass
class SuggestedPage:
    item_ids: list[int]  # the queue's item first, then the others most similar to it
    suggestions: dict[int, tuple[str, float]]  # item id -> (class, probability)
    page_class: str
    model: str
    remaining_unlabelled: int  # open items in the queue before this page was claimed

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["suggestions"] = {str(i): {"label": c, "score": round(p, 4)} for i, (c, p) in self.suggestions.items()}
        return data


def suggesting_model(workspace, project: ProjectInfo):
    """The project's newest ready classifier, if it can suggest classes cheaply; InvalidInput says why not."""
    from labelloop.services.assist.models import get_model

    if project.kind is not ProjectKind.classification:
        raise InvalidInput(f"suggestions on grid pages serve single-label classification; {project.name!r} is a "
                           f"{project.kind.value} project")
    try:
        model = get_model(workspace, project, "classifier")
    except NotFound as exc:
        raise InvalidInput(f"no classifier to suggest classes yet: {exc}") from None
    if model.params.get("head") != "logreg":
        raise InvalidInput(f"{model.ref} fine-tunes a network (head {model.params.get('head')}): suggestions read "
                           "a logistic-regression classifier on cached embeddings")
    return model


def _estimator(workspace, model):
    from labelloop.services.assist.models import load_estimator

    key = (model.id, model.checkpoint_sha256)
    with _estimators_lock:
        if key in _estimators:
            _estimators.move_to_end(key)
            return _estimators[key]
    estimator = load_estimator(workspace, model)
    with _estimators_lock:
        _estimators[key] = estimator
        while len(_estimators) > 4:
            _estimators.popitem(last=False)
    return estimator


def suggested_page(workspace, project: ProjectInfo, user_id: int, size: int = 9) -> SuggestedPage | None:
    """Claim the next grid page for this user: None when the queue has nothing left for them; InvalidInput (and
    nothing claimed) when no classifier can suggest classes."""
    from sqlalchemy import func, select

    from labelloop.services.assist.clusters import PAGE_SIZES
    from labelloop.services.labelling import queue
    from labelloop.services.transactions import write_transaction
    from labelloop.store.tables import QueueItemRow

    if size not in PAGE_SIZES:
        raise InvalidInput(f"page size {size}: choose one of {', '.join(map(str, PAGE_SIZES))}")
    model = suggesting_model(workspace, project)
    scorer = _Scorer(workspace, model)
    # Scored before the claim, outside the write transaction (which then holds the queue only for the claims).
    with workspace.session() as session:
        remaining = session.scalar(select(func.count()).select_from(QueueItemRow)
                                   .where(QueueItemRow.project_id == project.id)) or 0
        candidates = queue.upcoming(session, project, user_id, CANDIDATES)
    scorer.score(candidates)
    with write_transaction(workspace) as session:
        lease = queue.claim_next(session, project, user_id)
        if lease is None:
            return None
        anchor = lease.item_id
        scorer.score([anchor])  # a lease the user already held is not among the candidates
        if anchor not in scorer.top:  # no embedding yet: a page of the queue's item alone, nothing suggested
            return SuggestedPage([anchor], {}, "", model.ref, int(remaining))
        same = [i for i in candidates if i != anchor and scorer.top.get(i) == scorer.top[anchor]]
        similarity = np.array([scorer.vectors[i] @ scorer.vectors[anchor] for i in same])
        nearest = [same[k] for k in np.argsort(-similarity, kind="stable")]
        claimed: list[int] = []
        cursor = 0
        while len(claimed) < size - 1 and cursor < len(nearest):  # one taken meanwhile by someone: the next one
            chunk = nearest[cursor : cursor + size - 1 - len(claimed)]
            cursor += len(chunk)
            claimed += queue.claim_items(session, project, user_id, chunk)
    page = [anchor, *claimed]
    return SuggestedPage(page, {i: (scorer.names[scorer.top[i]], scorer.probability[i]) for i in page},
                         scorer.names[scorer.top[anchor]], model.ref, int(remaining))


class _Scorer:
    """The classifier's most likely class, its probability and the unit embedding of items (those embedded)."""

    def __init__(self, workspace, model):
        from labelloop.services.assist.embeddings import encoder_key

        self.workspace, self.params = workspace, dict(model.params)
        self.prelabeller = _estimator(workspace, model)
        self.names = list(self.prelabeller.class_names)
        self.encoder = encoder_key(self.params["encoder"], self.params.get("weights"))
        self.top: dict[int, int] = {}
        self.probability: dict[int, float] = {}
        self.vectors: dict[int, np.ndarray] = {}

    def score(self, item_ids: list[int]) -> None:
        from labelloop.services.assist.embeddings import cached_ids, load_embeddings
        from labelloop.services.assist.model_kinds import get_model_kind

        embedded = cached_ids(self.workspace, item_ids, self.encoder)
        ids = [i for i in item_ids if i in embedded and i not in self.top]
        if not ids:
            return
        embeddings = load_embeddings(self.workspace, ids, self.encoder)
        proba = self.prelabeller.predict_proba(get_model_kind("classifier").features_of(embeddings, self.params))
        vectors = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
        for k, item_id in enumerate(ids):
            self.top[item_id] = int(proba[k].argmax())
            self.probability[item_id] = float(proba[k].max())
            self.vectors[item_id] = vectors[k]
