"""Micro-models of one class on boxes: a one-class `BoxDetector` trained on that class's boxes, with the labelled
images that hold none of them as negatives, its pre-label threshold chosen on held-out images (and, when those hold
few boxes, the detector's cross-fitted calibration folds) for the target precision; and the chain's merge of every
micro-model's boxes into one pre-label (the union, duplicates of one class suppressed, other classes untouched).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from labelloop.ml.micro import merge_boxes

SAME_CLASS_IOU = 0.5  # two boxes of one class overlapping this much are one object found twice


def held_out_images(has_class: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of the images held out of training: a seeded `fraction` of those holding the class (at least one,
    never all) and the same share of the others, so both the class and its absence are scored."""
    has_class = np.asarray(has_class, bool)
    rng = np.random.default_rng(seed)
    chosen = []
    for members, at_least in ((np.flatnonzero(has_class), 1), (np.flatnonzero(~has_class), 0)):
        if not len(members):
            continue
        count = min(len(members) - 1 if at_least else len(members), max(at_least, round(fraction * len(members))))
        chosen.extend(rng.choice(members, size=max(count, 0), replace=False).tolist())
    return np.array(sorted(chosen), np.int64)


def held_out_figures(detector) -> dict[str, Any]:
    """What self-validation compares, from a fitted one-class detector: the held-out AP@0.5 (`average_precision`)
    and AP@0.5:0.95, and the calibrated threshold with its precision and recall; `ready` False with the reason
    when no threshold reaches the target."""
    history = detector.history_
    overall = getattr(detector, "thresholds_", {}).get(0)
    preds, truths = getattr(detector, "held_out_", ([], []))
    last = {k: (history[k][-1] if history.get(k) else None) for k in ("map50", "map")}
    ready = bool(overall and overall.threshold is not None)
    reason = "" if ready else (overall.reason if overall else "no held-out image to calibrate on")
    return {"average_precision": last["map50"], "map": last["map"], "ready": ready,
            "threshold": round(overall.threshold, 4) if ready else None,
            "precision": round(overall.precision, 4) if ready else None,
            "recall": round(overall.recall, 4) if ready and overall.recall is not None else None,
            "reason": reason, "images": len(preds),
            "boxes": int(sum(len(np.asarray(t["labels"]).reshape(-1)) for t in truths)),
            "calibrated_on": detector.calibration_evidence}


class BoxMicroModel:
    """A class's fitted one-class detector (the bytes of its `BoxDetector` checkpoint, which keeps the held-out
    predictions, so the threshold can be chosen again for another target) and its calibration. Picklable: the
    detector is rebuilt from its bytes on first use."""

    def __init__(self, class_name: str, checkpoint: bytes, target_precision: float):
        self.class_name = class_name
        self.checkpoint = checkpoint
        self.target_precision = target_precision
        self._detector = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_detector"] = None
        return state

    @property
    def detector_(self):
        if self._detector is None:
            from labelloop.ml.detection.detector import BoxDetector

            self._detector = BoxDetector.from_checkpoint(self.checkpoint)
            if self._detector.target_precision != self.target_precision:
                self._detector.calibrate(self.target_precision)
        return self._detector

    @property
    def threshold_(self) -> float | None:
        return self.detector_.threshold_for(1)

    def set_target(self, target_precision: float) -> None:
        """The threshold chosen again on the stored held-out boxes (no refit)."""
        self.target_precision = target_precision
        if self._detector is not None:
            self._detector.calibrate(target_precision)

    def detect(self, images: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Per image every box the detector keeps ({"boxes": N×4, "scores": N}), passing or not."""
        return [{"boxes": found["boxes"], "scores": found["scores"]} for found in self.detector_.predict(images)]


def merge_detections(found: list[dict[str, np.ndarray]], thresholds: np.ndarray,
                     same_class_iou: float = SAME_CLASS_IOU) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's merged boxes from K micro-models' detections (chain order: model k is class k): (boxes M×4,
    classes M, scores M), best first. A box passes its model's threshold; of two passing boxes of one class at
    IoU ≥ `same_class_iou` the higher score stays; boxes of different classes are never compared, as their
    scores come from detectors trained apart."""
    if not found:
        return np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0)
    all_boxes = np.concatenate([np.asarray(f["boxes"], float).reshape(-1, 4) for f in found])
    scores = [np.asarray(f["scores"], float).reshape(-1) for f in found]
    classes = np.concatenate([np.full(len(s), k, np.int64) for k, s in enumerate(scores)])
    all_scores = np.concatenate(scores)
    kept = merge_boxes(all_boxes, classes, all_scores, thresholds, same_class_iou=same_class_iou,
                       other_class_iou=None)
    return all_boxes[kept].reshape(-1, 4), classes[kept], all_scores[kept]
