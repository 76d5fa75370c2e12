"""Pre-labels for Label Studio: the project's newest classifier (on cached embeddings) or detector, loaded once and
kept while it is the newest, answering with only the labels at or above their calibrated threshold."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select

from labelloop.domain import Box, ClassLabel, ProjectKind
from labelloop.errors import InvalidInput
from labelloop.formats.labelstudio_writer import prediction_results
from labelloop.services.assist.ls_results import Targets, control_names
from labelloop.services.projects import ProjectInfo
from labelloop.store.tables import ModelRow

log = logging.getLogger(__name__)
MODEL_FOR = {ProjectKind.classification: "classifier", ProjectKind.multilabel: "classifier",
             ProjectKind.detection: "detector"}


@dataclass
class TaskImage:
    """One task's image: a project item (`item`), or pixels fetched from Label Studio (`pixels`)."""

    item: Any = None  # ItemRow
    pixels: np.ndarray | None = None
    fetched: tuple[str, bytes] | None = None  # (file name, bytes) of a fetched image, kept to add it as an item

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)"""
        if self.item is not None:
            return int(self.item.width), int(self.item.height)
        return int(self.pixels.shape[1]), int(self.pixels.shape[0])


@dataclass
class _Loaded:
    model: Any  # ModelInfo
    estimator: Any  # PreLabeller or BoxDetector
    settings: tuple  # the project settings the thresholds were chosen for


class Predictor:
    """Holds the newest ready model of the project's kind; reloads when a newer one is trained or the project's
    target changes. Thread-safe: one lock around loading, prediction itself runs unlocked."""

    def __init__(self, workspace):
        self.workspace = workspace
        self._lock = threading.Lock()
        self._loaded: dict[int, _Loaded] = {}  # by project id
        self._embedders: dict[tuple, Any] = {}

    def newest(self, project: ProjectInfo) -> tuple[int, str] | None:
        """(id, ref) of the newest ready model of the project's kind, from one query: /health and /setup answer
        with it without loading the model (Label Studio gives them 1 s and 3 s)."""
        kind = MODEL_FOR[project.kind]
        with self.workspace.reader() as connection:
            row = connection.execute(select(ModelRow.id, ModelRow.version).where(
                ModelRow.project_id == project.id, ModelRow.kind == kind,
                ModelRow.status == "ready").order_by(ModelRow.version.desc()).limit(1)).first()
        return (row.id, f"{kind}:{row.version}") if row else None

    def model_version(self, project: ProjectInfo) -> str | None:
        newest = self.newest(project)
        return newest[1] if newest else None

    def warm_up(self, project: ProjectInfo) -> threading.Thread:
        """Load the newest model in the background, and see how many cores are free, so the first /predict waits
        for neither."""
        def load() -> None:
            try:
                loaded = self.load(project)
                if loaded is not None and loaded.model.kind == "detector":
                    from labelloop.ml.unet.training import default_threads

                    default_threads()  # a fresh count, in this background thread
            except Exception as exc:  # reported again, to the caller, by the /predict that needs the model
                log.warning("could not load the model of %s: %s", project.name, exc)

        thread = threading.Thread(target=load, daemon=True, name="labelloop-model-load")
        thread.start()
        return thread

    def load(self, project: ProjectInfo) -> _Loaded | None:
        found = self.newest(project)
        if found is None:
            return None
        newest = found[0]
        with self._lock:
            current = self._loaded.get(project.id)
            if current is None or current.model.id != newest:
                current = self._read(project, newest)
                self._loaded[project.id] = current
            wanted = _settings(project, current)
            if current.settings != wanted:
                _retarget(current, wanted)
            return current

    def _read(self, project: ProjectInfo, model_id: int) -> _Loaded:
        from labelloop.services.assist.models import _info, load_estimator, read_checkpoint

        with self.workspace.session() as session:
            model = _info(session.get(ModelRow, model_id))
        names = model.params.get("class_names")
        if names is not None and list(names) != project.class_names():
            raise InvalidInput(f"{model.ref} was trained on classes {', '.join(names)}, the project now has "
                               f"{', '.join(project.class_names())}; train it again")
        if model.kind == "detector":
            from labelloop.ml.detection.detector import BoxDetector

            estimator = BoxDetector.from_checkpoint(read_checkpoint(self.workspace, model))
            settings = (estimator.target_precision,)
        else:
            estimator = load_estimator(self.workspace, model)
            settings = (estimator.target_precision, getattr(estimator, "method", "bound"), estimator.confidence)
        log.info("loaded %s for project %s", model.ref, project.name)
        return _Loaded(model, estimator, settings)

    def predict(self, project: ProjectInfo, images: Sequence[TaskImage], found: Targets) -> tuple[list[dict], str | None]:
        """Label Studio predictions (one per image, in order) and the model version; ([], None) without a model."""
        loaded = self.load(project)
        if loaded is None:
            return [], None
        if loaded.model.kind == "detector":
            return self._detect(project, loaded, images, found), loaded.model.ref
        return self._classify(loaded, images, found), loaded.model.ref

    def _classify(self, loaded: _Loaded, images: Sequence[TaskImage], found: Targets) -> list[dict]:
        prelabeller, choice = loaded.estimator, loaded.model.params
        proba, accepted = prelabeller.prelabel(self._features(images, choice))
        names, tags = list(prelabeller.class_names), control_names(found)
        predictions = []
        for task, p, ok in zip(images, proba, accepted):
            labels = [ClassLabel(names[k], score=round(float(p[k]), 4)) for k in np.flatnonzero(ok)]
            certainty = np.maximum(p, 1 - p).min() if prelabeller.multilabel else p.max()
            predictions.append({"result": prediction_results(labels, *task.size, tags),
                                "score": round(float(certainty), 4), "model_version": loaded.model.ref})
        return predictions

    def _features(self, images: Sequence[TaskImage], choice: dict[str, Any]) -> np.ndarray:
        """What the classifier reads: cached embeddings of items (computed once when missing), embeddings of
        fetched images computed now, then the ImageNet logits when the model was trained on them."""
        from labelloop.services.assist.embeddings import cached_ids, embed_items, encoder_key, load_embeddings

        if choice.get("head", "logreg") != "logreg":
            return self._crops(images)
        encoder = encoder_key(choice["encoder"], choice.get("weights"))
        ids = [t.item.id for t in images if t.item is not None]
        if ids and len(cached_ids(self.workspace, ids, encoder)) < len(set(ids)):
            embed_items(self.workspace, ids, model_name=choice["encoder"], weights=choice.get("weights"))
        known = load_embeddings(self.workspace, ids, encoder) if ids else None
        fetched = [t.pixels for t in images if t.item is None]
        computed = self._embedder(choice).embed(fetched) if fetched else None
        rows, k, f = [], 0, 0
        for task in images:
            if task.item is not None:
                rows.append(known[k])
                k += 1
            else:
                rows.append(computed[f])
                f += 1
        X = np.stack(rows).astype(np.float32)
        if choice.get("features") == "imagenet":
            from labelloop.ml.embeddings import imagenet_logits

            X = imagenet_logits(X, choice["encoder"], choice.get("weights"))
        return X

    def _crops(self, images: Sequence[TaskImage]) -> np.ndarray:
        from labelloop.ml.embeddings import centre_crop

        return np.stack([centre_crop(self._pixels(t)) for t in images])

    def _embedder(self, choice: dict[str, Any]):
        from labelloop.ml.embeddings import Embedder

        key = (choice["encoder"], choice.get("weights"))
        with self._lock:
            if key not in self._embedders:
                self._embedders[key] = Embedder(choice["encoder"], choice.get("weights")).load()
            return self._embedders[key]

    def _pixels(self, task: TaskImage) -> np.ndarray:
        from labelloop import media

        if task.pixels is not None:
            return task.pixels
        item = task.item
        return media.read(self.workspace.blobs.local_path(item.blob_sha256), item.page, name=item.source)

    def _detect(self, project: ProjectInfo, loaded: _Loaded, images: Sequence[TaskImage], found: Targets) -> list[dict]:
        detector, tags = loaded.estimator, control_names(found)
        names = {c.index: c.name for c in project.classes}
        pixels = [self._pixels(t) for t in images]
        predictions = []
        for task, detections in zip(images, detector.predict(pixels)):
            boxes = []
            for box, label, score in zip(detections["boxes"], detections["labels"], detections["scores"]):
                threshold = detector.threshold_for(int(label))
                if threshold is not None and score >= threshold:
                    boxes.append(Box(names[int(label)], *(float(v) for v in box), score=round(float(score), 4)))
            # The task's score: the least certain pre-label shown (None: nothing reached its threshold).
            score = min((b.score for b in boxes), default=None)
            predictions.append({"result": prediction_results(boxes, *task.size, tags), "score": score,
                                "model_version": loaded.model.ref})
        return predictions


def _settings(project: ProjectInfo, loaded: _Loaded) -> tuple:
    """The project's calibration settings now (Settings may change them after training), as the classifier and
    detector kinds read them when they pre-label."""
    settings, estimator = project.settings, loaded.estimator
    target = float(settings.get("target_precision", estimator.target_precision))
    if loaded.model.kind == "detector":
        return (target,)
    return (target, settings.get("calibration_method") or getattr(estimator, "method", "bound"),
            float(settings.get("calibration_confidence", estimator.confidence)))


def _retarget(loaded: _Loaded, wanted: tuple) -> None:
    """Choose the thresholds again from the model's stored held-out scores, in memory (no retraining)."""
    estimator = loaded.estimator
    if loaded.model.kind == "detector":
        estimator.calibrate(wanted[0])
    else:
        target, method, confidence = wanted
        estimator.set_target(target, confidence=confidence, method=method)
    loaded.settings = wanted
