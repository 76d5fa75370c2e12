"""Project counts: items per split and state, shapes per class, work per annotator, predictions."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import func, select

from labelloop.domain import CLASS_KINDS
from labelloop.services.projects import get_project
from labelloop.store.tables import ItemRow, LatestAnnotationLabelRow, LatestAnnotationRow, ModelRow, PredictionRow


def project_stats(workspace, name: str) -> dict[str, Any]:
    with workspace.session() as session:
        project = get_project(session, name)
        splits = dict(session.execute(
            select(ItemRow.split, func.count()).where(ItemRow.project_id == project.id).group_by(ItemRow.split)).all())
        counted = select(PredictionRow.review_state, func.count()).join(ItemRow, ItemRow.id == PredictionRow.item_id)
        if project.kind in CLASS_KINDS:
            counted = counted.where(PredictionRow.shape_count > 0)  # no class: a ranking score, not a pre-label
        predictions = dict(session.execute(
            counted.where(ItemRow.project_id == project.id).group_by(PredictionRow.review_state)).all())
        models = session.scalar(select(func.count()).select_from(ModelRow).where(ModelRow.project_id == project.id))
        # the newest non-draft revision of each item, as the triggers of migration 0010 keep it
        work = session.execute(
            select(LatestAnnotationRow.state, LatestAnnotationRow.author, func.count())
            .where(LatestAnnotationRow.project_id == project.id, LatestAnnotationRow.shape_count > 0)
            .group_by(LatestAnnotationRow.state, LatestAnnotationRow.author)
            .order_by(LatestAnnotationRow.state, LatestAnnotationRow.author)).all()
        labels = session.execute(
            select(LatestAnnotationLabelRow.label, func.count(), func.sum(LatestAnnotationLabelRow.shapes))
            .where(LatestAnnotationLabelRow.project_id == project.id)
            .group_by(LatestAnnotationLabelRow.label).order_by(LatestAnnotationLabelRow.label)).all()
    per_class: Counter[str] = Counter({c.name: 0 for c in project.classes})
    items_per_class: Counter[str] = Counter({c.name: 0 for c in project.classes})
    per_author: Counter[str] = Counter()
    states: Counter[str] = Counter()
    for state, author, count in work:
        states[state] += count
        per_author[author] += count
    for label, items, shapes in labels:
        items_per_class[label] += items
        per_class[label] += int(shapes)
    annotated = sum(states.values())
    total = sum(splits.values())
    return {
        "project": project.name,
        "kind": project.kind.value,
        "items": total,
        "annotated_items": annotated,
        "unlabelled_items": total - annotated,
        "items_per_split": {s: splits.get(s, 0) for s in ("train", "val", "test", "none")},
        "annotation_states": dict(states),
        "shapes_per_class": dict(per_class),
        "items_per_class": dict(items_per_class),
        "items_per_annotator": dict(sorted(per_author.items())),
        "predictions": dict(predictions),
        "models": models or 0,
    }
