"""Box label errors: cleanlab's object-detection scores on out-of-sample predictions (a detector's held-out images and
its calibration folds), with the kind of error and a reason in words per flagged image.

Three kinds, each scored per box by cleanlab (lower is worse): a box that is missing (the model finds an object with
high confidence where no box of its class is), a box in a bad location (a labelled box whose best same-class match is
poor), a wrong class (a labelled box the model sees as another class). An image is flagged by cleanlab's own rule
(`find_label_issues`); its worst box names the kind and the reason.

And one check of our own, where the detector read the labelled boxes as drawn (`drawn`: its box classifier's
chances for each labelled box used as a proposal, out of sample like the predictions): a box the classifier does not
call its class is flagged too — a box in a bad location when it calls it background (Faster R-CNN's classifier
learns that a box overlapping an object at IoU < 0.5 is background), a wrong class when it calls it another class.
The rule is the classifier's own decision (its most likely class), not a cut chosen on data."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labelloop.ml.detection.evaluation import Detections, box_iou

KINDS = {"overlooked": "missing box", "badloc": "box in a bad location", "swap": "wrong class"}


@dataclass
class BoxSuspect:
    index: int  # into the images given
    score: float  # 1 - cleanlab's label quality score of the image: higher is more suspect
    kind: str  # "overlooked" | "badloc" | "swap"
    reason: str
    box: list[float]  # the box it is about (x0, y0, x1, y1): the model's for a missing box, else the label's


def _cleanlab_inputs(truths: list[Detections], preds: list[Detections], n_classes: int):
    labels, predictions = [], []
    for t, p in zip(truths, preds):
        labels.append({"bboxes": np.asarray(t["boxes"], float).reshape(-1, 4),
                       "labels": np.asarray(t["labels"], int).reshape(-1) - 1})
        boxes = np.asarray(p["boxes"], float).reshape(-1, 4)
        classes, scores = np.asarray(p["labels"], int).reshape(-1), np.asarray(p["scores"], float).reshape(-1)
        per_class = np.empty(n_classes, dtype=object)
        for k in range(n_classes):
            mine = classes == k + 1
            per_class[k] = np.hstack([boxes[mine], scores[mine, None]]).astype(np.float32).reshape(-1, 5)
        predictions.append(per_class)
    return labels, predictions


def drawn_box_issues(truth: Detections, drawn: np.ndarray | None) -> list[tuple[int, str, float, int]]:
    """The labelled boxes of one image whose class the box classifier, shown the box as drawn, does not pick:
    (box index, "badloc" or "swap", the chance it gives the labelled class, the class it picks: 0 = background)."""
    labels = np.asarray(truth["labels"], int).reshape(-1)
    if drawn is None or not len(labels):
        return []
    drawn = np.asarray(drawn, float).reshape(len(labels), -1)
    found = []
    for j, label in enumerate(labels):
        picked = int(drawn[j].argmax())
        if picked != label:
            found.append((j, "badloc" if picked == 0 else "swap", float(drawn[j, label]), picked))
    return found


def find_box_label_issues(truths: list[Detections], preds: list[Detections], class_names: list[str],
                          drawn: list[np.ndarray | None] | None = None) -> tuple[list[BoxSuspect], np.ndarray]:
    """Flagged images (most suspect first) and every image's quality score (0..1, lower is worse). `preds` must be
    out-of-sample: predicted by a network that never trained on that image; so must `drawn` (per image, the box
    classifier's chances for its labelled boxes, None where unknown)."""
    import warnings

    from cleanlab.object_detection.filter import find_label_issues
    from cleanlab.object_detection.rank import (compute_badloc_box_scores, compute_overlooked_box_scores,
                                                compute_swap_box_scores, get_label_quality_scores)

    if not truths:
        return [], np.zeros(0)
    labels, predictions = _cleanlab_inputs(truths, preds, len(class_names))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quality = get_label_quality_scores(labels, predictions, verbose=False)
        flagged = find_label_issues(labels, predictions)
        per_kind = {"overlooked": compute_overlooked_box_scores(labels=labels, predictions=predictions),
                    "badloc": compute_badloc_box_scores(labels=labels, predictions=predictions),
                    "swap": compute_swap_box_scores(labels=labels, predictions=predictions)}
    quality = np.asarray(quality, float).copy()
    suspects = []
    for i in range(len(truths)):
        own = drawn_box_issues(truths[i], drawn[i] if drawn is not None else None)
        if own:  # the image's quality is at most the chance its worst box as drawn gets
            quality[i] = min(quality[i], min(chance for _, _, chance, _ in own))
        if flagged[i]:
            kind, box_index, worst = min(((k, int(np.nanargmin(s[i])), float(np.nanmin(s[i])))
                                          for k, s in per_kind.items() if len(s[i]) and not np.isnan(s[i]).all()),
                                         key=lambda x: x[2], default=(None, -1, 1.0))
            if kind is not None:
                reason, box = _reason(kind, box_index, truths[i], preds[i], class_names)
                suspects.append(BoxSuspect(int(i), round(1.0 - float(quality[i]), 4), kind, reason, box))
                continue
        if own:
            box_index, kind, chance, picked = min(own, key=lambda x: x[2])
            reason, box = _drawn_reason(kind, box_index, chance, picked, truths[i], preds[i], class_names)
            suspects.append(BoxSuspect(int(i), round(1.0 - float(quality[i]), 4), kind, reason, box))
    suspects.sort(key=lambda s: -s.score)
    return suspects, quality


def _drawn_reason(kind: str, box_index: int, chance: float, picked: int, truth: Detections, pred: Detections,
                  names: list[str]):
    """Words for a box the classifier, shown it as drawn, does not call its class."""
    box = np.asarray(truth["boxes"], float).reshape(-1, 4)[box_index]
    label = names[int(np.asarray(truth["labels"], int)[box_index]) - 1]
    where = f"({box[0]:.0f}, {box[1]:.0f})–({box[2]:.0f}, {box[3]:.0f})"
    if kind == "swap":
        return (f"labelled {label} at {where}; shown the box as drawn, the model says {names[picked - 1]} (it gives "
                f"{label} {chance:.2f})", [round(float(v), 1) for v in box])
    p_boxes, p_labels = np.asarray(pred["boxes"], float).reshape(-1, 4), np.asarray(pred["labels"], int)
    same = p_boxes[p_labels == int(np.asarray(truth["labels"], int)[box_index])]
    fit = box_iou(box[None], same)[0] if len(same) else np.zeros(0)
    near = f"; its nearest {label} box fits the drawn one at IoU {float(fit.max()):.2f}" if len(fit) else ""
    return (f"shown the {label} box at {where} as drawn, the model sees background there (it gives {label} "
            f"{chance:.2f}){near}", [round(float(v), 1) for v in box])


def _reason(kind: str, box_index: int, truth: Detections, pred: Detections, names: list[str]):
    """Words for the worst box of a flagged image."""
    t_boxes, t_labels = np.asarray(truth["boxes"], float).reshape(-1, 4), np.asarray(truth["labels"], int)
    p_boxes, p_labels = np.asarray(pred["boxes"], float).reshape(-1, 4), np.asarray(pred["labels"], int)
    p_scores = np.asarray(pred["scores"], float)
    at = lambda b: f"({b[0]:.0f}, {b[1]:.0f})–({b[2]:.0f}, {b[3]:.0f})"  # noqa: E731
    if kind == "overlooked":  # scores are per predicted box
        box = p_boxes[box_index]
        return (f"the model finds a {names[p_labels[box_index] - 1]} at {at(box)} with {p_scores[box_index]:.2f} "
                f"where no box is drawn", [round(float(v), 1) for v in box])
    box = t_boxes[box_index]
    label = names[t_labels[box_index] - 1]
    ious = box_iou(box[None], p_boxes)[0] if len(p_boxes) else np.zeros(0)
    if kind == "swap":
        other = [(s, names[c - 1]) for s, c, o in zip(p_scores, p_labels, ious) if o >= 0.5 and c != t_labels[box_index]]
        said = f"; the model says {max(other)[1]} with {max(other)[0]:.2f}" if other else ""
        return f"labelled {label} at {at(box)}{said}", [round(float(v), 1) for v in box]
    same = ious[p_labels == t_labels[box_index]] if len(ious) else ious
    best = float(same.max()) if len(same) else 0.0
    return (f"the {label} box at {at(box)} fits the model's best {label} box only at IoU {best:.2f}",
            [round(float(v), 1) for v in box])
