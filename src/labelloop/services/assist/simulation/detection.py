"""The detection task of the simulated annotator: the detector's box pre-labels verified, adjusted, relabelled,
deleted, and the missing boxes drawn (docs/simulate.md, "Detection").

- **A start item** (no model yet): every true box is drawn (`draw_box`).
- **A queued item**, shown with the detector's pre-labels (its boxes at or above the calibrated threshold; the boxes
  below it are predictions the labelling view does not show): the shown boxes are matched to the true boxes as the
  detector's own evaluation matches them (`ml.detection.evaluation.match`: same class, greedy by score, IoU >= 0.5).
  A matched box with IoU >= 0.9 is verified (`verify_box`), one below 0.9 adjusted (`adjust_box`). Of the boxes
  left, a shown box over a true box of another class (IoU >= 0.5, greedy by score again) gets its class changed
  (`change_class`, plus `adjust_box` below 0.9) or is deleted and the box drawn anew, whichever the cost model in
  use prices lower; every other shown box is deleted (`delete_shape`) and every other true box drawn (`draw_box`).
  The stored label is the truth's boxes.
- **No auto-accept**: the product shows box pre-labels for review and has no rule that accepts them without a
  person (unlike a classifier's calibrated class), so every pool item goes to the person.
- **Quality**: box F1 at IoU >= 0.5 of the final labels against the truth, pooled over items (an item without a
  label has every true box missed); the model's mAP@0.5 (COCO) on the held-out items.
- **Model**: the project's detector, trained each round with `--round-budget` as its `time_budget`. The queue's
  uncertainty strategies read the prediction's image score (its highest box score): uncertainty = 1 - that score,
  1 for an image where the detector found nothing."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import numpy as np

from labelloop.domain import Box, ProjectKind, shape_from_dict
from labelloop.errors import InvalidInput
from labelloop.ml.detection.evaluation import match
from labelloop.services.assist.simulation.annotators import (CheapestOutcome, Outcome, Task, prelabels,
                                                             register_task)
from labelloop.services.assist.simulation.costs import CostModel

MATCH_IOU = 0.5  # a shown box is the true box's when they overlap this much (the detector's own figure)
ADJUST_BELOW = 0.9  # issue 19: a matched box is adjusted when its IoU with the truth is under this, else verified
ORDER = ("verify_box", "adjust_box", "change_class", "delete_shape", "draw_box")  # how an outcome lists its actions


def boxes_of(shapes: Iterable) -> list[Box]:
    """The boxes among shapes or shape dicts."""
    found = [shape_from_dict(s) if isinstance(s, dict) else s for s in shapes]
    return [s for s in found if isinstance(s, Box)]


def _detections(boxes: list[Box], index: dict[str, int]) -> dict[str, np.ndarray]:
    """`match`'s arrays; a box without a score (a person's) counts as certain."""
    return {"boxes": np.array([[b.x0, b.y0, b.x1, b.y1] for b in boxes], float).reshape(-1, 4),
            "labels": np.array([index[b.label] for b in boxes], int),
            "scores": np.array([1.0 if b.score is None else b.score for b in boxes], float)}


def _classes(*groups: list[Box]) -> dict[str, int]:
    return {name: n for n, name in enumerate(sorted({b.label for group in groups for b in group}), 1)}


def _listed(counts: dict[str, float]) -> list[tuple[str, float]]:
    return [(action, counts[action]) for action in ORDER if counts.get(action)]


def box_counts(given: list[Box], truth: list[Box]) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) of `given` boxes against the truth at IoU >= 0.5."""
    if not given or not truth:
        return 0, len(given), len(truth)
    index = _classes(given, truth)
    matched, found = match(_detections(given, index), _detections(truth, index), MATCH_IOU)
    hits = int(found.sum())
    return hits, len(given) - int((matched > 0).sum()), len(truth) - hits


