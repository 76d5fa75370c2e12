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


# --- micro-models on a shared detector ---------------------------------------------------------------------------
# One class-agnostic detector ("object": every labelled box of every class) is trained once; a class's micro-model is
# a logistic regression on that detector's box features (what its box predictor reads) telling the class from the
# other objects. A box's score is the detector's object score times the head's chance of the class. The chain then
# runs the detector once per image, whatever the number of classes (a chain of one-class detectors runs K), and a
# class's micro-model retrains in seconds. As in few-shot detection's fine-tune-the-last-layer approach (Wang et al.,
# "Frustratingly Simple Few-Shot Object Detection", ICML 2020), the class is learnt on frozen detector features.

OBJECT_IOU = 0.5  # a detection overlapping a true box this much shows that box's object (and its class)
HEAD_FOLDS = 3  # cross-fitted folds of training images that add calibration evidence ...
HEAD_FOLDS_BELOW = 30  # ... when the held-out images hold fewer true boxes of the class than this


def object_samples(found: list[dict[str, np.ndarray]], classes: list[list[str]],
                   truth_boxes: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the class heads learn from, on images whose boxes are known: the features of every true box
    (`given_features` of `found`, in the order of `truth_boxes`) and of every detection overlapping a true box at
    IoU ≥ OBJECT_IOU, each with that box's class. Returns (features S×F, class names S, image index S)."""
    from labelloop.ml.detection.evaluation import box_iou

    parts, names, images = [], [], []
    for n, (f, own, boxes) in enumerate(zip(found, classes, truth_boxes)):
        own = np.asarray(own, object)
        boxes = np.asarray(boxes, float).reshape(-1, 4)
        parts.append(np.asarray(f["given_features"], np.float32).reshape(len(boxes), -1))
        names.extend(own.tolist())
        detected = np.asarray(f["boxes"], float).reshape(-1, 4)
        if len(detected) and len(boxes):
            iou = box_iou(detected, boxes)
            keep = iou.max(1) >= OBJECT_IOU
            parts.append(np.asarray(f["features"], np.float32)[keep])
            names.extend(own[iou.argmax(1)[keep]].tolist())
        images.extend([n] * (len(names) - len(images)))
    width = next((p.shape[1] for p in parts if p.ndim == 2 and p.shape[1]), 0)
    features = np.concatenate([p.reshape(-1, width) for p in parts]) if parts else np.zeros((0, width), np.float32)
    return features, np.asarray(names, object), np.asarray(images, np.int64)


class SharedBoxHead:
    """A class's micro-model on a shared detector (stored apart: `trunk_sha256` names its checkpoint): a logistic
    regression on the detector's box features, fitted on the objects of the training images (`object_samples`),
    its threshold chosen for the target precision on images the detector never trained on (held out), with, when
    those hold few boxes of the class, the head's own cross-fitted scores on the training images (folds by image).
    Those come from a detector that trained on the images, so its object scores and boxes there are surer than on
    new ones: the evidence is optimistic about localisation, and says so (`calibrated_on`).

    A class that is every object the detector has seen (one class in the project) has no other object to be told
    from: the head is the constant 1 and the score is the object score."""

    def __init__(self, class_name: str, trunk_sha256: str, target_precision: float = 0.95, C: float = 1.0,
                 seed: int = 0):
        self.class_name, self.trunk_sha256 = class_name, trunk_sha256
        self.target_precision, self.C, self.seed = target_precision, C, seed

    def _fit_head(self, X: np.ndarray, y: np.ndarray):
        if y.min() == y.max():
            return float(y[0]) if len(y) else 1.0  # one kind of object: the class's chance is constant
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=2000)).fit(X, y)

    @staticmethod
    def _chance(head, features: np.ndarray) -> np.ndarray:
        features = np.asarray(features, np.float32)
        if isinstance(head, float):
            return np.full(len(features), head)
        return head.predict_proba(features)[:, 1] if len(features) else np.zeros(0)

    def _scored(self, head, found: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        return [{"boxes": np.asarray(f["boxes"], float).reshape(-1, 4),
                 "scores": np.asarray(f["scores"], float) * self._chance(head, f["features"]),
                 "labels": np.ones(len(f["scores"]), int)} for f in found]

    def fit(self, samples: tuple[np.ndarray, np.ndarray, np.ndarray], held_found: list[dict[str, np.ndarray]],
            held_truths: list[np.ndarray], train_found: list[dict[str, np.ndarray]] | None = None,
            train_truths: list[np.ndarray] | None = None) -> SharedBoxHead:
        """`samples` from `object_samples` on the training images; `held_found` / `held_truths`: the detector's
        `predict_with_features` on the held-out images and their boxes of this class (N×4 each);
        `train_found` / `train_truths`: the same on the training images (the images of `samples`, in order), for
        the cross-fitted evidence."""
        X, names, images = samples
        y = (names == self.class_name).astype(np.int64)
        if not y.any():
            raise ValueError(f"no box of {self.class_name!r} among the training images")
        self.head_ = self._fit_head(X, y)
        truths = [{"boxes": np.asarray(t, float).reshape(-1, 4), "labels": np.ones(len(np.asarray(t).reshape(-1, 4)),
                                                                                     int)} for t in held_truths]
        self.held_out_ = (self._scored(self.head_, held_found), truths)
        held_boxes = sum(len(t["labels"]) for t in truths)
        self.cv_ = None
        if train_found is not None and held_boxes < HEAD_FOLDS_BELOW and images.max(initial=-1) + 1 >= HEAD_FOLDS:
            self.cv_ = self._cross_fit(X, y, images, train_found, train_truths)
        self.calibrate(self.target_precision)
        return self

    def _cross_fit(self, X, y, images, train_found, train_truths):
        order = np.random.default_rng(self.seed + 1).permutation(len(train_found))
        preds, truths = [], []
        for part in np.array_split(order, HEAD_FOLDS):
            inside = np.isin(images, part)
            if not y[~inside].any():
                continue
            head = self._fit_head(X[~inside], y[~inside])
            preds.extend(self._scored(head, [train_found[i] for i in part]))
            truths.extend({"boxes": np.asarray(train_truths[i], float).reshape(-1, 4),
                           "labels": np.ones(len(np.asarray(train_truths[i]).reshape(-1, 4)), int)} for i in part)
        return preds, truths

    def calibrate(self, target_precision: float):
        """The threshold for `target_precision` on the stored held-out (and cross-fitted) scores; no refit."""
        from labelloop.ml.detection.evaluation import choose_threshold, scored_boxes

        self.target_precision = target_precision
        preds, truths = self.held_out_
        if self.cv_ is not None:
            preds, truths = list(preds) + list(self.cv_[0]), list(truths) + list(self.cv_[1])
        scores, correct, _ = scored_boxes(preds, truths, 0.5)
        self.calibration_ = choose_threshold(scores, correct, int(sum(len(t["labels"]) for t in truths)),
                                             target_precision)
        return self.calibration_

    @property
    def threshold_(self) -> float | None:
        return self.calibration_.threshold

    def set_target(self, target_precision: float) -> None:
        self.calibrate(target_precision)

    def score(self, found: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """Per image the shared detector's boxes ({"boxes", "scores"}) scored for this class."""
        return [{"boxes": s["boxes"], "scores": s["scores"]} for s in self._scored(self.head_, found)]

    @property
    def calibrated_on(self) -> str:
        held = len(self.held_out_[0])
        return f"{held} held-out images" + (f" + {len(self.cv_[0])} training images, head cross-fitted "
                                            f"({HEAD_FOLDS} folds)" if self.cv_ else "")

    def figures(self) -> dict[str, Any]:
        """As `held_out_figures` of a one-class detector: held-out AP@0.5 and AP@0.5:0.95, the threshold with its
        precision and recall, or why there is none."""
        from labelloop.ml.detection.evaluation import coco_map

        preds, truths = self.held_out_
        maps = coco_map(preds, truths, 1) if preds else {"map50": None, "map": None}
        chosen = self.calibration_
        ready = chosen.threshold is not None
        return {"average_precision": maps["map50"], "map": maps["map"], "ready": ready,
                "threshold": round(chosen.threshold, 4) if ready else None,
                "precision": round(chosen.precision, 4) if ready else None,
                "recall": round(chosen.recall, 4) if ready and chosen.recall is not None else None,
                "reason": "" if ready else chosen.reason, "images": len(preds),
                "boxes": int(sum(len(t["labels"]) for t in truths)), "calibrated_on": self.calibrated_on}


def exclusive(scores: list[np.ndarray], thresholds: np.ndarray) -> list[np.ndarray]:
    """The class heads of one shared detector score the same boxes: each box keeps the score of the passing class
    with the highest score and is failed (−inf) for the others, so one object gets one class."""
    if not scores or not len(scores[0]):
        return scores
    table = np.stack([np.asarray(s, float) for s in scores])
    passing = table >= np.asarray(thresholds, float)[:, None]
    best = np.where(passing, table, -np.inf).argmax(0)
    keep = passing & (np.arange(len(table))[:, None] == best[None, :])
    return list(np.where(keep | ~passing, table, -np.inf))
