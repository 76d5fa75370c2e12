"""`classifier`: image classes from embeddings (multi-class softmax or multi-label sigmoids), with pre-labels
only above per-class thresholds calibrated on held-out labelled items for the project's target precision."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from labelloop.domain import ClassLabel, ProjectKind, shape_to_dict
from labelloop.errors import InvalidInput
from labelloop.ml.calibration import METHODS
from labelloop.ml.pretrained import DEFAULT_MODEL
from labelloop.services.assist.embeddings import embed_items, embed_on_executor, encoder_key, load_embeddings
from labelloop.services.assist.model_kinds import register_model_kind
from labelloop.services.assist.models import load_estimator, save_model, update_model
from labelloop.services.data.project_data import item_pages, item_rows, labelled_items
from labelloop.services.assist.predictions import save_predictions
from labelloop.store.tables import BlobRow, PredictionRow

log = logging.getLogger(__name__)
HEADS = ("logreg", "finetune")
FEATURES = ("imagenet", "pooled")  # logreg reads the ImageNet logits of the embeddings, or the embeddings as they are
DEFAULT_FEATURES = "imagenet"
# The network whose embeddings the logistic regression reads by default: lite2's ImageNet logits raised coverage
# at the same target over lite0's on both clothing10 and hymenoptera (issue 17, docs/benchmarks.md).
DEFAULT_ENCODER = "tf_efficientnet_lite2"
CHUNK = 512  # items scored per step when pre-labelling
FINETUNE_EPOCHS = 30  # of the fine-tuned head's last stage (issue 17, docs/benchmarks.md)
TRUNK_BATCH = 32  # images run through the trunk at once
# The fine-tuned head's `estimate` reads the scores of at most this many unlabelled items (a seeded sample): their
# trunk maps are held in memory (67 KB an image with lite2), and the score distribution needs no more.
FINETUNE_POOL_SAMPLE = 5000
DEFAULT_CONFIDENCE = 0.8  # that pre-labels reach the target (project setting calibration_confidence)


def training_targets(project, rows) -> np.ndarray:
    """Class indices 0..K-1 (multi-class) or an N×K 0/1 matrix (multi-label) from labelled items."""
    column = {c.name: c.index - 1 for c in project.classes}
    if project.kind is ProjectKind.multilabel:
        y = np.zeros((len(rows), len(column)), np.int64)
        for n, (_, shapes) in enumerate(rows):
            y[n, [column[s.label] for s in shapes]] = 1
        return y
    return np.array([column[shapes[0].label] for _, shapes in rows], np.int64)


def _check_trainable(project, y: np.ndarray) -> None:
    names = project.class_names()
    if project.kind is ProjectKind.multilabel:
        if not ((y.sum(axis=0) > 0) & (y.sum(axis=0) < len(y))).any():
            raise InvalidInput(f"project {project.name!r}: no class is present on some labelled items and absent "
                               "on others; label more varied items")
        return
    present = sorted(set(y.tolist()))
    if len(present) < 2:
        raise InvalidInput(f"a classifier needs labelled items of at least 2 classes; {project.name!r} has only "
                           f"{', '.join(names[k] for k in present) or 'none'}")


def _put_png(workspace, data: bytes) -> str:
    sha, _ = workspace.blobs.put_bytes(data)
    with workspace.session() as session:
        if session.get(BlobRow, sha) is None:
            session.add(BlobRow(sha256=sha, size=len(data)))
    return sha


def _unlabelled_ids(workspace, project, labelled: set[int]) -> list[int]:
    return [i for page in item_pages(workspace, project.id, ids_only=True) for i in page if i not in labelled]


@register_model_kind
class Classifier:
    name = "classifier"
    description = ("logistic regression on pretrained embeddings (or a fine-tuned network), with pre-labels above "
                   "thresholds calibrated on held-out items for a target precision")
    project_kinds = (ProjectKind.classification, ProjectKind.multilabel)
    figures = (("head", "trained head", "text"), ("target_precision", "target precision", "number"),
               ("coverage", "unlabelled items pre-labelled", "share"),
               ("classes_with_prelabels", "classes with a threshold", "count"),
               ("held_out_accuracy", "held-out accuracy", "share"), ("labelled_items", "labelled items", "count"),
               ("held_out_items", "held-out items", "count"), ("calibration_method", "calibration rule", "text"),
               ("expected_calibration_error", "calibration error (ECE)", "number"),
               ("training_seconds", "training time", "seconds"))
    card_note = ("precision and recall per class are measured on labelled items the model did not train on "
                 "(cross-fitted), at the class's threshold")

    def settings(self, project, params: dict[str, Any]) -> dict[str, Any]:
        """Training choices: explicit params, then the project's settings, then defaults."""
        head = params.get("head") or "logreg"
        if head not in HEADS:
            raise InvalidInput(f"--head {head!r}: choose one of {', '.join(HEADS)}")
        target = float(params.get("target_precision") or project.settings.get("target_precision", 0.95))
        confidence = float(params.get("confidence") or project.settings.get("calibration_confidence",
                                                                            DEFAULT_CONFIDENCE))
        held_out = float(params.get("held_out") or 0.2)
        method = params.get("calibration_method") or project.settings.get("calibration_method", "auto")
        features = params.get("features") or project.settings.get("classifier_features", DEFAULT_FEATURES)
        if method not in METHODS:
            raise InvalidInput(f"calibration method {method!r}: choose one of {', '.join(METHODS)}")
        if features not in FEATURES:
            raise InvalidInput(f"classifier features {features!r}: choose one of {', '.join(FEATURES)}")
        if not 0.5 <= target < 1:
            raise InvalidInput(f"target precision {target} must lie in [0.5, 1)")
        if not 0 <= confidence < 1:
            raise InvalidInput(f"calibration confidence {confidence} must lie in [0, 1)")
        if not 0.05 <= held_out <= 0.5:
            raise InvalidInput(f"held-out fraction {held_out} must lie in [0.05, 0.5]")
        # Both heads read lite2 (measured, issue 17): its embeddings (logreg) or its trunk maps (finetune).
        encoder = params.get("encoder") or DEFAULT_ENCODER
        epochs = int(params.get("epochs") or FINETUNE_EPOCHS)
        if epochs < 1:
            raise InvalidInput(f"epochs {epochs} must be at least 1")
        return {"head": head, "encoder": encoder, "weights": params.get("weights"),
                "target_precision": target, "confidence": confidence, "held_out": held_out,
                "calibration_method": method, "features": features,
                "C": float(params.get("C", 1.0)), "seed": int(params.get("seed", 0)),
                "epochs": epochs, "trunk": head == "finetune"}

    def _estimator(self, choice: dict[str, Any], multilabel: bool):
        if choice["head"] == "finetune":
            from labelloop.ml.finetune import LastStageClassifier

            return LastStageClassifier(choice["encoder"], choice["weights"], multilabel=multilabel,
                                       epochs=choice["epochs"], random_state=choice["seed"])
        from labelloop.ml.classifier import EmbeddingClassifier

        return EmbeddingClassifier(C=choice["C"], multilabel=multilabel, random_state=choice["seed"])

    def _inputs(self, workspace, ids: Sequence[int], choice: dict[str, Any], progress=None):
        """What the estimator reads: cached embeddings (logreg), the network's trunk maps of each image and its
        mirror (finetune), or centre crops (a fine-tuned head saved before 2026-12-07)."""
        if choice["head"] == "finetune":
            from labelloop import media
            from labelloop.ml.embeddings import centre_crop

            def crops(size: int) -> Iterator[np.ndarray]:
                for r in item_rows(workspace, ids):
                    yield centre_crop(media.read(workspace.blobs.local_path(r.blob_sha256), r.page, name=r.source),
                                      size)

            if not choice.get("trunk"):
                return np.stack(list(crops(224))) if len(ids) else np.zeros((0, 224, 224, 3), np.uint8)
            from labelloop.ml.finetune import TrunkMaps

            trunk = TrunkMaps(choice["encoder"], choice["weights"])
            images, maps, done = crops(trunk.image_size), [], 0
            while batch := list(itertools.islice(images, TRUNK_BATCH)):
                maps.append(trunk.maps(batch))
                done += len(batch)
                if progress:
                    progress(done)
            return np.concatenate(maps) if maps else np.zeros((0, 0, 0, 0, 0), np.float16)
        return self.features_of(load_embeddings(workspace, ids, encoder_key(choice["encoder"], choice["weights"])),
                                choice)

    def features_of(self, X: np.ndarray, choice: dict[str, Any]) -> np.ndarray:
        """What the logistic head reads from cached embeddings X: the network's ImageNet logits, or X itself."""
        if choice.get("features") == "imagenet" and len(X):
            from labelloop.ml.embeddings import imagenet_logits

            return imagenet_logits(X, choice["encoder"], choice["weights"])
        return X

    def _resolve_features(self, workspace, ids: Sequence[int], choice: dict[str, Any]) -> None:
        """Fall back to the embeddings themselves when they do not fit the network's ImageNet head."""
        if choice["head"] != "logreg" or choice["features"] != "imagenet":
            return
        from labelloop.ml.embeddings import imagenet_head

        dim = load_embeddings(workspace, list(ids[:1]), encoder_key(choice["encoder"], choice["weights"])).shape[1]
        inputs = imagenet_head(choice["encoder"], None if choice["weights"] is None else str(choice["weights"]))[0]
        if dim != inputs.shape[1]:
            log.warning("embeddings of dimension %d do not fit the ImageNet head of %s (%d inputs): the classifier "
                        "reads the embeddings themselves", dim, choice["encoder"], inputs.shape[1])
            choice["features"] = "pooled"

    def _scored(self, workspace, prelabeller, ids: Sequence[int], choice, ctx, what: str) -> Iterator[tuple]:
        for start in range(0, len(ids), CHUNK):
            chunk = list(ids[start : start + CHUNK])
            proba, accepted = prelabeller.prelabel(self._inputs(workspace, chunk, choice))
            ctx.progress(min(start + CHUNK, len(ids)), len(ids), what)
            yield chunk, proba, accepted

    def train(self, workspace, project, params: dict[str, Any], ctx):
        from labelloop.ml.calibration import expected_calibration_error, reliability_bins, reliability_png
        from labelloop.ml.classifier import PreLabeller

        choice = self.settings(project, params)
        multilabel = project.kind is ProjectKind.multilabel
        rows = labelled_items(workspace, project, shape_types=("class",))
        if not rows:
            raise InvalidInput(f"project {project.name!r} has no labelled items to train on; label some, or import "
                               f"labels with `labelloop import {project.name} DIR --format folders|csv`")
        y = training_targets(project, rows)
        _check_trainable(project, y)
        ids = [item.id for item, _ in rows]
        pool = _unlabelled_ids(workspace, project, set(ids))
        embedding = None
        if choice["head"] == "logreg":  # every item: the pool is scored for coverage, and predict reuses them
            embedding = embed_on_executor(workspace, ids + pool, ctx, model_name=choice["encoder"],
                                          weights=choice["weights"])
            self._resolve_features(workspace, ids, choice)
        prelabeller = PreLabeller(self._estimator(choice, multilabel), tuple(project.class_names()), multilabel,
                                  choice["target_precision"], choice["confidence"], choice["held_out"],
                                  method=choice["calibration_method"], random_state=choice["seed"])
        if choice["head"] == "finetune":  # the estimate reads a seeded sample of the items to pre-label
            rng = np.random.default_rng(choice["seed"])
            pool = sorted(rng.choice(pool, FINETUNE_POOL_SAMPLE, replace=False).tolist()) \
                if len(pool) > FINETUNE_POOL_SAMPLE else pool
            ctx.progress(0, len(ids) + len(pool), "running the network's trunk on the images")

        def trunk_progress(offset: int):  # only the fine-tuned head runs the network here
            return lambda done: ctx.progress(offset + done, len(ids) + len(pool), "running the network's trunk on "
                                             "the images")

        unlabelled = self._inputs(workspace, pool, choice, trunk_progress(0)) if pool else None
        X = self._inputs(workspace, ids, choice, trunk_progress(len(pool)))
        ctx.progress(0, None, "training and calibrating")
        prelabeller.fit(X, y, unlabelled, progress=lambda done, fits: ctx.progress(
            done, fits, "training and calibrating (cross-fitted folds, then all labels)"))
        coverage, prelabels = self._coverage(prelabeller, pool)
        held_proba, held_y = prelabeller.held_out_proba_, prelabeller.held_out_y_
        if multilabel:  # each class decision is its own probability, right when the label is present
            confidence, correct = held_proba.ravel(), held_y.ravel() > 0
            accuracy = (held_proba >= 0.5) == (held_y > 0)
        else:
            confidence, correct = held_proba.max(axis=1), held_proba.argmax(axis=1) == held_y
            accuracy = correct
        bins = reliability_bins(confidence, correct)
        plot = _put_png(workspace, reliability_png(bins, f"{project.name}: held-out reliability"))
        classes = {c.name: {**c.to_dict(), "prelabelled": int(prelabels[k]),
                            "coverage": round(float(prelabels[k]) / len(pool), 4) if pool else None}
                   for k, c in enumerate(prelabeller.calibration_)}
        for entry in classes.values():
            entry.pop("name")
        metrics = {
            "head": choice["head"], "labelled_items": len(ids), "held_out_items": len(held_y),
            "target_precision": choice["target_precision"], "confidence": choice["confidence"],
            "calibration_method": choice["calibration_method"], "features": choice["features"],
            "held_out_accuracy": round(float(accuracy.mean()), 4) if accuracy.size else None,
            "expected_calibration_error": expected_calibration_error(bins),
            "classes_with_prelabels": sum(c.threshold is not None for c in prelabeller.calibration_),
            "coverage": coverage,
            "embedding_seconds": embedding.seconds if embedding else None,
            "images_per_second": embedding.images_per_second if embedding else None,
            "training_seconds": round(prelabeller.training_seconds_, 3),
            "calibration_seconds": round(prelabeller.calibration_seconds_, 3),
            "reliability_plot": str(workspace.blobs.local_path(plot)),
            "classes": classes,
        }
        stored = {**choice, "class_names": project.class_names(), "reliability_plot_sha256": plot}
        return save_model(workspace, project, self.name, prelabeller, params=stored, metrics=metrics, item_ids=ids,
                          curves={"reliability": bins})

    def _coverage(self, prelabeller, pool: list[int]) -> tuple[float | None, np.ndarray]:
        """Share of unlabelled items that would get a pre-label now, and pre-labels per class."""
        if prelabeller.pool_proba_ is None:
            return None, np.zeros(len(prelabeller.class_names), np.int64)
        accepted = prelabeller.accept(prelabeller.pool_proba_)
        return round(float(accepted.any(axis=1).mean()), 4), accepted.sum(axis=0)

    def _recalibrated(self, metrics: dict[str, Any], prelabeller) -> dict[str, Any]:
        """The model's calibration figures after its thresholds were chosen again for other settings."""
        pool = prelabeller.pool_proba_.shape[0] if prelabeller.pool_proba_ is not None else 0
        coverage, prelabels = self._coverage(prelabeller, list(range(pool)))
        classes = {}
        for k, c in enumerate(prelabeller.calibration_):
            entry = {**metrics.get("classes", {}).get(c.name, {}), **c.to_dict(), "prelabelled": int(prelabels[k]),
                     "coverage": round(float(prelabels[k]) / pool, 4) if pool else None}
            entry.pop("name")
            classes[c.name] = entry
        return {**metrics, "target_precision": prelabeller.target_precision, "confidence": prelabeller.confidence,
                "calibration_method": prelabeller.method, "coverage": coverage, "classes": classes,
                "classes_with_prelabels": sum(c.threshold is not None for c in prelabeller.calibration_)}

    def predict(self, workspace, project, model, item_ids: list[int], params: dict[str, Any], ctx) -> dict[str, Any]:
        prelabeller = load_estimator(workspace, model)
        choice = {**model.params}
        if list(prelabeller.class_names) != project.class_names():
            raise InvalidInput(f"model {model.ref} was trained on classes {', '.join(prelabeller.class_names)} but the "
                               f"project now has {', '.join(project.class_names())}; train it again")
        # The project's settings as they are now (a target changed in Settings since training), unless the call
        # names its own: thresholds are chosen again from the stored held-out scores, no retraining needed.
        settings = project.settings
        target = float(params.get("target_precision") or settings.get("target_precision", prelabeller.target_precision))
        method = params.get("calibration_method") or settings.get("calibration_method") or getattr(prelabeller, "method", "bound")
        confidence = float(params.get("confidence") or settings.get("calibration_confidence", prelabeller.confidence))
        if method not in METHODS:
            raise InvalidInput(f"calibration method {method!r}: choose one of {', '.join(METHODS)}")
        if not 0.5 <= target < 1:
            raise InvalidInput(f"--target-precision {target} must lie in [0.5, 1)")
        if (target, method, confidence) != (prelabeller.target_precision, getattr(prelabeller, "method", None),
                                            prelabeller.confidence):
            prelabeller.set_target(target, confidence=confidence, method=method)
            model = update_model(workspace, model, metrics=self._recalibrated(model.metrics, prelabeller))
            ctx.log(f"thresholds chosen again for target precision {target:g} ({method}, confidence "
                    f"{confidence:g}) from {model.ref}'s held-out scores; no retraining")
        from labelloop.services.quality.spot_checks import apply_raised_thresholds

        raised = apply_raised_thresholds(prelabeller, settings)
        if raised:  # spot-checks of auto-accepted pre-labels found these classes below the target
            ctx.log("thresholds raised by spot-checks: " + ", ".join(
                f"{name} {'no pre-labels' if t is None else round(t, 4)}" for name, t in raised.items()))
        if choice["head"] == "logreg":
            embed_items(workspace, item_ids, model_name=choice["encoder"], weights=choice["weights"],
                        progress=ctx.progress)
        names = list(prelabeller.class_names)
        multilabel = prelabeller.multilabel
        started = time.perf_counter()
        written, prelabelled = 0, 0
        per_class = dict.fromkeys(names, 0)
        for chunk, proba, accepted in self._scored(workspace, prelabeller, item_ids, choice, ctx, "pre-labelling"):
            rows = []
            for item_id, p, ok in zip(chunk, proba, accepted):
                shapes = [ClassLabel(names[k], score=round(float(p[k]), 4),
                                     attributes={"prelabel": True, "threshold": round(float(prelabeller.thresholds_[k]), 4)})
                          for k in np.flatnonzero(ok)]
                for shape in shapes:
                    per_class[shape.label] += 1
                prelabelled += bool(shapes)
                # The item score orders manual labelling: the least certain decision of the item.
                certainty = np.maximum(p, 1 - p).min() if multilabel else p.max()
                rows.append(PredictionRow(item_id=item_id, model_id=model.id, model_version=model.ref,
                                          shapes=[shape_to_dict(s) for s in shapes],
                                          score=round(float(certainty), 4), review_state="pending"))
            with workspace.session() as session:
                save_predictions(session, rows)
            written += len(rows)
        missing = {c.name: c.reason for c in prelabeller.calibration_ if c.threshold is None}
        return {
            "summary": _outcome(prelabelled, written, prelabeller, missing),
            "model": model.ref, "predictions": written, "prelabelled": prelabelled,
            "coverage": round(prelabelled / written, 4) if written else None,
            "target_precision": prelabeller.target_precision, "prelabels_per_class": per_class,
            "thresholds": {c.name: c.threshold for c in prelabeller.calibration_},
            "raised_by_spot_checks": raised,
            "no_prelabels": missing,
            "seconds": round(time.perf_counter() - started, 3),
        }


def _outcome(prelabelled: int, items: int, prelabeller, missing: dict[str, str]) -> str:
    """The pre-label run in one line, for the job list: how many, at what target, and why a class got none."""
    ready = len(prelabeller.class_names) - len(missing)
    line = (f"{prelabelled} pre-label(s) on {items} item(s) at target precision {prelabeller.target_precision:g}; "
            f"thresholds for {ready} of {len(prelabeller.class_names)} classes")
    return "; ".join([line, *(f"{name}: {reason}" for name, reason in missing.items())])
