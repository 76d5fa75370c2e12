"""Predictions: what a model suggested, waiting for review."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from labelloop.store.tables import PredictionRow

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
