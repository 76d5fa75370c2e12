"""Micro-models: one class against everything else, each with its own calibrated threshold, and the pure rules
that merge a chain of them into one pre-label (scikit-learn contract, arrays in, arrays out).

`MicroModel` wraps a one-column multi-label `PreLabeller` (ml.classifier): cross-fitted held-out scores on the
labelled items (the class's labels are the positives, every other labelled item a negative), a threshold chosen for
the target precision (ml.calibration), then a fit on every labelled item. Its `chances` are the scores turned into
calibrated chances of being right by the held-out temperature posterior: the common scale on which a multi-class
merge compares classes whose models were fitted apart.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from labelloop.ml.calibration import ClassCalibration, held_out_folds, temperature_posterior
from labelloop.ml.classifier import EmbeddingClassifier, PreLabeller, take

WORSE_BY = 0.02  # held-out average precision a retrain may lose before it counts as worse (noise of few labels)


class PseudoLabelled(PreLabeller):
    """A PreLabeller whose last `extra` training rows are pseudo-labels: they join every fit (each fold's training
    part and the final fit) but are never held out, so the held-out scores and the threshold rest on human labels
    only."""

    def fit(self, X: Any, y: np.ndarray, unlabelled: Any = None, extra: int = 0) -> PseudoLabelled:
        import time

        y = np.asarray(y)
        human = len(y) - extra
        started = time.perf_counter()
        self.folds_ = np.r_[held_out_folds(y[:human], self.held_out, self.random_state), np.full(extra, -1)]
        proba = np.zeros((len(y), len(self.class_names)))
        for fold in sorted(set(self.folds_[:human].tolist())):
            test, train = np.flatnonzero(self.folds_ == fold), np.flatnonzero(self.folds_ != fold)
            model = self._base().fit(take(X, train), y[train])
            proba[test] = self._full_proba(model, take(X, test), y)
        self.held_out_index_ = np.arange(human)
        self.held_out_proba_, self.held_out_y_ = proba[:human], y[:human]
        self.calibration_seconds_ = time.perf_counter() - started
        started = time.perf_counter()
        self.estimator_ = self._base().fit(X, y)
        self.training_seconds_ = time.perf_counter() - started
        has_pool = unlabelled is not None and len(unlabelled) > 0
        self.pool_proba_ = self._full_proba(self.estimator_, unlabelled, y).astype(np.float32) if has_pool else None
        self.classes_ = np.arange(len(self.class_names))
        self.set_target(self.target_precision)
        return self


class MicroModel(ClassifierMixin, BaseEstimator):
    """One class against the rest; y is 0/1 per labelled item (1: the item has this class)."""

    def __init__(self, class_name: str = "", estimator=None, target_precision: float = 0.95,
                 confidence: float = 0.8, held_out: float = 0.2, method: str = "auto", random_state: int = 0):
        self.class_name = class_name
        self.estimator = estimator
        self.target_precision = target_precision
        self.confidence = confidence
        self.held_out = held_out
        self.method = method
        self.random_state = random_state

    def fit(self, X: Any, y: np.ndarray, unlabelled: Any = None, pseudo_X: Any = None,
            pseudo_y: np.ndarray | None = None) -> MicroModel:
        """Human labels (X, y) and, optionally, pseudo-labels (pseudo_X, pseudo_y) that only ever train: the
        held-out scores, the threshold and `held_out_score` come from the human labels alone."""
        y = (np.asarray(y).reshape(-1) > 0).astype(np.int64)
        if not 0 < y.sum() < len(y):
            raise ValueError(f"a micro-model of {self.class_name!r} needs labelled items with and without the class")
        estimator = self.estimator if self.estimator is not None else EmbeddingClassifier(
            multilabel=True, random_state=self.random_state)
        kwargs = dict(multilabel=True, target_precision=self.target_precision, confidence=self.confidence,
                      held_out=self.held_out, method=self.method, random_state=self.random_state)
        extra = 0 if pseudo_y is None else len(pseudo_y)
        if extra:
            X = np.concatenate([np.asarray(X), np.asarray(pseudo_X)])
            y = np.r_[y, (np.asarray(pseudo_y).reshape(-1) > 0).astype(np.int64)]
            self.prelabeller_ = PseudoLabelled(estimator, (self.class_name,), **kwargs).fit(
                X, y[:, None], unlabelled, extra=extra)
        else:
            self.prelabeller_ = PreLabeller(estimator, (self.class_name,), **kwargs).fit(X, y[:, None], unlabelled)
        self.pseudo_labels_ = extra
        self.classes_ = np.array([0, 1])
        self.temperatures_, self.weights_ = temperature_posterior(self.prelabeller_.held_out_proba_,
                                                                  self.prelabeller_.held_out_y_, multilabel=True)
        return self

    def set_target(self, target_precision: float, confidence: float | None = None,
                   method: str | None = None) -> MicroModel:
        """The threshold chosen again from the stored held-out scores (no refit)."""
        self.prelabeller_.set_target(target_precision, confidence=confidence, method=method)
        self.target_precision = target_precision
        return self

    @property
    def calibration_(self) -> ClassCalibration:
        return self.prelabeller_.calibration_[0]

    @property
    def threshold_(self) -> float | None:
        return self.calibration_.threshold

    def scores(self, X: Any) -> np.ndarray:
        """The probability of the class, per item."""
        return self.prelabeller_.predict_proba(X)[:, 0]

    def predict_proba(self, X: Any) -> np.ndarray:
        p = self.scores(X)
        return np.stack([1 - p, p], axis=1)

    def predict(self, X: Any) -> np.ndarray:
        """1 where the item passes the calibrated threshold (0 everywhere without one)."""
        return self.passes(self.scores(X)).astype(np.int64)

    def passes(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) >= (np.inf if self.threshold_ is None else self.threshold_)

    def chances(self, scores: np.ndarray) -> np.ndarray:
        """Scores as calibrated chances: the held-out temperature posterior's mean of sigmoid(logit / T)."""
        p = np.clip(np.asarray(scores, float), 1e-9, 1 - 1e-9)
        logits = np.log(p / (1 - p))
        return np.sum([w / (1 + np.exp(-logits / t)) for t, w in zip(self.temperatures_, self.weights_)], axis=0)

    def held_out_score(self) -> dict[str, Any]:
        """What self-validation compares: the held-out average precision of the class's scores, and the held-out
        precision and recall at the calibrated threshold."""
        from sklearn.metrics import average_precision_score, log_loss

        y = self.prelabeller_.held_out_y_[:, 0] > 0
        p = self.prelabeller_.held_out_proba_[:, 0]
        c = self.calibration_
        return {"average_precision": round(float(average_precision_score(y, p)), 4) if y.any() else None,
                "log_loss": round(float(log_loss(y, np.clip(p, 1e-6, 1 - 1e-6), labels=[False, True])), 4),
                "positives": int(y.sum()), "negatives": int((~y).sum()), "ready": c.threshold is not None,
                "threshold": c.threshold, "precision": c.precision, "recall": c.recall,
                "reason": "" if c.threshold is not None else c.reason}


