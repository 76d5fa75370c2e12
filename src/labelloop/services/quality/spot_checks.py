"""Spot-checks of auto-accepted pre-labels: a seeded random sample per class, sized for a stated interval width,
reviewed in the suspects queue; the achieved precision with its Clopper–Pearson interval; and, when the interval
lies below the target, a raised threshold for that class (the next pre-label run uses it)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
from sqlalchemy import select

from labelloop.errors import InvalidInput
from labelloop.ml.spot_checks import CONFIDENCE, WIDTH, draw, judge, raised_threshold, sample_size
from labelloop.services.labelling.annotations import latest_for_items
from labelloop.services.projects import ProjectInfo, get_row
from labelloop.services.quality.inputs import classifier_model
from labelloop.services.quality.suspects import Found, fingerprint, last_run, store_run
from labelloop.store.tables import PredictionRow, SuspectRow

KIND = "spot_check"
SETTING = "spot_check_thresholds"  # project setting: {class: raised threshold, or null for no pre-labels}


def auto_accepted(workspace, model) -> dict[str, list[tuple[int, int, float, float]]]:
    """Per class: (prediction id, item id, score, threshold) of the model's pre-labels that stand as labels
    (not reviewed, and nobody annotated the item since)."""
    per_class: dict[str, list] = defaultdict(list)
    with workspace.session() as session:
        rows = session.scalars(select(PredictionRow).where(PredictionRow.model_id == model.id,
                                                           PredictionRow.shape_count > 0,
                                                           PredictionRow.review_state == "pending")
                               .order_by(PredictionRow.id)).all()
        annotated = set()
        ids = [r.item_id for r in rows]
        for start in range(0, len(ids), 500):
            annotated.update(latest_for_items(session, ids[start:start + 500]))
    for row in rows:
        if row.item_id in annotated:
            continue
        for shape in row.shapes:
            if shape.get("type") == "class" and (shape.get("attributes") or {}).get("prelabel"):
                per_class[shape["label"]].append((row.id, row.item_id, float(shape.get("score") or 0.0),
                                                  float((shape.get("attributes") or {}).get("threshold") or 0.0)))
    return per_class


def draw_spot_checks(workspace, project: ProjectInfo, *, width: float = WIDTH, confidence: float = CONFIDENCE,
                     seed: int | None = None) -> dict[str, Any]:
    """Put a seeded random sample of each class's auto-accepted pre-labels in the suspects queue (once per model
    and settings: drawing again gives the same sample)."""
    if not 0 < width < 0.5:
        raise InvalidInput(f"interval half-width {width} must lie in (0, 0.5), e.g. 0.03 for ± 3 points")
    if not 0.5 <= confidence < 1:
        raise InvalidInput(f"confidence {confidence} must lie in [0.5, 1)")
    model = classifier_model(workspace, project)
    target = float(project.settings.get("target_precision", 0.95))
    seed = int(0 if seed is None else seed)
    run_fingerprint = fingerprint(model.ref, width, confidence, seed)
    with workspace.session() as session:
        run = last_run(session, project.id, KIND)
        if run is not None and run.fingerprint == run_fingerprint:
            return {**run.summary, "drawn_now": False}
    per_class = auto_accepted(workspace, model)
    if not per_class:
        raise InvalidInput(f"{model.ref} has no auto-accepted pre-labels to check; pre-label items first with "
                           f"`labelloop predict {project.name} --model classifier`")
    found, sizes = [], {}
    rng = np.random.default_rng(seed)
    for label in sorted(per_class):
        entries = per_class[label]
        n = sample_size(target, width, confidence, population=len(entries))
        chosen = draw(list(range(len(entries))), n, seed + sum(map(ord, label)))
        sizes[label] = {"auto_accepted": len(entries), "sample": len(chosen)}
        for k in chosen:
            prediction_id, item_id, score, threshold = entries[k]
            found.append(Found(item_id, label, float(rng.random()),
                               f"auto-accepted as {label} with {score:.2f} (threshold {threshold:.2f}): is it right?",
                               str(prediction_id), {"prediction_id": prediction_id, "label": label, "score": score,
                                                    "threshold": threshold, "model": model.ref}))
    summary = {"model": model.ref, "width": width, "confidence": confidence, "seed": seed, "target": target,
               "classes": sizes, "sample": len(found)}
    with workspace.session() as session:
        store_run(session, project.id, KIND, found, run_fingerprint, summary)
    return {**summary, "drawn_now": True}


def spot_check_report(workspace, project: ProjectInfo, *, apply: bool = True) -> dict[str, Any]:
    """Per class: reviewed spot-checks, precision and its interval against the target; raises the threshold of a
    class whose interval lies below it (with `apply`) and says so."""
    model = classifier_model(workspace, project)
    target = float(project.settings.get("target_precision", 0.95))
    with workspace.session() as session:
        run = last_run(session, project.id, KIND)
        rows = session.scalars(select(SuspectRow).where(SuspectRow.project_id == project.id,
                                                        SuspectRow.kind == KIND, SuspectRow.active.is_(True))).all()
        rows = [r for r in rows if r.details.get("model") == model.ref]
        confidence = float(run.summary.get("confidence", CONFIDENCE)) if run is not None else CONFIDENCE
        per_class: dict[str, list[SuspectRow]] = defaultdict(list)
        for r in rows:
            per_class[r.check].append(r)
        raised = dict(project.settings.get(SETTING) or {})
        classes, messages = {}, []
        for label, members in sorted(per_class.items()):
            reviewed = [r for r in members if r.state in ("kept", "fixed")]
            correct = sum(r.state == "kept" for r in reviewed)
            result = judge(label, correct, len(reviewed), target, confidence)
            entry = {**result.to_dict(), "sample": len(members)}
            if result.verdict == "below":
                current = max(float(r.details.get("threshold", 0.0)) for r in members)
                new = raised_threshold(np.array([r.details["score"] for r in reviewed]),
                                       np.array([r.state == "kept" for r in reviewed]), target, current)
                entry["raised_threshold"] = new
                if apply and raised.get(label, "unset") != new:
                    raised[label] = new
                what = (f"threshold raised from {current:.2f} to {new:.2f}" if new is not None
                        else "no automatic pre-labels for this class until it is trained again")
                messages.append(f"{result.message}: {what}")
            else:
                messages.append(result.message)
            classes[label] = entry
        if apply and raised != (project.settings.get(SETTING) or {}):
            row = get_row(session, project.name, lock=True)
            row.settings = {**row.settings, SETTING: raised}
    return {"model": model.ref, "target": target, "confidence": confidence, "classes": classes,
            "messages": messages, "raised_thresholds": raised}


def apply_raised_thresholds(prelabeller, settings: dict[str, Any]) -> dict[str, float | None]:
    """Raise a pre-labeller's class thresholds to what spot-checks asked for (None: no pre-labels)."""
    raised = settings.get(SETTING) or {}
    applied = {}
    for k, name in enumerate(prelabeller.class_names):
        if name in raised:
            value = np.inf if raised[name] is None else float(raised[name])
            if value > prelabeller.thresholds_[k]:
                prelabeller.thresholds_[k] = value
                applied[name] = raised[name]
    return applied
