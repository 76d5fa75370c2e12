"""Image classifiers on embeddings, and the calibrated pre-labeller around any of them (scikit-learn contract).

`EmbeddingClassifier`: logistic regression on L2-normalised embeddings, softmax over classes (multi-class) or one
sigmoid per class (multi-label). `PreLabeller`: cross-fits a classifier on seeded, stratified held-out folds,
chooses per-class thresholds on the held-out scores (ml.calibration), then fits on every labelled item.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone

from labelloop.ml.calibration import ClassCalibration, calibrate, held_out_folds


def take(X: Any, index: np.ndarray) -> Any:
    """Rows of an array, or items of a list (images for a fine-tuned network)."""
    return X[index] if isinstance(X, np.ndarray) else [X[i] for i in index]


def normalise(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, np.float64)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


class EmbeddingClassifier(ClassifierMixin, BaseEstimator):
    """Logistic regression on normalised embeddings: y is class indices (softmax) or an N×K 0/1 matrix (sigmoids)."""

    def __init__(self, C: float = 1.0, multilabel: bool = False, max_iter: int = 2000, random_state: int = 0):
        self.C = C
        self.multilabel = multilabel
        self.max_iter = max_iter
        self.random_state = random_state

    def _logistic(self):
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=self.C, max_iter=self.max_iter, random_state=self.random_state)

    def fit(self, X: np.ndarray, y: np.ndarray) -> EmbeddingClassifier:
        from sklearn.preprocessing import StandardScaler

        self.scaler_ = StandardScaler().fit(normalise(X))
        Z = self.scaler_.transform(normalise(X))
        y = np.asarray(y)
        if self.multilabel:
            self.classes_ = np.arange(y.shape[1])
            # A class that is always (or never) present in training gets a constant: no boundary to learn.
            self.estimators_ = [self._logistic().fit(Z, y[:, k]) if 0 < y[:, k].sum() < len(y)
                                else float(y[:, k].mean()) for k in range(y.shape[1])]
        else:
            self.classes_ = np.unique(y)
            self.estimator_ = self._logistic().fit(Z, y) if len(self.classes_) > 1 else None
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        Z = self.scaler_.transform(normalise(X))
        if not self.multilabel:
            return self.estimator_.predict_proba(Z) if self.estimator_ is not None else np.ones((len(Z), 1))
        columns = [np.full(len(Z), e) if isinstance(e, float) else e.predict_proba(Z)[:, 1] for e in self.estimators_]
        return np.stack(columns, axis=1) if columns else np.zeros((len(Z), 0))

    def predict(self, X: np.ndarray) -> np.ndarray:
        proba = self.predict_proba(X)
        return (proba >= 0.5).astype(int) if self.multilabel else self.classes_[proba.argmax(axis=1)]


class PreLabeller(ClassifierMixin, BaseEstimator):
    """A classifier with per-class thresholds chosen on held-out items for a target precision.

    y: class indices 0..K-1 (multi-class) or an N×K 0/1 matrix (multi-label); `class_names` names the K columns.
    Held-out scores are cross-fitted: `held_out` = 0.2 deals the labelled items into 5 seeded, stratified folds,
    each held out once (`cross_fit=False`: only the first fold, one fit fewer per remaining fold). The final
    estimator is fitted on every labelled item. `method` picks the threshold rule (ml.calibration): `estimate`
    (and `auto`, the default, which also applies the bound) reads the scores of the unlabelled items passed to
    `fit` as `unlabelled`."""

    def __init__(self, estimator=None, class_names: tuple[str, ...] = (), multilabel: bool = False,
                 target_precision: float = 0.95, confidence: float = 0.8, held_out: float = 0.2,
                 cross_fit: bool = True, method: str = "auto", random_state: int = 0):
        self.estimator = estimator
        self.class_names = class_names
        self.multilabel = multilabel
        self.target_precision = target_precision
        self.confidence = confidence
        self.held_out = held_out
        self.cross_fit = cross_fit
        self.method = method
        self.random_state = random_state

    def _base(self):
        return clone(self.estimator) if self.estimator is not None else EmbeddingClassifier(
            multilabel=self.multilabel, random_state=self.random_state)

    def _full_proba(self, model, X, classes: np.ndarray) -> np.ndarray:
        """Probabilities in K columns even when a fold's training part lacked some class."""
        proba = model.predict_proba(X)
        if self.multilabel:
            return proba
        full = np.zeros((proba.shape[0], len(self.class_names)))
        full[:, np.asarray(model.classes_, int)] = proba
        return full

    def fit(self, X: Any, y: np.ndarray, unlabelled: Any = None,
            progress: Callable[[int, int], None] | None = None) -> PreLabeller:
        """Cross-fit, fit on every labelled item, and score `unlabelled` (the items to pre-label) if given.
        `progress(fits done, fits in all)` is called after each fit."""
        y = np.asarray(y)
        started = time.perf_counter()
        self.folds_ = held_out_folds(y, self.held_out, self.random_state)
        rounds = sorted(set(self.folds_.tolist())) if self.cross_fit else [0]
        held = np.isin(self.folds_, rounds)
        proba = np.zeros((len(y), len(self.class_names)))
        for done, fold in enumerate(rounds):
            test, train = np.flatnonzero(self.folds_ == fold), np.flatnonzero(self.folds_ != fold)
            if len(test) == 0:
                continue
            model = self._base().fit(take(X, train), y[train])
            proba[test] = self._full_proba(model, take(X, test), y)
            if progress:
                progress(done + 1, len(rounds) + 1)
        self.held_out_index_ = np.flatnonzero(held)
        self.held_out_proba_ = proba[held]
        self.held_out_y_ = y[held]
        self.calibration_seconds_ = time.perf_counter() - started
        started = time.perf_counter()
        self.estimator_ = self._base().fit(X, y)
        self.training_seconds_ = time.perf_counter() - started
        if progress:
            progress(len(rounds) + 1, len(rounds) + 1)
        # The score distribution of the items to pre-label: what `estimate` turns into expected precision.
        has_pool = unlabelled is not None and len(unlabelled) > 0
        self.pool_proba_ = self._full_proba(self.estimator_, unlabelled, y).astype(np.float32) if has_pool else None
        self.classes_ = np.arange(len(self.class_names))
        self.set_target(self.target_precision)
        return self

    def set_target(self, target_precision: float, confidence: float | None = None,
                   method: str | None = None) -> PreLabeller:
        """Choose the thresholds again from the stored held-out (and unlabelled) scores (no refit)."""
        self.target_precision = target_precision
        if confidence is not None:
            self.confidence = confidence
        if method is not None or not hasattr(self, "method"):  # models saved before `method` used the bound
            self.method = method or "bound"
        started = time.perf_counter()
        self.calibration_: list[ClassCalibration] = calibrate(
            self.held_out_proba_, self.held_out_y_, list(self.class_names), target=target_precision,
            confidence=self.confidence, multilabel=self.multilabel, method=self.method,
            pool=getattr(self, "pool_proba_", None))
        self.threshold_seconds_ = time.perf_counter() - started
        self.thresholds_ = np.array([np.inf if c.threshold is None else c.threshold for c in self.calibration_])
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        return self._full_proba(self.estimator_, X, self.classes_)

    def predict(self, X: Any) -> np.ndarray:
        proba = self.predict_proba(X)
        return (proba >= 0.5).astype(int) if self.multilabel else proba.argmax(axis=1)

    def prelabel(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """(proba N×K, accepted N×K): accepted marks the labels at or above their class's calibrated threshold
        (multi-class: only the most probable class of an item can be accepted)."""
        proba = self.predict_proba(X)
        return proba, self.accept(proba)

    def accept(self, proba: np.ndarray) -> np.ndarray:
        """Which labels of these probabilities (N×K) become pre-labels."""
        accepted = proba >= self.thresholds_[None, :]
        if not self.multilabel:
            top = np.zeros_like(accepted)
            top[np.arange(len(proba)), proba.argmax(axis=1)] = True
            accepted &= top
        return accepted
