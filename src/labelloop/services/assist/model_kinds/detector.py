"""`detector`: Faster R-CNN over an ImageNet-pretrained backbone, fine-tuned on the project's boxes.

Training holds some labelled images out for testing (a seeded share, a split, or chosen items); every evaluation
period scores them (COCO mAP), chooses the pre-label threshold on them for the project's target precision, and
replaces the version's checkpoint, so stopping keeps the last evaluated network. `--from V` fine-tunes version V
on today's labels; `--resume V` continues a run. Predictions keep every box the network finds (score ≥ 0.05);
those at or above the calibrated threshold are marked as pre-labels. When the held-out images hold few boxes (under
30), K cross-validation fold models (3, each for half the training's steps) add out-of-fold predictions of every
labelled image to choose the threshold on (`--set calibration_folds=0|2..10|auto`, `--set fold_share=0.5`); with
`--from V` one fold instead, fine-tuned from V like the version itself, predicts the training images V never saw. At
prediction the box head scores the RPN's best `proposals` boxes per image (`--set proposals=N`, `--set
proposals_before_nms=N`), on the image scaled to a short side of `predict_size` pixels (`--set predict_size=N` at
training, stored with the version, or at prediction for that run; default: `--min-size`). `--set precision=bf16`
trains and predicts under bfloat16 autocast (faster where the CPU multiplies bf16 natively, but less accurate at
equal steps on raccoon); `auto` (the default) and `fp32` run float32; stored with the version. Torch is imported
only inside the methods."""

from __future__ import annotations

import time
from itertools import islice
from typing import Any

import numpy as np

from labelloop import media
from labelloop.domain import Box, ProjectKind, shape_to_dict
from labelloop.errors import InvalidInput
from labelloop.services.assist.model_kinds import register_model_kind
from labelloop.services.assist.model_kinds.checkpoints import end_run, resumable, run_keeping_checkpoints
from labelloop.services.assist.model_kinds.options import number as _number
from labelloop.services.assist.model_kinds.options import parse_duration
from labelloop.services.assist.models import ModelInfo, get_model, read_checkpoint, start_model, update_model
from labelloop.services.data.project_data import labelled_items
from labelloop.services.assist.predictions import save_predictions
from labelloop.store.tables import PredictionRow

DEFAULT_BUDGET = 15 * 60.0  # seconds, when neither --epochs nor --time-budget is given
PREDICT_CHUNK = 8  # images decoded and detected together by `predict`
TINY_BOX = 4  # pixels: a box whose shorter side the network sees smaller than this is warned about
_INTS = {"batch_size": "--batch-size", "epochs": "--epochs", "rois_per_image": "--rois-per-image",
         "eval_period": "--eval-period", "min_size": "--min-size", "max_size": "max_size", "threads": "threads",
         "warmup_steps": "warmup_steps", "proposals": "proposals", "proposals_before_nms": "proposals_before_nms",
         "predict_size": "predict_size"}
_FLOATS = {"gamma": "--gamma", "weight_decay": "weight_decay", "momentum": "momentum", "colour": "colour"}


def _ids(value: Any, option: str) -> list[int]:
    """'3,5,9' or [3, 5, 9] -> [3, 5, 9]."""
    parts = value if isinstance(value, (list, tuple)) else str(value).split(",")
    try:
        return [int(str(p).strip()) for p in parts if str(p).strip()]
    except ValueError:
        raise InvalidInput(f"{option} {value!r}: give item ids separated by commas, e.g. 3,5,9") from None


