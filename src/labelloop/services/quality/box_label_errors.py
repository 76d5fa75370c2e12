"""Label errors of a detection project: cleanlab's object-detection scores on the newest detector's out-of-sample
predictions (its held-out images, and its calibration folds' predictions of the others), against today's boxes.
A missing box, a box in a bad location or a wrong class, with a reason in words per flagged image."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from labelloop.errors import InvalidInput, NotFound
from labelloop.services.projects import ProjectInfo
from labelloop.services.quality.suspects import Found, fingerprint, last_run, store_run

log = logging.getLogger(__name__)
KIND = "label"


def detector_predictions(workspace, project: ProjectInfo):
    """(the model, {item id: out-of-sample detections}, {item id: (the boxes it read as drawn, the box classifier's
    chances for them)}) of the newest ready detector; the second is empty for versions saved before it existed."""
    from labelloop.ml.detection.detector import BoxDetector
    from labelloop.services.assist.models import get_model, read_checkpoint

    try:
        model = get_model(workspace, project, "detector")
    except NotFound:
        raise InvalidInput(f"box label errors are found with the project's detector, and {project.name!r} has none: "
                           f"train one first with `labelloop train {project.name} --model detector`") from None
    detector = BoxDetector.from_checkpoint(read_checkpoint(workspace, model))
    test_ids = set(model.params.get("test_item_ids", []))
    held_ids = [i for i in model.item_ids if i in test_ids]
    train_ids = [i for i in model.item_ids if i not in test_ids]
    held = getattr(detector, "held_out_", ([], []))
    found = dict(zip(held_ids, held[0]))
    drawn = {}
    if getattr(detector, "held_out_drawn_", None) is not None:
        drawn = {i: (t["boxes"], c) for i, t, c in zip(held_ids, held[1], detector.held_out_drawn_)}
    cv = getattr(detector, "cv_", None)
    if cv is not None and "order" in cv[2]:
        found.update({train_ids[k]: p for k, p in zip(cv[2]["order"], cv[0])})
        if "drawn" in cv[2]:
            drawn.update({train_ids[k]: (t["boxes"], c) for k, t, c in zip(cv[2]["order"], cv[1], cv[2]["drawn"])})
    return model, found, drawn


def _same_boxes(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    return a.shape == b.shape and bool(np.allclose(a, b, atol=0.01))


def find_box_label_errors(workspace, project: ProjectInfo, *, force: bool = False,
                          progress=lambda d, t, m: None) -> dict[str, Any]:
    """Score every labelled image the detector predicted out of sample; store the flagged ones as suspects."""
    from labelloop.ml.detection.label_issues import KINDS, find_box_label_issues
    from labelloop.services.data.project_data import labelled_items
    from labelloop.services.labelling.annotations import latest_for_items

    model, predicted, read = detector_predictions(workspace, project)
    every = labelled_items(workspace, project, ("box",))
    rows = [(item, shapes) for item, shapes in every if item.id in predicted]
    labelled = len(every)
    if len(rows) < 10:
        raise InvalidInput(f"{model.ref} predicted {len(rows)} of the {labelled} labelled images out of sample; at "
                           f"least 10 are needed: train the detector with `--set calibration_folds=3` so that every "
                           f"labelled image gets such a prediction")
    ids = [item.id for item, _ in rows]
    with workspace.session() as session:
        versions = {i: r.version for i, r in latest_for_items(session, ids).items()}
    run_fingerprint = fingerprint(model.ref, ids, [versions[i] for i in ids])
    with workspace.session() as session:
        run = last_run(session, project.id, KIND)
        if run is not None and run.fingerprint == run_fingerprint and not force:
            return {**run.summary, "rescored": False}
    progress(0, None, "scoring the boxes")
    index = {c.name: c.index for c in project.classes}
    truths = [{"boxes": np.array([[s.x0, s.y0, s.x1, s.y1] for s in shapes], float).reshape(-1, 4),
               "labels": np.array([index[s.label] for s in shapes], int)} for _, shapes in rows]
    # the boxes as drawn were read at training time: their chances hold while the image's boxes are those boxes
    drawn = [read[i][1] if i in read and _same_boxes(read[i][0], t["boxes"]) else None for i, t in zip(ids, truths)]
    suspects, quality = find_box_label_issues(truths, [predicted[i] for i in ids], project.class_names(), drawn)
    found = [Found(ids[s.index], "label", s.score, s.reason, str(versions[ids[s.index]]),
                   {"issue": s.kind, "issue_words": KINDS[s.kind], "box": s.box}) for s in suspects]
    summary = {"labelled": labelled, "scored": len(ids), "flagged": len(found), "model": model.ref,
               "issues": {KINDS[k]: sum(s.kind == k for s in suspects) for k in KINDS},
               "median_score": round(float(np.median(1 - quality)), 4) if len(quality) else None}
    if len(ids) < labelled:
        summary["not_scored"] = (f"{labelled - len(ids)} labelled image(s) have no out-of-sample prediction from "
                                 f"{model.ref} (labelled since, or trained on without calibration folds)")
    with workspace.session() as session:
        counts = store_run(session, project.id, KIND, found, run_fingerprint, summary)
    log.info("box label errors of %s: %d of %d flagged", project.name, len(found), len(ids))
    return {**summary, **counts, "rescored": True}
