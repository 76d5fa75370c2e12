"""Box detection figures: COCO mAP (pycocotools), matching predicted to true boxes, and a score threshold chosen
on held-out images so that the boxes above it reach a target precision."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# A detection: boxes N×4 (x0, y0, x1, y1), labels N (1..K), scores N. A truth: boxes and labels.
Detections = dict[str, np.ndarray]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in `a` with every box in `b` (x0, y0, x1, y1)."""
    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def match(pred: Detections, truth: Detections, iou: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching by score, same class, IoU ≥ `iou`: (per predicted box its matched IoU or 0, per true box
    whether it was found)."""
    order = np.argsort(-np.asarray(pred["scores"], float), kind="stable")
    ious = box_iou(pred["boxes"], truth["boxes"])
    taken = np.zeros(len(truth["boxes"]), bool)
    matched = np.zeros(len(pred["boxes"]))
    for i in order:
        same = (np.asarray(truth["labels"]) == pred["labels"][i]) & ~taken
        if not same.any():
            continue
        candidates = np.where(same, ious[i], -1.0)
        j = int(candidates.argmax())
        if candidates[j] >= iou:
            taken[j] = True
            matched[i] = candidates[j]
    return matched, taken


def scored_boxes(preds: list[Detections], truths: list[Detections], iou: float = 0.5):
    """Every predicted box of every image: (scores, whether it is right — matched to a true box of its class at
    IoU ≥ `iou` —, its class), as arrays: what a threshold is chosen on."""
    scores, correct, classes = [], [], []
    for p, t in zip(preds, truths):
        matched, _ = match(p, t, iou)
        scores.extend(p["scores"])
        correct.extend(matched > 0)
        classes.extend(p["labels"])
    return np.asarray(scores, float), np.asarray(correct, bool), np.asarray(classes, int)


def coco_map(preds: list[Detections], truths: list[Detections], n_classes: int) -> dict[str, float]:
    """mAP@0.5, mAP@0.5:0.95 and AP@0.75 with pycocotools' COCOeval (classes without a true box are skipped)."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, results = [], [], []
    for n, (p, t) in enumerate(zip(preds, truths), 1):
        images.append({"id": n, "width": 1, "height": 1})
        for box, label in zip(np.asarray(t["boxes"], float).reshape(-1, 4), t["labels"]):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": len(annotations) + 1, "image_id": n, "category_id": int(label),
                                "bbox": [float(box[0]), float(box[1]), float(w), float(h)], "area": float(w * h),
                                "iscrowd": 0})
        for box, label, score in zip(np.asarray(p["boxes"], float).reshape(-1, 4), p["labels"], p["scores"]):
            results.append({"image_id": n, "category_id": int(label), "score": float(score),
                            "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]})
    if not annotations:
        return {"map50": 0.0, "map": 0.0, "map75": 0.0}
    truth = COCO()
    truth.dataset = {"images": images, "annotations": annotations,
                     "categories": [{"id": k} for k in range(1, n_classes + 1)]}
    with contextlib.redirect_stdout(io.StringIO()):
        truth.createIndex()
        if not results:
            return {"map50": 0.0, "map": 0.0, "map75": 0.0}
        found = truth.loadRes(results)
        evaluation = COCOeval(truth, found, "bbox")
        evaluation.params.catIds = sorted({a["category_id"] for a in annotations})
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = evaluation.stats
    return {"map": round(float(max(stats[0], 0.0)), 4), "map50": round(float(max(stats[1], 0.0)), 4),
            "map75": round(float(max(stats[2], 0.0)), 4)}


@dataclass
class BoxThreshold:
    """The pre-label threshold of one class (or of all, `name` = "*"), with its held-out figures."""

    name: str
    threshold: float | None  # None: no score reaches the target on the held-out images
    precision: float | None  # of the held-out boxes at or above it
    recall: float | None  # of the held-out true boxes found above it
    boxes: int  # held-out predicted boxes considered
    truths: int  # held-out true boxes
    reason: str = ""
    above: int = 0  # held-out boxes at or above the threshold (the pre-labels those images would get)

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def choose_threshold(scores: np.ndarray, correct: np.ndarray, truths: int, target: float, name: str = "*",
                     min_boxes: int = 10, confidence: float = 0.8) -> BoxThreshold:
    """The lowest score at which the held-out boxes at or above it reach `target` precision with `confidence`
    (a one-sided Clopper-Pearson lower bound, as the classifier's `bound` rule: a plain measured precision chose
    thresholds that missed the target on new images in 5 of 20 seeded trials). A box is correct when it matches a
    true box of its class at IoU ≥ 0.5."""
    from labelloop.ml.calibration import precision_lower_bounds

    scores, correct = np.asarray(scores, float), np.asarray(correct, bool)
    if len(scores) < min_boxes:
        return BoxThreshold(name, None, None, None, len(scores), truths,
                            f"too few held-out boxes: {len(scores)}, at least {min_boxes} needed")
    order = np.argsort(-scores, kind="stable")
    hits = np.cumsum(correct[order])
    above = np.arange(1, len(scores) + 1)
    precision = hits / above
    bound = precision_lower_bounds(hits.astype(float), above.astype(float), confidence)
    ok = np.flatnonzero(bound >= target)
    if not len(ok):
        return BoxThreshold(name, None, None, None, len(scores), truths,
                            f"no score reaches precision {target:g} with {confidence:g} confidence on the held-out "
                            f"images (best measured precision {float(precision.max()):.3f} of {len(scores)} boxes)")
    k = int(ok[-1])
    return BoxThreshold(name, float(scores[order][k]), float(precision[k]),
                        float(hits[k] / truths) if truths else None, len(scores), truths, above=k + 1)
