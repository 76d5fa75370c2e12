"""Active learning in the real queue: the project's sampling strategy ranks the open items once per model version,
and `next` (and the grid) read the cached rank; nothing is scored per request.

`labelloop project set NAME sampling=margin` (or PATCH /api/projects/{id}) picks a strategy of
services/labelling/strategies.py; ranks are computed then, and again after each training or prediction of the
project (train/predict jobs, automatic retraining). They are kept in `item_ranks` (project, item, model version,
strategy, rank) and copied onto `queue_items.rank`, which the queue orders by (unranked items last, in the
project's shuffled order).

How a model kind scores the pool is its own business: a scorer registered per model kind
(`@pool_scorer("classifier")`) returns a `PoolScores`; kinds without one are ranked by their predictions' item
scores (1 - score = uncertainty)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import delete, select, update

from labelloop.errors import InvalidInput, NotFound
from labelloop.services.labelling import stack_order
from labelloop.services.labelling.strategies import PoolScores, check_strategy, order, STRATEGIES
from labelloop.services.projects import ProjectInfo
from labelloop.store.tables import ItemRankRow, PredictionRow, QueueItemRow

log = logging.getLogger(__name__)
SCORERS: dict[str, Callable[..., PoolScores]] = {}


def pool_scorer(model_kind: str):
    def register(function):
        SCORERS[model_kind] = function
        return function

    return register


def uses_strategy(project: ProjectInfo) -> str | None:
    """The project's sampling strategy when it is a model-driven one (not the plain shuffled/sequential orders)."""
    name = project.settings.get("sampling", "shuffled")
    return name if name in STRATEGIES else None


def open_items(workspace, project: ProjectInfo) -> list[int]:
    """Items the queue may still hand out, in its shuffled order."""
    with workspace.session() as session:
        return list(session.scalars(select(QueueItemRow.item_id).where(QueueItemRow.project_id == project.id)
                                    .order_by(QueueItemRow.position, QueueItemRow.item_id)))


def newest_model(workspace, project: ProjectInfo):
    """The project's newest ready model of any kind (a micro-model `micro:CLASS` included), or None."""
    from labelloop.services.assist.models import newest_ready_model

    return newest_ready_model(workspace, project)


def scorer_for(model) -> Callable[..., PoolScores] | None:
    """The model kind's pool scorer; every micro-model (`micro:CLASS`) and a chain of them share the chain's."""
    if model is None:
        return None
    return SCORERS.get(model.kind) or (SCORERS.get("micro") if model.kind.startswith("micro:") else None)


def pool_scores(workspace, project: ProjectInfo, model, item_ids: Sequence[int], labelled_ids: Sequence[int] = ()
                ) -> PoolScores:
    """What `model` says about these items (probabilities, uncertainty, embeddings), for a strategy to order."""
    scorer = scorer_for(model)
    if scorer is not None:
        return scorer(workspace, project, model, list(item_ids), list(labelled_ids))
    import numpy as np

    pool = PoolScores(size=len(item_ids))
    if model is not None:
        with workspace.session() as session:
            scores = dict(session.execute(select(PredictionRow.item_id, PredictionRow.score).where(
                PredictionRow.model_id == model.id, PredictionRow.item_id.in_(list(item_ids)))).all())
        pool.uncertainty = np.array([1 - scores[i] if scores.get(i) is not None else 1.0 for i in item_ids])
    return pool


@pool_scorer("classifier")
def _classifier_scores(workspace, project, model, item_ids: list[int], labelled_ids: list[int]) -> PoolScores:
    """Class probabilities from the stored classifier, and the embeddings it reads (cached; none computed here)."""
    from labelloop.services.assist.embeddings import cached_ids, encoder_key, load_embeddings
    from labelloop.services.assist.model_kinds import get_model_kind
    from labelloop.services.assist.models import load_estimator

    params = model.params
    key = encoder_key(params["encoder"], params.get("weights"))
    if params.get("head") != "logreg" or len(cached_ids(workspace, item_ids, key)) < len(item_ids):
        return pool_scores(workspace, project, None, item_ids)  # no cheap scores: the rank falls back to shuffled
    kind = get_model_kind("classifier")
    prelabeller = load_estimator(workspace, model)
    proba = prelabeller.predict_proba(kind._inputs(workspace, item_ids, dict(params))) if item_ids else None
    labelled = [i for i in labelled_ids if i in cached_ids(workspace, labelled_ids, key)]
    return PoolScores(size=len(item_ids), probabilities=proba, embeddings=load_embeddings(workspace, item_ids, key),
                      labelled_embeddings=load_embeddings(workspace, labelled, key) if labelled else None)