@register_task
class DetectionTask(Task):
    name = "detection"
    project_kinds = (ProjectKind.detection,)
    default_model = "detector"
    quality = "box F1 at IoU >= 0.5"
    budget_param = "time_budget"  # the detector's training stops at the round budget (its calibration folds follow)

    def check_params(self, project, model, params):
        if model != "detector":
            return
        from labelloop.ml.detection.detector import BoxDetector
        from labelloop.services.assist.model_kinds.detector import settings

        try:
            BoxDetector(len(project.classes), **settings({**params, "time_budget": 1}, 0.95)).validate_params()
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"--set: {exc}") from None

    def scratch(self, truth):
        boxes = boxes_of(truth)
        return Outcome(boxes, _listed({"draw_box": len(boxes)}))

    def annotate(self, shown, truth):
        wanted = boxes_of(truth)
        offered = boxes_of(prelabels(shown))
        if not offered:
            return self.scratch(truth)
        index = _classes(offered, wanted)
        pred, true = _detections(offered, index), _detections(wanted, index)
        ious, found = match(pred, true, MATCH_IOU)
        counts = {"verify_box": int((ious >= ADJUST_BELOW).sum()),
                  "adjust_box": int(((ious > 0) & (ious < ADJUST_BELOW)).sum())}
        # Boxes in the right place with the wrong class: matched again with the classes ignored.
        left, missed = np.flatnonzero(ious == 0), np.flatnonzero(~found)
        relabel = np.zeros(0)
        if len(left) and len(missed):
            relabel, _ = match({"boxes": pred["boxes"][left], "labels": np.zeros(len(left), int),
                                "scores": pred["scores"][left]},
                               {"boxes": true["boxes"][missed], "labels": np.zeros(len(missed), int)}, MATCH_IOU)
        exact, loose = int((relabel >= ADJUST_BELOW).sum()), int(((relabel > 0) & (relabel < ADJUST_BELOW)).sum())
        counts["delete_shape"] = len(left) - exact - loose
        counts["draw_box"] = len(missed) - exact - loose
        if not exact + loose:
            return Outcome(wanted, _listed(counts))
        # Per relabelled box: change its class (and adjust it), or delete it and draw the true box; the cost model
        # in use decides, separately for the boxes that need no adjusting and for those that do.
        options = []
        for change_exact, change_loose in itertools.product((True, False), repeat=2):
            option = dict(counts)
            for n, change, adjust in ((exact, change_exact, False), (loose, change_loose, True)):
                if change:
                    option["change_class"] = option.get("change_class", 0) + n
                    option["adjust_box"] += n if adjust else 0
                else:
                    option["delete_shape"] += n
                    option["draw_box"] += n
            options.append(_listed(option))
        return CheapestOutcome(wanted, options[0], options=options)

    def dataset_quality(self, labels, truth):
        tp = fp = fn = 0
        for item_id, shapes in truth.items():
            hit, false, missed = box_counts(boxes_of(labels.get(item_id) or []), boxes_of(shapes))
            tp, fp, fn = tp + hit, fp + false, fn + missed
        return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0

    def model_quality(self, workspace, project, model, item_ids, truth):
        """mAP@0.5 of each round's detector on the held-out items (in their own scratch project), every box it
        keeps (score >= 0.05) counted, as the detector's own test figure."""
        from labelloop.jobs.registry import JobContext
        from labelloop.ml.detection.evaluation import coco_map
        from labelloop.services.assist.predictions import latest_predictions_for_items

        if not item_ids or model is None:
            return None
        self.predict(workspace, project, model, list(item_ids), JobContext(0, {}, lambda d, t, m: None, lambda m: None))
        with workspace.session() as session:
            rows = latest_predictions_for_items(session, item_ids)
        index = {name: n for n, name in enumerate(project.class_names(), 1)}
        preds = [_detections(boxes_of(rows[i].shapes) if i in rows else [], index) for i in item_ids]
        truths = [_detections(boxes_of(truth[i]), index) for i in item_ids]
        return coco_map(preds, truths, len(index))["map50"]

    def cost_variants(self, costs: CostModel) -> dict[str, CostModel]:
        """The same actions with every box drawn the traditional way (issue 19: report beside extreme clicking)."""
        seconds = {**costs.seconds, "draw_box": costs.cost("draw_box_traditional")}
        return {"draw_box_traditional": CostModel(f"{costs.name}, draw_box at {seconds['draw_box']:g} s", seconds,
                                                  dict(costs.sources))}