def settings(params: dict[str, Any], target_precision: float) -> dict[str, Any]:
    """BoxDetector arguments from job params (CLI options and --set pairs), checked."""
    out: dict[str, Any] = {"seed": int(params.get("seed", 0)), "target_precision": target_precision}
    if params.get("backbone"):
        out["backbone"] = str(params["backbone"])
    if params.get("weights"):
        out["weights"] = str(params["weights"])
    for name, option in _INTS.items():
        if params.get(name) is not None:
            out[name] = _number(option, params[name], int)
    for name, option in _FLOATS.items():
        if params.get(name) is not None:
            out[name] = _number(option, params[name], float)
    if params.get("lr") is not None:
        if str(params["lr"]).lower() == "auto":
            raise InvalidInput("--lr auto is not available for the detector yet; give a number (default 0.01)")
        out["lr"] = _number("--lr", params["lr"], float)
    if params.get("calibration_folds") is not None:
        folds = str(params["calibration_folds"]).lower()
        out["calibration_folds"] = "auto" if folds == "auto" else _number("calibration_folds", folds, int)
    if params.get("fold_share") is not None:
        out["fold_share"] = _number("fold_share", params["fold_share"], float)
    if params.get("precision"):
        out["precision"] = str(params["precision"]).lower()
        if out["precision"] not in ("auto", "bf16", "fp32"):
            raise InvalidInput(f"precision {params['precision']!r}: give auto, bf16 or fp32")
    if params.get("frozen_norms") is not None:
        out["frozen_norms"] = str(params["frozen_norms"]).lower() not in ("false", "0", "no")
    if params.get("gamma_epochs") is not None:
        out["gamma_epochs"] = _ids(params["gamma_epochs"], "--gamma-epochs")
    if params.get("time_budget") is not None:
        out["time_budget"] = parse_duration(params["time_budget"])
    if out.get("epochs") is None and out.get("time_budget") is None:
        out["time_budget"] = DEFAULT_BUDGET
    return out


def _targets(project, shapes) -> dict[str, np.ndarray]:
    index = {c.name: c.index for c in project.classes}
    boxes = [s for s in shapes if isinstance(s, Box)]
    return {"boxes": np.array([[b.x0, b.y0, b.x1, b.y1] for b in boxes], float).reshape(-1, 4),
            "labels": np.array([index[b.label] for b in boxes], int)}