def linear_form(model: MicroModel) -> tuple[np.ndarray, float] | None:
    """(w, b) with scores = sigmoid(normalise(X) @ w + b) when the micro-model is a logistic regression on
    normalised, standardised embeddings (the default), folding the standardisation into the weights; else None."""
    estimator = model.prelabeller_.estimator_
    if not isinstance(estimator, EmbeddingClassifier) or not estimator.multilabel:
        return None
    logistic = estimator.estimators_[0]
    if isinstance(logistic, float) or not hasattr(logistic, "coef_"):
        return None
    scaler = estimator.scaler_
    w = logistic.coef_[0] / scaler.scale_
    return w, float(logistic.intercept_[0] - scaler.mean_ @ w)


class ChainScorer:
    """Every micro-model of a chain scored together: the ones with a linear form in one matrix product (so a
    chain of K costs about what one K-class model does), the others one by one. Columns in chain order."""

    def __init__(self, models: list[MicroModel]):
        self.models = models
        forms = [linear_form(m) for m in models]
        self.linear_ = [k for k, f in enumerate(forms) if f is not None]
        self.others_ = [k for k, f in enumerate(forms) if f is None]
        self.weights_ = np.stack([forms[k][0] for k in self.linear_], axis=1) if self.linear_ else None
        self.bias_ = np.array([forms[k][1] for k in self.linear_])

    def scores(self, X: Any) -> np.ndarray:
        """N×K probabilities, one column per micro-model."""
        from labelloop.ml.classifier import normalise

        out = np.zeros((len(X), len(self.models)))
        if self.linear_:
            z = normalise(X) @ self.weights_ + self.bias_
            out[:, self.linear_] = 1.0 / (1.0 + np.exp(-z))
        for k in self.others_:
            out[:, k] = self.models[k].scores(X)
        return out

    def thresholds(self) -> np.ndarray:
        return np.array([np.inf if m.threshold_ is None else m.threshold_ for m in self.models])

    def chances(self, scores: np.ndarray, where: np.ndarray) -> np.ndarray:
        """Calibrated chances of the entries marked in `where` (N×K bool; NaN elsewhere): only the entries a merge
        compares or records are worth the temperature posterior."""
        out = np.full(scores.shape, np.nan)
        for k, m in enumerate(self.models):
            rows = np.flatnonzero(where[:, k])
            if len(rows):
                out[rows, k] = m.chances(scores[rows, k])
        return out


