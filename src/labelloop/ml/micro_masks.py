"""Micro-models of one class on pixels: a binary segmenter (the class against every other labelled pixel) whose
probability map passes a threshold calibrated on held-out pixels, for semantic projects.

The held-out pixels are ones the segmenter did not train on: whole images left out in turn (pixel forest,
cross-fitted by image) or a band of every image (U-Net, its validation bands). The threshold is the lowest
probability, not below 0.5, at which the held-out pixels it keeps reach the target precision; the chain
(ml.micro.merge_masks) keeps, per pixel, the passing class with the highest probability.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MIN_THRESHOLD = 0.5  # a micro-model says "this class" only where it finds the class more likely than not
GRID = np.round(np.arange(MIN_THRESHOLD, 1.0, 0.01), 2)
MIN_KEPT_PIXELS = 200  # a threshold resting on fewer held-out positive calls than this is noise
HELD_OUT_PIXELS = 200_000  # held-out pixels kept per image (seeded sample) for the scores


def sample_pixels(probability: np.ndarray, truth: np.ndarray, known: np.ndarray, rng,
                  limit: int = HELD_OUT_PIXELS) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, 0/1 truth) of up to `limit` labelled pixels (`known`) of one image, seeded."""
    where = np.flatnonzero(known.ravel())
    if len(where) > limit:
        where = np.sort(rng.choice(where, limit, replace=False))
    return probability.ravel()[where].astype(np.float32), truth.ravel()[where].astype(np.int8)


def pixel_calibration(probability: np.ndarray, truth: np.ndarray, target_precision: float) -> dict[str, Any]:
    """The held-out figures of a class's pixel probabilities: average precision, IoU at 0.5, and the calibrated
    threshold (the lowest grid value >= 0.5 whose kept pixels reach `target_precision`, resting on at least
    MIN_KEPT_PIXELS of them) with its precision, recall and IoU; `ready` False and a reason when none does."""
    from sklearn.metrics import average_precision_score

    p = np.asarray(probability, np.float32).ravel()
    y = np.asarray(truth).ravel() > 0
    positives = int(y.sum())
    out: dict[str, Any] = {"pixels": int(len(y)), "positive_pixels": positives, "target_precision": target_precision,
                           "average_precision": round(float(average_precision_score(y, p)), 4) if positives else None,
                           "iou_at_half": _iou(p >= MIN_THRESHOLD, y), "threshold": None, "precision": None,
                           "recall": None, "iou": None, "ready": False}
    if not positives:
        out["reason"] = "no held-out pixel of the class: label it on more images"
        return out
    best_precision, best_at = 0.0, None
    for t in GRID:
        kept = p >= t
        calls = int(kept.sum())
        if calls < MIN_KEPT_PIXELS:
            break
        precision = float((kept & y).sum() / calls)
        if precision > best_precision:
            best_precision, best_at = precision, float(t)
        if precision >= target_precision:
            out.update(threshold=float(t), precision=round(precision, 4),
                       recall=round(float((kept & y).sum() / positives), 4), iou=_iou(kept, y), ready=True, reason="")
            return out
    where = f" (at threshold {best_at:.2f})" if best_at is not None else ""
    out["reason"] = (f"held-out pixel precision reaches at most {best_precision:.3f}{where}, below the target "
                     f"{target_precision:.2f}: label more images of the class, or lower the project's target")
    return out


def _iou(predicted: np.ndarray, truth: np.ndarray) -> float | None:
    union = int((predicted | truth).sum())
    return round(float((predicted & truth).sum() / union), 4) if union else None


class MaskMicroModel:
    """A class's fitted binary segmenter (`base` "pixel-rf": a PixelClassifier whose class value 2 is the class;
    "unet": the bytes of a 2-class UNetSegmenter checkpoint) with its held-out calibration. Picklable: the U-Net
    is rebuilt from its bytes on first use."""

    def __init__(self, class_name: str, base: str, fitted: Any, calibration: dict[str, Any],
                 predict_options: dict[str, Any] | None = None):
        self.class_name = class_name
        self.base = base
        self.fitted = fitted
        self.calibration = calibration
        self.predict_options = dict(predict_options or {})
        self._segmenter = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_segmenter"] = None
        return state

    @property
    def threshold_(self) -> float | None:
        return self.calibration.get("threshold")

    def set_target(self, target_precision: float) -> None:
        """Not recalibrated here: the held-out pixels are not kept (the service retrains for a new target)."""

    def probability(self, image: np.ndarray) -> np.ndarray:
        """H×W probability of the class."""
        if self.base == "pixel-rf":
            proba = self.fitted.predict_proba(image)
            return proba[:, :, list(np.asarray(self.fitted.classes_)).index(2)]
        if self._segmenter is None:
            from labelloop.ml.unet import UNetSegmenter

            self._segmenter = UNetSegmenter.from_checkpoint(self.fitted, device=self.predict_options.get("device"))
        return self._segmenter.predict_proba(image, tta=self.predict_options.get("tta"))[:, :, 1]
