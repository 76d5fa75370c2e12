"""Micro-models of detection projects, scored and calibrated on held-out images (ml.micro_boxes), and the chain that
runs them and merges their boxes into one pre-label per item. Two bases:
- `detector` (here): per class the project's detector (`BoxDetector`, one class) trained on that class's boxes, the
  labelled images without any of them as negatives; the chain runs one detector per class;
- `shared-detector` (services/assist/micro_shared_boxes.py): one class-agnostic detector for every class and a
  head per class on its box features; the chain runs the detector once per image."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

import numpy as np

from labelloop import media
from labelloop.domain import Box, shape_to_dict
from labelloop.errors import InvalidInput
from labelloop.services.assist.models import ModelInfo, save_model, update_model
from labelloop.services.data.project_data import item_rows, labelled_items

log = logging.getLogger(__name__)
SHARED = "shared-detector"
DEFAULT_BOX_MIN_EXAMPLES = 5  # images with a box of the class: one is held out, the folds need a few to train on
PREDICT_BATCH = 8  # images read and detected together (the detector may run them in parallel)


def box_rows(workspace, project) -> list:
    """Labelled images with boxes (a box micro-model's positives and negatives)."""
    return labelled_items(workspace, project, shape_types=("box",))


def why_not_trainable_box(name: str, examples: int, min_examples: int) -> str:
    """'' when a class's box micro-model can be trained, else the reason in words. No image without the class is
    needed: the background of the class's own images teaches the detector what the class is not."""
    if examples < min_examples:
        return (f"{examples} labelled image(s) hold a {name!r} box, fewer than --min-examples {min_examples}; "
                f"draw it on {min_examples - examples} more")
    return ""


def class_signature(rows, name: str) -> str:
    """A digest of what a class's micro-model learns from: the labelled images and their boxes of the class. A
    retrain with --all-classes is skipped when it is the same (other classes' boxes moving change nothing)."""
    digest = hashlib.sha256()
    for item, shapes in sorted(rows, key=lambda r: r[0].id):
        boxes = sorted([round(s.x0, 2), round(s.y0, 2), round(s.x1, 2), round(s.y1, 2)]
                       for s in shapes if isinstance(s, Box) and s.label == name)
        digest.update(json.dumps([item.id, boxes]).encode())
    return digest.hexdigest()[:16]


def checked_box_class(workspace, project, name: str, params: dict[str, Any], min_examples: int,
                      rows=None) -> tuple[list, int]:
    """(the labelled box images, the count holding `name`), or InvalidInput when the project has no such class,
    pseudo-labels are asked for, or too few images hold the class: before any work, on either detection base."""
    from labelloop.services.assist.model_kinds.micro import examples_per_class

    if name not in project.class_names():
        raise InvalidInput(f"project {project.name!r} has no class {name!r}; its classes: "
                           f"{', '.join(project.class_names())}")
    if params.get("pseudo_labels"):
        raise InvalidInput("--pseudo-labels: pseudo-labels train classification micro-models only; box ones learn "
                           "from human boxes")
    rows = box_rows(workspace, project) if rows is None else rows
    examples = examples_per_class(project, rows)[name]
    reason = why_not_trainable_box(name, examples, min_examples)
    if reason:
        raise InvalidInput(f"no micro-model for {name!r}: {reason}")
    return rows, examples


def box_metrics(name: str, base: str, examples: int, labelled: int, min_examples: int, score: dict[str, Any],
                target: float, worse: str, verdict: str, seconds: float, held_images: int) -> dict[str, Any]:
    """What a box micro-model's version records of its held-out score and self-validation, on either base."""
    return {
        "class": name, "base": base, "examples": examples, "negatives": labelled - examples,
        "labelled_items": labelled, "min_examples": min_examples, "held_out": score,
        "held_out_precision": score["precision"], "held_out_recall": score["recall"],
        "held_out_average_precision": score["average_precision"], "held_out_map": score["map"],
        "threshold": score["threshold"], "ready": score["ready"], "reason": score["reason"],
        "target_precision": target, "coverage": None, "in_use": not worse, "self_validation": verdict,
        "training_seconds": round(seconds, 3), "pseudo_labels": {"requested": False},
        "measured_on": f"{held_images} held-out images ({score['boxes']} boxes); threshold on "
                       f"{score['calibrated_on']}",
    }


def _read(workspace, item) -> np.ndarray:
    return media.read(workspace.blobs.local_path(item.blob_sha256), item.page, name=item.source)


def _target(shapes, name: str) -> dict[str, np.ndarray]:
    boxes = [[s.x0, s.y0, s.x1, s.y1] for s in shapes if isinstance(s, Box) and s.label == name]
    return {"boxes": np.array(boxes, float).reshape(-1, 4), "labels": np.ones(len(boxes), int)}


def detector_settings(params: dict[str, Any], target: float) -> dict[str, Any]:
    """The detector kind's options (--epochs, --min-size, --set ...), with one evaluation at the end unless
    --eval-period is given: a micro-model keeps only its final network."""
    from labelloop.services.assist.model_kinds.detector import settings

    options = settings(params, target)
    if params.get("eval_period") is None:
        options["eval_period"] = 1_000_000
    return options


def train_box_class(workspace, project, name: str, params: dict[str, Any], ctx, min_examples: int,
                    rows=None) -> ModelInfo:
    """Train, score on held-out images, calibrate and store the next version of `micro:NAME` on the detector; a
    version whose held-out AP@0.5 falls below the one in use (or that lost its threshold) is kept with status
    `worse`."""
    from labelloop.ml.detection.detector import BoxDetector
    from labelloop.ml.detection.network import build_detector
    from labelloop.ml.micro_boxes import BoxMicroModel, held_out_figures, held_out_images
    from labelloop.services.assist.model_kinds.micro import micro_kind, self_validation

    rows, examples = checked_box_class(workspace, project, name, params, min_examples, rows)
    target = float(params.get("target_precision") or project.settings.get("target_precision") or 0.95)
    options = detector_settings(params, target)
    try:
        detector = BoxDetector(1, **options).validate_params()
    except (TypeError, ValueError) as exc:
        raise InvalidInput(str(exc)) from None
    build_detector(1, backbone=detector.backbone, weights=detector.weights)  # bad weights fail before any work
    fraction = float(params.get("test_fraction", 0.2))
    if not 0 < fraction < 1:
        raise InvalidInput(f"--test-fraction {fraction}: give a share between 0 and 1, e.g. 0.2")
    has_class = np.array([any(s.label == name for s in shapes) for _, shapes in rows])
    test = set(held_out_images(has_class, fraction, int(params.get("seed", 0))).tolist())
    images, targets, test_images, test_targets = [], [], [], []
    for n, (item, shapes) in enumerate(rows):
        (test_images if n in test else images).append(_read(workspace, item))
        (test_targets if n in test else targets).append(_target(shapes, name))
        ctx.progress(n + 1, len(rows), "reading labelled images")
    started = time.perf_counter()
    detector.fit(images, targets, test_images, test_targets, on_progress=ctx.progress)
    seconds = time.perf_counter() - started
    score = held_out_figures(detector)
    if not score["ready"]:
        score["reason"] += ": draw the class on more images, or lower the project's target precision"
    worse, verdict = self_validation(workspace, project, name, score)
    positives = sorted(item.id for (item, _), has in zip(rows, has_class) if has)
    metrics = {
        **box_metrics(name, "detector", examples, len(rows), min_examples, score, target, worse, verdict, seconds,
                      len(test_images)),
        "epochs": detector.summary_["epochs"], "steps": detector.summary_["steps"],
        "stopped": detector.summary_["stopped"],
    }
    stored = {"class": name, "base": "detector", "min_examples": min_examples, "positives": positives,
              "labels_signature": class_signature(rows, name), "target_precision": target,
              "test_item_ids": sorted(rows[n][0].id for n in test), **detector.get_params()}
    saved = save_model(workspace, project, micro_kind(name), BoxMicroModel(name, detector.checkpoint(), target),
                       params=stored, metrics=metrics, item_ids=[item.id for item, _ in rows],
                       curves=dict(detector.history_))
    if worse:
        saved = update_model(workspace, saved, status="worse")
    log.info("%s: %s", saved.ref, verdict)
    return saved


def train_box_micros(workspace, project, params: dict[str, Any], ctx, min_examples: int,
                     base: str = "detector") -> dict[str, dict]:
    """Per class asked for (`class`, or every class with `all_classes`): what was trained, or why not. With
    `all_classes`, a class whose images and boxes are the same as its version in use's is left as it is unless
    `force` (on the shared detector: and whose shared detector would be the same)."""
    from labelloop.services.assist.micro import train_each_class
    from labelloop.services.assist.model_kinds.micro import examples_per_class

    names = project.class_names() if params.get("all_classes") else [params.get("class")]
    if not params.get("all_classes") and not names[0]:
        raise InvalidInput("give --class CLASS or --all-classes")
    rows = box_rows(workspace, project)
    if base == SHARED:
        from labelloop.services.assist.micro_shared_boxes import (SharedTrunk, objects_signature, train_shared_class,
                                                                  trunk_settings, trunk_signature)

        # one shared detector for every class trained in this job: made (or found) on the first class's turn
        detector, fraction, seed = trunk_settings(project, params)
        signature = trunk_signature(rows, detector, fraction, seed)
        shared: list = []

        def train_one(name: str) -> ModelInfo:
            if not shared:
                shared.append(SharedTrunk(workspace, project, rows, params, ctx))
            return train_shared_class(workspace, project, name, params, ctx, min_examples, rows, shared[0])

        boxes = objects_signature(rows)

        def unchanged(current, name: str) -> bool:  # a head learns its class against every other object's
            return current.params.get("base") == SHARED and current.params.get("trunk_signature") == signature \
                and current.params.get("objects_signature") == boxes
    else:
        def train_one(name: str) -> ModelInfo:
            return train_box_class(workspace, project, name, params, ctx, min_examples, rows)

        def unchanged(current, name: str) -> bool:
            return current.params.get("base") == "detector" \
                and current.params.get("labels_signature") == class_signature(rows, name)
    return train_each_class(
        workspace, project, params, names, examples_per_class(project, rows),
        lambda name, n: why_not_trainable_box(name, n, min_examples), unchanged, train_one,
        lambda m: {"average_precision": m["held_out_average_precision"]})


def predict_box_chain(workspace, project, models: list[ModelInfo], item_ids: list[int], ctx,
                      target_precision: float | None = None) -> dict[str, Any]:
    """Every micro-model's boxes on each item, those above its threshold merged (ml.micro_boxes.merge_detections);
    one Prediction per item whose boxes each name the micro-model and version that made them."""
    from labelloop.ml.micro_boxes import exclusive, merge_detections
    from labelloop.services.assist.micro import CHAIN_VERSION, chain_result, save_chain_rows
    from labelloop.services.assist.micro_shared_boxes import load_trunk
    from labelloop.services.assist.model_kinds.micro import class_of
    from labelloop.services.assist.models import load_estimator
    from labelloop.store.tables import PredictionRow

    loaded = [load_estimator(workspace, m) for m in models]
    target = target_precision or project.settings.get("target_precision")
    for estimator in loaded:
        if target and float(target) != estimator.target_precision:
            estimator.set_target(float(target))
    names = [class_of(m.kind) for m in models]
    thresholds = np.array([np.inf if e.threshold_ is None else e.threshold_ for e in loaded])
    # heads on one shared detector: the detector runs once per image and each head scores its boxes
    shared: dict[str, list[int]] = {}
    for k, model in enumerate(models):
        if model.params.get("base") == SHARED:
            shared.setdefault(model.params["trunk_sha256"], []).append(k)
    trunks = {sha: load_trunk(workspace, sha) for sha in shared}
    separate = [k for k, model in enumerate(models) if model.params.get("base") != SHARED]
    started = time.perf_counter()
    per_class, prelabelled, written = dict.fromkeys(names, 0), 0, 0
    for start in range(0, len(item_ids), PREDICT_BATCH):
        items = list(item_rows(workspace, item_ids[start:start + PREDICT_BATCH]))
        images = [_read(workspace, item) for item in items]
        found: list = [None] * len(models)  # per model, per image
        for k in separate:
            found[k] = loaded[k].detect(images)
        for sha, members in shared.items():
            boxes = trunks[sha].predict_with_features(images)
            scored = [loaded[k].score(boxes) for k in members]
            for n in range(len(images)):  # one class per shared box: the passing head with the highest score
                kept = exclusive([s[n]["scores"] for s in scored], thresholds[members])
                for s, scores in zip(scored, kept):
                    s[n]["scores"] = scores
            for k, s in zip(members, scored):
                found[k] = s
        rows = []
        for n, item in enumerate(items):
            mine = [found[k][n] for k in range(len(models))]
            boxes, classes, scores = merge_detections(mine, thresholds)
            shapes = [Box(names[k], *(round(float(v), 2) for v in box), score=round(float(score), 4),
                          attributes={"prelabel": True, "threshold": round(float(thresholds[k]), 4),
                                      "micro_model": models[k].ref, "micro_model_id": models[k].id})
                      for box, k, score in zip(boxes, classes, scores)]
            for shape in shapes:
                per_class[shape.label] += 1
            prelabelled += bool(shapes)
            # The item score orders manual labelling: the surest box any micro-model found, passing or not.
            every = np.concatenate([np.asarray(f["scores"], float).reshape(-1) for f in mine])
            every = every[np.isfinite(every)]
            rows.append(PredictionRow(item_id=item.id, model_id=None, model_version=CHAIN_VERSION,
                                      shapes=[shape_to_dict(s) for s in shapes],
                                      score=round(float(every.max()), 4) if len(every) else None,
                                      review_state="pending"))
        written = save_chain_rows(workspace, [item.id for item in items], rows, written, len(item_ids), ctx)
    return chain_result(models, names, thresholds, written, prelabelled, per_class, started)
