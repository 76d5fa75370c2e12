"""Predictions: what a model suggested, waiting for review."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from labelloop.errors import InvalidInput, NotFound
from labelloop.store.tables import PredictionDismissalRow, PredictionRow

REVIEW_STATES = ("pending", "accepted", "edited", "rejected")


def latest_predictions_for_items(session: Session, item_ids: Iterable[int]) -> dict[int, PredictionRow]:
    """The newest prediction of each item that was not rejected."""
    ids = list(item_ids)
    if not ids:
        return {}
    newest = (
        select(func.max(PredictionRow.id).label("id"))
        .where(PredictionRow.item_id.in_(ids), PredictionRow.review_state != "rejected")
        .group_by(PredictionRow.item_id)
        .subquery()
    )
    rows = session.scalars(select(PredictionRow).join(newest, PredictionRow.id == newest.c.id))
    return {row.item_id: row for row in rows}


def save_predictions(session: Session, rows: Sequence[PredictionRow]) -> int:
    """Add a model's predictions. Each replaces the pending prediction of the same model version on its item, so
    pre-labelling twice never queues an item twice; reviewed predictions stay as history. A prediction that comes
    out the same keeps its row (and the shapes users dismissed from it). Returns how many pending ones were
    replaced."""
    fresh = {(r.item_id, r.model_id): r for r in rows if r.model_id is not None}
    replaced, unchanged = [], set()
    for model_id in {m for _, m in fresh}:
        items = [i for i, m in fresh if m == model_id]
        for start in range(0, len(items), 500):
            pending = session.execute(select(PredictionRow.id, PredictionRow.item_id, PredictionRow.shapes).where(
                PredictionRow.model_id == model_id, PredictionRow.review_state == "pending",
                PredictionRow.item_id.in_(items[start:start + 500])))
            for old_id, item_id, shapes in pending:
                if shapes == fresh[(item_id, model_id)].shapes and (item_id, model_id) not in unchanged:
                    unchanged.add((item_id, model_id))
                else:
                    replaced.append(old_id)
    for start in range(0, len(replaced), 500):
        session.execute(delete(PredictionRow).where(PredictionRow.id.in_(replaced[start:start + 500])))
    session.add_all([r for r in rows if (r.item_id, r.model_id) not in unchanged])
    return len(replaced)


def dismiss(session: Session, prediction_id: int, shape_indexes: Iterable[int], user: str) -> list[int]:
    """Inside a write transaction: hide these shapes of a prediction from `user` for good (a pre-label rejected
    while labelling). Not a review verdict: the prediction stays pending for reviewers. Returns every index
    this user has dismissed on it."""
    row = session.get(PredictionRow, prediction_id)
    if row is None:
        raise NotFound(f"no prediction {prediction_id}")
    wanted = sorted(set(shape_indexes))
    bad = [i for i in wanted if not 0 <= i < len(row.shapes)]
    if bad:
        raise InvalidInput(f"prediction {prediction_id} has {len(row.shapes)} shape(s), numbered from 0; "
                           f"there is no shape {', '.join(map(str, bad))}")
    done = set(dismissed(session, [prediction_id], user).get(prediction_id, []))
    for index in wanted:
        if index in done:
            continue
        try:
            with session.begin_nested():  # the same dismissal sent twice at once: the second is a no-op
                session.add(PredictionDismissalRow(prediction_id=prediction_id, shape_index=index, user_name=user))
        except IntegrityError:
            pass
    return sorted(done | set(wanted))


def dismissed(session: Session, prediction_ids: Iterable[int], user: str) -> dict[int, list[int]]:
    """The shape indexes `user` dismissed, per prediction."""
    ids = list(prediction_ids)
    found: dict[int, list[int]] = defaultdict(list)
    if not ids:
        return found
    rows = session.execute(select(PredictionDismissalRow.prediction_id, PredictionDismissalRow.shape_index)
                           .where(PredictionDismissalRow.prediction_id.in_(ids),
                                  PredictionDismissalRow.user_name == user)
                           .order_by(PredictionDismissalRow.shape_index))
    for prediction_id, index in rows:
        found[prediction_id].append(index)
    return found