def refresh_ranks(workspace, project: ProjectInfo, *, model=None, strategy: str | None = None, seed: int | None = None
                  ) -> dict[str, Any] | None:
    """Rank the open items by the strategy (default: the project's) under the model (default: the newest), store
    the ranks and put them on the queue. The `nearest-labelled` order ranks by stack distance instead
    (services/labelling/stack_order.py). None when the project uses no ranked order."""
    if strategy is None and stack_order.uses_order(project.settings):  # a model-free order, ranked by stack
        with workspace.session() as session:
            return stack_order.refresh(session.connection(), project.id)
    name = strategy or uses_strategy(project)
    if name is None:
        return None
    check_strategy(name)
    model = model if model is not None else newest_model(workspace, project)
    items = open_items(workspace, project)
    version = model.ref if model is not None else "none"
    from labelloop.services.data.project_data import labelled_items

    labelled = [item.id for item, _ in labelled_items(workspace, project, ("class", "box", "polygon", "mask"))] \
        if scorer_for(model) is not None else []
    pool = pool_scores(workspace, project, model, items, labelled)
    try:
        ranked = order(name, pool, 0 if seed is None else seed)
    except InvalidInput as exc:  # no model yet, or no embeddings: the queue keeps its shuffled order meanwhile
        log.info("sampling %s for %s falls back to the shuffled order: %s", name, project.name, exc)
        ranked = list(range(len(items)))
    rank_of = {items[int(k)]: r for r, k in enumerate(ranked)}
    with workspace.session() as session:
        session.execute(delete(ItemRankRow).where(ItemRankRow.project_id == project.id,
                                                  ItemRankRow.model_version == version, ItemRankRow.strategy == name))
        session.add_all(ItemRankRow(project_id=project.id, item_id=i, model_version=version, strategy=name, rank=r)
                        for i, r in rank_of.items())
        _apply(session, project.id, rank_of)
    return {"strategy": name, "model": version, "ranked": len(rank_of)}


def _apply(session, project_id: int, rank_of: dict[int, int]) -> None:
    session.execute(update(QueueItemRow).where(QueueItemRow.project_id == project_id).values(rank=None))
    if rank_of:
        session.execute(update(QueueItemRow), [{"item_id": i, "rank": r} for i, r in rank_of.items()])


def refresh_after_model(workspace, project_name: str, model=None) -> dict[str, Any] | None:
    """The train/predict jobs' hook: a failure to rank is logged, never fails the job that trained the model."""
    from labelloop.services.projects import get_project

    try:
        with workspace.session() as session:
            project = get_project(session, project_name)
        return refresh_ranks(workspace, project, model=model)
    except (InvalidInput, NotFound) as exc:
        log.warning("ranking the queue of %s failed: %s", project_name, exc)
        return {"error": str(exc)}


@pool_scorer("micro")
def _chain_scores(workspace, project, model, item_ids: list[int], labelled_ids: list[int]) -> PoolScores:
    """A chain of micro-models (the simulator's chain, or any micro-model, whose pre-labels are the chain's): each
    item's uncertainty is 1 − the item score of its newest chain pre-label (the surest passing chance, else the top
    raw score; 1 without one), and the embeddings its classification micro-models read, when cached, feed the
    diversity strategies (k-center, hybrid)."""
    import numpy as np

    from labelloop.services.assist.embeddings import cached_ids, encoder_key, load_embeddings
    from labelloop.services.assist.micro import CHAIN_VERSION

    with workspace.session() as session:
        scores = dict(session.execute(select(PredictionRow.item_id, PredictionRow.score).where(
            PredictionRow.model_id.is_(None), PredictionRow.model_version == CHAIN_VERSION,
            PredictionRow.item_id.in_(item_ids)).order_by(PredictionRow.id)).all())  # the newest wins
    pool = PoolScores(size=len(item_ids),
                      uncertainty=np.array([1 - scores[i] if scores.get(i) is not None else 1.0 for i in item_ids]))
    params = (getattr(model, "models", None) or [model])[0].params
    if params.get("encoder") and item_ids:
        key = encoder_key(params["encoder"], params.get("weights"))
        if len(cached_ids(workspace, item_ids, key)) == len(item_ids):
            labelled = [i for i in labelled_ids if i in cached_ids(workspace, labelled_ids, key)]
            pool.embeddings = load_embeddings(workspace, item_ids, key)
            pool.labelled_embeddings = load_embeddings(workspace, labelled, key) if labelled else None
    return pool
