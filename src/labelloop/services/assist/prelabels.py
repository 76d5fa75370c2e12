"""The pre-label loop around the classifier: retrain every K new labels, and the order of manual labelling."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from labelloop.domain import ProjectKind
from labelloop.errors import InvalidInput, LabelloopError, NotFound
from labelloop.services.labelling.annotations import latest_for_items
from labelloop.services.assist.models import get_model
from labelloop.services.assist.predictions import latest_predictions_for_items
from labelloop.services.data.project_data import item_pages, labelled_items
from labelloop.services.projects import ProjectInfo, get_project

log = logging.getLogger(__name__)
DEFAULT_RETRAIN_EVERY = 50  # project setting `retrain_every`; 0 turns automatic retraining off
MODEL = "classifier"


def new_labels_since_last_model(workspace, project: ProjectInfo) -> tuple[int, Any]:
    """(labelled items the newest classifier has not seen, that model) — (0, None) without a classifier."""
    try:
        model = get_model(workspace, project, MODEL)
    except NotFound:
        return 0, None
    seen = set(model.item_ids)
    return sum(item.id not in seen for item, _ in labelled_items(workspace, project, ("class",))), model


def retrain_if_due(workspace, project_name: str, progress: Callable[[int, int | None, str], None] | None = None
                   ) -> dict[str, Any] | None:
    """Once a classifier exists, train it again (same choices) and refresh the pre-labels of unlabelled items
    when `retrain_every` new labels have arrived. Returns what was done, or None when not due."""
    from labelloop.jobs.registry import JobContext
    from labelloop.services.assist.model_kinds import get_model_kind
    from labelloop.services.data.project_data import select_items

    with workspace.session() as session:
        project = get_project(session, project_name)
    every = int(project.settings.get("retrain_every", DEFAULT_RETRAIN_EVERY) or 0)
    if project.kind not in (ProjectKind.classification, ProjectKind.multilabel) or every <= 0:
        return None
    new, previous = new_labels_since_last_model(workspace, project)
    if previous is None or new < every:
        return None
    kind = get_model_kind(MODEL)
    ctx = JobContext(0, {}, progress or (lambda d, t, m: None), log.info)
    params = {k: v for k, v in previous.params.items() if k not in ("class_names", "reliability_plot_sha256")}
    model = kind.train(workspace, project, params, ctx)
    try:
        ids = select_items(workspace, project)
    except InvalidInput:  # everything is labelled: nothing to pre-label
        return {"model": model.ref, "new_labels": new, "predictions": 0}
    summary = kind.predict(workspace, project, model, ids, {}, ctx)
    from labelloop.services.assist.sampling import refresh_after_model

    refresh_after_model(workspace, project.name, model)
    return {"model": model.ref, "new_labels": new, "predictions": summary["predictions"],
            "prelabelled": summary["prelabelled"]}


def retrain_after_import(workspace, project_name: str, progress) -> dict[str, Any] | None:
    """The import job's hook: a retraining failure is logged, never fails the import that triggered it."""
    try:
        return retrain_if_due(workspace, project_name, progress)
    except LabelloopError as exc:
        log.warning("automatic retraining of %s failed: %s", project_name, exc)
        return {"error": str(exc)}


def manual_labelling_order(workspace, project: ProjectInfo) -> list[int]:
    """Unlabelled items without a pre-label, least certain first (the newest prediction's item score);
    items never predicted keep the project's shuffled order, after the scored ones."""
    scored: list[tuple[float, int, int]] = []
    unscored: list[tuple[int, int]] = []
    for page in item_pages(workspace, project.id):
        with workspace.session() as session:
            ids = [r.id for r in page]
            annotated = latest_for_items(session, ids)
            predicted = latest_predictions_for_items(session, ids)
        for row in page:
            if row.id in annotated:
                continue
            prediction = predicted.get(row.id)
            if prediction is None or prediction.score is None:
                unscored.append((row.position, row.id))
            elif not prediction.shapes:
                scored.append((prediction.score, row.position, row.id))
    return [i for *_, i in sorted(scored)] + [i for _, i in sorted(unscored)]