@register_model_kind
class Detector:
    name = "detector"
    description = ("Faster R-CNN with a feature pyramid over an ImageNet-pretrained backbone (EfficientNet-Lite0), "
                   "fine-tuned on the project's boxes; pre-labels above a threshold calibrated on held-out images")
    project_kinds = (ProjectKind.detection,)
    fine_tunes = True  # `--from VERSION` starts from that version's network (simulate --from-previous uses it)
    figures = (("map50", "mAP@0.5 (test images)", "number"), ("map", "mAP@0.5:0.95", "number"),
               ("threshold", "pre-label threshold", "number"), ("precision", "precision above it", "share"),
               ("recall", "recall above it", "share"), ("test_items", "test images", "count"),
               ("train_items", "training images", "count"), ("epochs", "epochs", "count"),
               ("training_seconds", "training time", "seconds"), ("stopped", "stopped by", "text"),
               ("calibrated_on", "threshold chosen on", "text"))
    card_note = ("mAP and the threshold are measured on labelled images held out of training; a box is right when "
                 "it matches a true box of its class at IoU ≥ 0.5")

    def train(self, workspace, project, params: dict[str, Any], ctx) -> ModelInfo:
        from labelloop.ml.detection.detector import BoxDetector

        target = float(params.get("target_precision") or project.settings.get("target_precision", 0.95))
        rows = [(item, shapes) for item, shapes in labelled_items(workspace, project, ("box",))]
        resumed = self._resumable(workspace, project, params["resume"]) if params.get("resume") else None
        base = get_model(workspace, project, self._ref(params["from"])) if params.get("from") else None
        if resumed:
            detector = BoxDetector.from_checkpoint(read_checkpoint(workspace, resumed))
            order = {item_id: n for n, item_id in enumerate(resumed.item_ids)}
            rows = sorted((r for r in rows if r[0].id in order), key=lambda r: order[r[0].id])
            test_ids = set(resumed.params["test_item_ids"])
        else:
            try:
                detector = BoxDetector(len(project.classes), **settings(params, target)).validate_params()
            except (TypeError, ValueError) as exc:
                raise InvalidInput(str(exc)) from None
            test_ids = self._test_items(project, rows, params, base)
        if len(rows) < 2:
            raise InvalidInput(f"project {project.name!r} has {len(rows)} image(s) with boxes; a detector needs at "
                               f"least 2 (one to train on, one to test on): draw more boxes first")
        start_from, seen = self._start_from(workspace, project, base) if base else (None, set())
        if not resumed and not start_from:
            from labelloop.ml.detection.network import build_detector

            build_detector(len(project.classes), backbone=detector.backbone, weights=detector.weights)  # bad weights fail here
        train_rows = [r for r in rows if r[0].id not in test_ids]
        test_rows = [r for r in rows if r[0].id in test_ids]
        images, targets = self._read(workspace, project, train_rows, ctx, "reading training images")
        test_images, test_targets = self._read(workspace, project, test_rows, ctx, "reading test images")
        warnings = self._warnings(project, train_rows + test_rows, detector.min_size, detector.max_size)
        for line in warnings:
            ctx.log(f"warning: {line}")
        ctx.log(f"training in {'bf16 autocast' if detector.compute_dtype() is not None else 'float32'} "
                f"(precision={detector.precision})")
        held_boxes = sum(len(t["labels"]) for t in test_targets)
        folds = detector.folds_for(held_boxes, len(train_rows)) if not getattr(detector, "cv_", None) else 0
        unseen = [n for n, (item, _) in enumerate(train_rows) if item.id not in seen] if start_from else []
        if folds and 0 < len(unseen) < len(train_rows):
            ctx.log(f"{len(test_rows)} held-out image(s) hold {held_boxes} box(es): too few to choose the pre-label "
                    f"threshold on alone; after training, a fold model fine-tuned from {base.ref} "
                    f"without the {len(unseen)} training image(s) it never saw ({detector.fold_share:g}× the "
                    f"training's steps) adds its predictions of them (--set calibration_folds=0 skips it)")
        elif folds:
            ctx.log(f"{len(test_rows)} held-out image(s) hold {held_boxes} box(es): too few to choose the pre-label "
                    f"threshold on alone; after training, {folds} cross-validation fold models (each "
                    f"{detector.fold_share:g}× the training's steps) add out-of-fold predictions "
                    f"(--set calibration_folds=0 skips them)")
        stored = {**detector.get_params(), "test_item_ids": sorted(test_ids), "job_id": ctx.job_id,
                  "class_names": project.class_names(), "from": params.get("from"),
                  "resumed_from": resumed.ref if resumed else None, "warnings": warnings}
        model = start_model(workspace, project, self.name, params=stored, item_ids=[item.id for item, _ in rows])
        counts = {"train_items": len(train_rows), "test_items": len(test_rows),
                  "classes_without_boxes": [c.name for c in project.classes
                                            if not any(c.index in t["labels"] for t in targets)]}

        def checkpoint(found) -> None:
            nonlocal model
            model = update_model(workspace, model, checkpoint=found.checkpoint(), curves=dict(found.history_),
                                 metrics={**found.summary_, **counts, **self._thresholds(found, project)})

        def run() -> None:
            if resumed:
                wanted = settings(params, target)
                detector.resume(images, targets, test_images, test_targets, epochs=wanted.get("epochs"),
                                time_budget=wanted.get("time_budget"), on_progress=ctx.progress,
                                on_checkpoint=checkpoint)
            else:
                detector.fit(images, targets, test_images, test_targets, start_from=start_from, unseen=unseen,
                             on_progress=ctx.progress, on_checkpoint=checkpoint)

        return run_keeping_checkpoints(run, lambda stopped, status: self._keep(workspace, model, stopped, status),
                                       lambda: detector.summary_["stopped"], "evaluation")

    def _test_items(self, project, rows, params, base=None) -> set[int]:
        """The held-out images: chosen ids, a split, or a seeded share (at least one, never all). Fine-tuning
        (`--from V`) with a share keeps V's split: V's test images stay test images (V never trained on them) and V's
        training images stay training images (it did), and the share is drawn from the images V never saw, so the
        threshold is still chosen on images the network has not learnt."""
        labelled = {item.id for item, _ in rows}
        if params.get("test_items"):
            chosen = set(_ids(params["test_items"], "--test-items"))
            unlabelled = sorted(chosen - labelled)
            if unlabelled:
                raise InvalidInput(f"--test-items {', '.join(map(str, unlabelled))}: these items have no boxes (or "
                                   f"are not in project {project.name!r}); test items must be labelled")
            return chosen
        if params.get("test_split"):
            chosen = {item.id for item, _ in rows if item.split == params["test_split"]}
            if not chosen:
                raise InvalidInput(f"--test-split {params['test_split']!r}: no labelled item is in that split")
            return chosen
        fraction = float(params.get("test_fraction", 0.2))
        if not 0 < fraction < 1:
            raise InvalidInput(f"--test-fraction {fraction}: give a share between 0 and 1, e.g. 0.2")
        rng = np.random.default_rng(int(params.get("seed", 0)))
        if base is not None:
            kept = set(base.params.get("test_item_ids") or []) & labelled
            new = sorted(labelled - set(base.item_ids) - kept)
            count = min(len(new), round(fraction * len(new)))
            chosen = kept | (set(rng.choice(new, size=count, replace=False).tolist()) if count > 0 else set())
            if chosen and len(chosen) < len(labelled):
                return chosen
        ids = sorted(labelled)
        count = min(len(ids) - 1, max(1, round(fraction * len(ids))))
        return set(rng.choice(ids, size=count, replace=False).tolist()) if count > 0 else set()

    def _ref(self, version) -> str:
        return f"{self.name}:{version}" if str(version).isdigit() else str(version)

    def _start_from(self, workspace, project, base) -> tuple[dict, set[int]]:
        """The network state of version `base` (`--from`) and the items it trained on."""
        from labelloop.ml.detection.detector import BoxDetector

        if base.params.get("class_names") != project.class_names():
            raise InvalidInput(f"--from {base.ref}: it was trained on classes "
                               f"{', '.join(base.params['class_names'])}, the "
                               f"project now has {', '.join(project.class_names())}; train a new detector")
        trained_on = set(base.item_ids) - set(base.params.get("test_item_ids") or [])
        return BoxDetector.from_checkpoint(read_checkpoint(workspace, base)).network_.state_dict(), trained_on

    def _read(self, workspace, project, rows, ctx, what: str) -> tuple[list, list]:
        images, targets = [], []
        for n, (item, shapes) in enumerate(rows, 1):
            images.append(media.read(workspace.blobs.local_path(item.blob_sha256), item.page, name=item.source))
            targets.append(_targets(project, shapes))
            ctx.progress(n, len(rows), what)
        return images, targets

    def _warnings(self, project, rows, min_size: int, max_size: int) -> list[str]:
        """Boxes the network will see under TINY_BOX pixels at this --min-size (large images, small objects)."""
        tiny = 0
        for item, shapes in rows:
            scale = min(min_size / min(item.width, item.height), max_size / max(item.width, item.height))
            tiny += sum(min(s.x1 - s.x0, s.y1 - s.y0) * scale < TINY_BOX for s in shapes if isinstance(s, Box))
        if not tiny:
            return []
        return [f"{tiny} box(es) are under {TINY_BOX} px once images are scaled to --min-size {min_size}: the detector "
                f"will hardly find them; give a larger --min-size (and --set max_size=...)"]

    def _thresholds(self, detector, project) -> dict[str, Any]:
        """Per threshold (all classes, and classes with their own): held-out figures and pre-labels per image."""
        names = {c.index: c.name for c in project.classes}
        images = detector.calibration_images
        return {"thresholds": {("all classes" if k == 0 else names.get(k, str(k))):
                               {**t.to_dict(), "boxes_per_image": round(t.above / images, 2) if images else None}
                               for k, t in getattr(detector, "thresholds_", {}).items()}}

    def _resumable(self, workspace, project, version) -> ModelInfo:
        return resumable(workspace, project, self.name, version, "evaluation")

    def _keep(self, workspace, model: ModelInfo, stopped: str, status: str = "ready") -> ModelInfo | None:
        from labelloop.ml.detection.curves import curves_png

        return end_run(workspace, model, stopped, status, curves_png)

    def _predict_size(self, detector, model: ModelInfo, params: dict[str, Any], ctx) -> None:
        """`--set predict_size=N` at prediction: this run's input size instead of the version's own. The pre-label
        threshold stays the one chosen on held-out images at the version's size, so it is said in the log."""
        if params.get("predict_size") is None:
            return
        stored = detector.prediction_sizes[0]
        detector.predict_size = _number("predict_size", params["predict_size"], int)
        try:
            detector.validate_params()
        except ValueError as exc:
            raise InvalidInput(f"{model.ref}: {exc}") from None
        if detector.predict_size != stored:
            ctx.log(f"predicting at a short side of {detector.predict_size} px ({model.ref} was evaluated and its "
                    f"pre-label threshold chosen at {stored} px)")

    def predict(self, workspace, project, model, item_ids: list[int], params: dict[str, Any], ctx) -> dict[str, Any]:
        from labelloop.ml.detection.detector import BoxDetector
        from labelloop.services.data.project_data import item_rows

        if model.params.get("class_names") != project.class_names():
            raise InvalidInput(f"{model.ref} was trained on classes {', '.join(model.params['class_names'])}, the "
                               f"project now has {', '.join(project.class_names())}; train it again")
        detector = BoxDetector.from_checkpoint(read_checkpoint(workspace, model))
        self._predict_size(detector, model, params, ctx)
        target = float(params.get("target_precision") or project.settings.get("target_precision", 0.95))
        if target != detector.target_precision:
            detector.calibrate(target)  # the project's target now: chosen again on the stored held-out boxes
        names = {c.index: c.name for c in project.classes}
        started, written, prelabels = time.perf_counter(), 0, 0
        rows, n = iter(item_rows(workspace, item_ids)), 0
        while chunk := list(islice(rows, PREDICT_CHUNK)):  # side by side on the free cores (BoxDetector.predict)
            images = [media.read(workspace.blobs.local_path(item.blob_sha256), item.page, name=item.source)
                      for item in chunk]
            for item, found in zip(chunk, detector.predict(images)):
                shapes = []
                for box, label, score in zip(found["boxes"], found["labels"], found["scores"]):
                    threshold = detector.threshold_for(int(label))
                    chosen = threshold is not None and score >= threshold
                    prelabels += int(chosen)
                    shapes.append(Box(names[int(label)], *(round(float(v), 2) for v in box),
                                      score=round(float(score), 4),
                                      attributes={"prelabel": bool(chosen),
                                                  "threshold": round(threshold, 4) if threshold is not None else None}))
                with workspace.session() as session:
                    save_predictions(session, [PredictionRow(
                        item_id=item.id, model_id=model.id, model_version=model.ref,
                        shapes=[shape_to_dict(s) for s in shapes],
                        score=round(float(found["scores"].max()), 4) if len(found["scores"]) else None,
                        review_state="pending")])
                written += 1
                n += 1
                ctx.progress(n, len(item_ids), "detecting")
        seconds = time.perf_counter() - started
        overall = detector.thresholds_.get(0)
        return {"model": model.ref, "predictions": written, "prelabels": prelabels,
                "images_per_second": round(written / seconds, 2) if seconds else None,
                "target_precision": target,
                "summary": (f"{model.ref} found {prelabels} box pre-label(s) on {written} image(s) at target precision "
                            f"{target:g}" + ("" if overall and overall.threshold is not None
                                             else f"; no threshold: {overall.reason if overall else 'no test images'}"
                                             " (every box is kept as a prediction, none shown as a pre-label)"))}