def is_worse(new: dict[str, Any], current: dict[str, Any] | None, tolerance: float = WORSE_BY) -> str:
    """Why a retrain's held-out score is worse than the version in use ('' when it is not): it lost its threshold,
    or its held-out average precision fell by more than `tolerance`."""
    if not current:
        return ""
    if current.get("ready") and not new.get("ready"):
        return "it has no calibrated threshold where the version in use has one"
    old_ap, new_ap = current.get("average_precision"), new.get("average_precision")
    if old_ap is not None and new_ap is not None and new_ap < old_ap - tolerance:
        return f"its held-out average precision {new_ap:.3f} is below the version in use's {old_ap:.3f}"
    return ""


def pseudo_labels_hurt(with_pseudo: dict[str, Any], without: dict[str, Any]) -> str:
    """Why pseudo-labels should stay off ('' when they may stay on), from the held-out scores of the same human
    folds with and without them: a lost threshold, a lower average precision (ranking), or a higher log loss
    (pseudo-labels that rank well but pull the chances of the wrong items up)."""
    worse = is_worse(with_pseudo, without, tolerance=0.0)
    if worse:
        return worse
    if with_pseudo["log_loss"] > without["log_loss"]:
        return (f"its held-out log loss {with_pseudo['log_loss']:.3f} is above {without['log_loss']:.3f} without "
                "pseudo-labels")
    return ""


# Merge rules: each micro-model's output for the same items, one column (or layer) per class in chain order.

def merge_multilabel(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """N×K bool: every class whose micro-model passes its threshold (NaN or inf threshold: never)."""
    thresholds = np.nan_to_num(np.asarray(thresholds, float), nan=np.inf)
    return np.asarray(scores, float) >= thresholds[None, :]


def merge_multiclass(scores: np.ndarray, thresholds: np.ndarray, chances: np.ndarray) -> np.ndarray:
    """N class indices: among the classes that pass, the one with the highest calibrated chance; -1 (abstain, the
    item stays for a person) when none passes."""
    passing = merge_multilabel(scores, thresholds)
    ranked = np.where(passing, np.asarray(chances, float), -np.inf)
    return np.where(passing.any(axis=1), ranked.argmax(axis=1), -1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a (N×4, x0 y0 x1 y1) with every box in b (M×4)."""
    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    x0, y0 = np.maximum(a[:, None, 0], b[None, :, 0]), np.maximum(a[:, None, 1], b[None, :, 1])
    x1, y1 = np.minimum(a[:, None, 2], b[None, :, 2]), np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def merge_boxes(boxes: np.ndarray, classes: np.ndarray, scores: np.ndarray, thresholds: np.ndarray,
                same_class_iou: float = 0.5, other_class_iou: float | None = 0.8) -> np.ndarray:
    """Indices of the boxes kept, best first: the union of every micro-model's boxes that pass their class's
    threshold, duplicates suppressed class by class (greedy, IoU >= same_class_iou); a box of another class on
    (nearly) the same place (IoU >= other_class_iou) is the same object claimed twice and only the higher score
    stays. `scores` should be calibrated chances when classes are compared (other_class_iou)."""
    boxes, classes, scores = np.asarray(boxes, float).reshape(-1, 4), np.asarray(classes, int), np.asarray(scores, float)
    thresholds = np.nan_to_num(np.asarray(thresholds, float), nan=np.inf)
    order = [i for i in np.argsort(-scores, kind="stable") if scores[i] >= thresholds[classes[i]]]
    kept: list[int] = []
    for i in order:
        if kept:
            overlap = box_iou(boxes[i], boxes[kept])[0]
            same = classes[kept] == classes[i]
            if np.any(same & (overlap >= same_class_iou)):
                continue
            if other_class_iou is not None and np.any(~same & (overlap >= other_class_iou)):
                continue
        kept.append(int(i))
    return np.array(kept, np.int64)


def merge_masks(probabilities: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """H×W labels from K×H×W per-class probabilities: per pixel the passing class (1..K) with the highest
    probability, 0 (background) where no class passes."""
    probabilities = np.asarray(probabilities, float)
    thresholds = np.nan_to_num(np.asarray(thresholds, float), nan=np.inf)
    passing = probabilities >= thresholds[:, None, None]
    ranked = np.where(passing, probabilities, -np.inf)
    return np.where(passing.any(axis=0), ranked.argmax(axis=0) + 1, 0).astype(np.int64)
