"""Box micro-models on one shared detector (`--base shared-detector`): a class-agnostic detector trained on every
labelled box (stored as a blob that each micro-model trained on it names, and trained again only when the labelled
boxes or its settings change) and per class a logistic-regression head on its box features (ml.micro_boxes
.SharedBoxHead); the box chain (services/assist/micro_boxes.py) runs the detector once per image for them all."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

import numpy as np

from labelloop.domain import Box
from labelloop.errors import InvalidInput
from labelloop.services.assist.micro_boxes import (SHARED, _read, box_metrics, checked_box_class,
                                                   class_signature, detector_settings)
from labelloop.services.assist.models import ModelInfo, save_model, update_model

log = logging.getLogger(__name__)

_TRUNKS: dict[str, Any] = {}  # checkpoint sha256 -> BoxDetector, the last few loaded in this process


def _boxes_of(shapes) -> tuple[np.ndarray, list[str]]:
    boxes = [s for s in shapes if isinstance(s, Box)]
    return np.array([[s.x0, s.y0, s.x1, s.y1] for s in boxes], float).reshape(-1, 4), [s.label for s in boxes]


def objects_signature(rows) -> str:
    """A digest of every labelled image's boxes with their classes: what a head on the shared detector learns from
    (its class against the other objects)."""
    digest = hashlib.sha256()
    for item, shapes in sorted(rows, key=lambda r: r[0].id):
        digest.update(json.dumps([item.id, sorted([round(s.x0, 2), round(s.y0, 2), round(s.x1, 2), round(s.y1, 2),
                                                   s.label] for s in shapes if isinstance(s, Box))]).encode())
    return digest.hexdigest()[:16]


def trunk_settings(project, params: dict[str, Any]):
    """(the shared detector, unfitted, with the job's settings; the held-out share; the seed), checked."""
    from labelloop.ml.detection.detector import BoxDetector

    target = float(params.get("target_precision") or project.settings.get("target_precision") or 0.95)
    options = {**detector_settings(params, target), "calibration_folds": 0}  # its own threshold is never used
    try:
        detector = BoxDetector(1, **options).validate_params()
    except (TypeError, ValueError) as exc:
        raise InvalidInput(str(exc)) from None
    fraction, seed = float(params.get("test_fraction", 0.2)), int(params.get("seed", 0))
    if not 0 < fraction < 1:
        raise InvalidInput(f"--test-fraction {fraction}: give a share between 0 and 1, e.g. 0.2")
    return detector, fraction, seed


def trunk_signature(rows, detector, fraction: float, seed: int) -> str:
    """A digest of what the shared detector learns from: every labelled image and its boxes (whatever their class:
    a box changing class leaves the detector as it is), its settings (less those that do not change what it
    learns: the target precision, which only the heads use, and the threads) and its held-out split."""
    options = {k: v for k, v in detector.get_params().items() if k not in ("target_precision", "threads")}
    digest = hashlib.sha256(json.dumps([options, fraction, seed], sort_keys=True, default=str).encode())
    for item, shapes in sorted(rows, key=lambda r: r[0].id):
        boxes, _ = _boxes_of(shapes)
        digest.update(json.dumps([item.id, sorted(np.round(boxes, 2).tolist())]).encode())
    return digest.hexdigest()[:16]


def load_trunk(workspace, sha: str):
    """The shared detector stored under `sha` (kept loaded for the next call in this process)."""
    from labelloop.ml.detection.detector import BoxDetector

    if sha not in _TRUNKS:
        if not workspace.blobs.exists(sha):
            raise InvalidInput(f"the shared detector {sha[:12]} of this micro-model is missing from storage; train "
                               "the micro-models again (labelloop train NAME --model micro --all-classes --force)")
        with workspace.blobs.open(sha) as handle:
            detector = BoxDetector.from_checkpoint(handle.read())
        while len(_TRUNKS) >= 2:
            _TRUNKS.pop(next(iter(_TRUNKS)))
        _TRUNKS[sha] = detector
    return _TRUNKS[sha]


class SharedTrunk:
    """The shared detector of a training job and its box features on the labelled images: the training images'
    (their detections, and their true boxes as given boxes) and the held-out ones' (which it never trained on)."""

    def __init__(self, workspace, project, rows, params: dict[str, Any], ctx):
        from labelloop.ml.micro_boxes import held_out_images, object_samples
        from labelloop.services.assist.models import list_models, store_file

        detector, fraction, seed = trunk_settings(project, params)
        self.signature = trunk_signature(rows, detector, fraction, seed)
        has_box = np.array([len(_boxes_of(shapes)[0]) > 0 for _, shapes in rows])
        held = set(held_out_images(has_box, fraction, seed).tolist())
        self.train_rows = [r for n, r in enumerate(rows) if n not in held]
        self.held_rows = [r for n, r in enumerate(rows) if n in held]
        train_images, held_images = [], []
        for n, (item, _) in enumerate(rows):
            (held_images if n in held else train_images).append(_read(workspace, item))
            ctx.progress(n + 1, len(rows), "reading labelled images")
        self.truths = [_boxes_of(shapes) for _, shapes in self.train_rows]
        self.held_truths = [_boxes_of(shapes) for _, shapes in self.held_rows]
        reused = next((m for m in list_models(workspace, project) if m.params.get("trunk_signature") == self.signature
                       and workspace.blobs.exists(m.params.get("trunk_sha256", ""))), None)
        self.seconds = 0.0
        if reused is not None:
            self.sha256, self.reused_from = reused.params["trunk_sha256"], reused.ref
            self.detector = load_trunk(workspace, self.sha256)
        else:
            build_detector_check(detector)
            started = time.perf_counter()
            detector.fit(train_images, [{"boxes": b, "labels": np.ones(len(b), int)} for b, _ in self.truths],
                         held_images, [{"boxes": b, "labels": np.ones(len(b), int)} for b, _ in self.held_truths],
                         on_progress=lambda step, total, message: ctx.progress(
                             step, total, f"shared detector: {message}"))
            self.seconds = time.perf_counter() - started
            self.sha256, self.reused_from = store_file(workspace, detector.checkpoint()), None
            self.detector = detector
        ctx.progress(0, None, "box features of the labelled images")
        self.train_found = self.detector.predict_with_features(train_images, given=[b for b, _ in self.truths])
        self.held_found = self.detector.predict_with_features(held_images)
        self.samples = object_samples(self.train_found, [names for _, names in self.truths],
                                      [b for b, _ in self.truths])
        self.summary = {"held_out_map50": (self.detector.history_["map50"] or [None])[-1],
                        "steps": self.detector.summary_["steps"], "epochs": self.detector.summary_["epochs"],
                        "stopped": self.detector.summary_["stopped"]}


def _of_class(truth: tuple[np.ndarray, list[str]], name: str) -> np.ndarray:
    boxes, names = truth
    return boxes[np.array(names, object) == name] if names else boxes


def build_detector_check(detector) -> None:
    """Bad weights fail before any work."""
    from labelloop.ml.detection.network import build_detector

    build_detector(1, backbone=detector.backbone, weights=detector.weights)


def train_shared_class(workspace, project, name: str, params: dict[str, Any], ctx, min_examples: int,
                       rows=None, trunk: SharedTrunk | None = None) -> ModelInfo:
    """Train, score on held-out images, calibrate and store the next version of `micro:NAME` as a head on the
    shared detector (trained first, or reused when the labelled boxes and settings are those it learnt from)."""
    from labelloop.ml.micro_boxes import SharedBoxHead
    from labelloop.services.assist.model_kinds.micro import micro_kind, self_validation

    rows, examples = checked_box_class(workspace, project, name, params, min_examples, rows)
    trunk = trunk or SharedTrunk(workspace, project, rows, params, ctx)
    if not any(name in names for _, names in trunk.truths):
        raise InvalidInput(f"no micro-model for {name!r}: every image holding it was held out to score the shared "
                           f"detector; draw it on more images")
    target = float(params.get("target_precision") or project.settings.get("target_precision") or 0.95)
    ctx.progress(0, None, f"training the micro-model of {name!r} on the shared detector's boxes")
    started = time.perf_counter()
    head = SharedBoxHead(name, trunk.sha256, target, seed=int(params.get("seed", 0))).fit(
        trunk.samples, trunk.held_found, [_of_class(t, name) for t in trunk.held_truths],
        trunk.train_found, [_of_class(t, name) for t in trunk.truths])
    seconds = time.perf_counter() - started
    score = head.figures()
    if not score["ready"]:
        score["reason"] += ": draw the class on more images, or lower the project's target precision"
    worse, verdict = self_validation(workspace, project, name, score)
    has_class = [any(s.label == name for s in shapes) for _, shapes in rows]
    positives = sorted(item.id for (item, _), has in zip(rows, has_class) if has)
    shared = {"sha256": trunk.sha256, "signature": trunk.signature, "reused_from": trunk.reused_from,
              "training_seconds": round(trunk.seconds, 3), **trunk.summary}
    metrics = {**box_metrics(name, SHARED, examples, len(rows), min_examples, score, target, worse, verdict,
                             seconds, len(trunk.held_rows)), "shared_detector": shared}
    stored = {"class": name, "base": SHARED, "min_examples": min_examples, "positives": positives,
              "labels_signature": class_signature(rows, name), "objects_signature": objects_signature(rows),
              "target_precision": target, "trunk_sha256": trunk.sha256, "trunk_signature": trunk.signature,
              "test_item_ids": sorted(item.id for item, _ in trunk.held_rows), **trunk.detector.get_params()}
    saved = save_model(workspace, project, micro_kind(name), head, params=stored, metrics=metrics,
                       item_ids=[item.id for item, _ in rows])
    if worse:
        saved = update_model(workspace, saved, status="worse")
    log.info("%s: %s", saved.ref, verdict)
    return saved
