"""`BoxDetector`: fine-tune a Faster R-CNN on labelled boxes, with the scikit-learn contract (`fit`, `predict`,
`get_params`), checkpoints at every evaluation, and a pre-label threshold calibrated on held-out images."""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from labelloop.ml.allocator import keep_freed_memory
from labelloop.ml.detection.evaluation import BoxThreshold, Detections, choose_threshold, coco_map, scored_boxes
from labelloop.ml.detection.network import build_detector, prediction_size
from labelloop.ml.inference import fold_batch_norms
from labelloop.ml.pretrained import DEFAULT_MODEL
from labelloop.ml.unet.network import scale_image
from labelloop.ml.unet.training import PRECISIONS, autocast_dtype, cpu_threads, default_threads

log = logging.getLogger(__name__)
PER_CLASS_BOXES = 30  # held-out boxes a class needs for a threshold of its own (else the one for all classes)
AUTO_FOLDS = 3  # calibration_folds="auto": this many cross-validation folds ...
AUTO_FOLDS_BELOW = 30  # ... when the held-out images have fewer true boxes than this
# What precision="auto" trains and predicts in. Not the U-Net's rule ("auto": bf16 where the CPU multiplies bf16
# natively): on the AMD EPYC with AVX512-BF16 a bf16 training step took 0.70x the float32 CPU time, but 120 steps
# on two raccoon splits gave 0.052 and 0.017 lower test mAP@0.5:0.95 (docs/benchmarks.md, 2026-12-07); "bf16" asks
# for it.
AUTO_PRECISION = "fp32"


class Stop(Exception):
    """Raised by a progress callback to end training after the current step (the last evaluation is kept)."""


def _tensor(image: np.ndarray) -> torch.Tensor:
    """H×W or H×W×C pixels -> 3×H×W float in [0, 1] (the detector normalises with the backbone's mean/std)."""
    scaled = scale_image(image)
    if scaled.ndim == 2:
        scaled = np.repeat(scaled[:, :, None], 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(scaled.transpose(2, 0, 1), dtype=np.float32))


def _detections_with_features(heads, features, proposals: torch.Tensor, image_size) -> tuple[dict, torch.Tensor]:
    """torchvision's RoIHeads at prediction for one image (box head, predictor, then its postprocess_detections step
    for step), keeping for each detection the box head's output of the proposal it came from: the features its
    class score was read from, at no second pass of the box head."""
    from torchvision.ops import boxes as box_ops

    represented = heads.box_head(heads.box_roi_pool(features, [proposals], [image_size]))
    class_logits, box_regression = heads.box_predictor(represented)
    boxes = box_ops.clip_boxes_to_image(heads.box_coder.decode(box_regression, [proposals]), image_size)
    scores = torch.softmax(class_logits, -1)
    classes = scores.shape[-1]
    labels = torch.arange(classes).view(1, -1).expand_as(scores)
    source = torch.arange(len(scores)).view(-1, 1).expand_as(scores)  # the proposal each (box, class) came from
    boxes, scores = boxes[:, 1:].reshape(-1, 4), scores[:, 1:].reshape(-1)
    labels, source = labels[:, 1:].reshape(-1), source[:, 1:].reshape(-1)
    keep = torch.where(scores > heads.score_thresh)[0]
    keep = keep[box_ops.remove_small_boxes(boxes[keep], min_size=1e-2)]
    keep = keep[box_ops.batched_nms(boxes[keep], scores[keep], labels[keep], heads.nms_thresh)]
    keep = keep[:heads.detections_per_img]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}, represented[source[keep]]


def _numpy(out: dict[str, torch.Tensor]) -> Detections:
    return {"boxes": out["boxes"].float().numpy().astype(float), "labels": out["labels"].numpy().astype(int),
            "scores": out["scores"].float().numpy().astype(float)}


class BoxDetector:
    """Boxes of `n_classes` classes (labels 1..n). Training runs for `epochs` or until `time_budget` seconds,
    whichever ends first; the learning rate warms up over `warmup_steps`, then is multiplied by `gamma` at each of
    `gamma_epochs` (default: at 70 % and 90 % of the run). Every `eval_period` epochs, and at the end, the test
    images are scored (COCO mAP) and `on_checkpoint` is called. Those scores, and every prediction, see the image at
    a short side of `predict_size` (default: `min_size`, the largest of the sizes it trains on). `precision`: "bf16"
    trains and predicts under bfloat16 autocast (faster on CPUs that multiply bf16 natively), "fp32" in float32,
    "auto" as AUTO_PRECISION says (float32, for now)."""

    def __init__(self, n_classes: int, *, backbone: str = DEFAULT_MODEL, weights: str | None = None,
                 pretrained: bool = True, batch_size: int = 4, epochs: int | None = None,
                 time_budget: float | None = None, lr: float = 0.01, gamma: float = 0.1,
                 gamma_epochs: Sequence[int] | None = None, rois_per_image: int = 128, eval_period: int = 2,
                 min_size: int = 416, max_size: int = 704, warmup_steps: int = 50, momentum: float = 0.9,
                 weight_decay: float = 1e-4, flip: bool = True, colour: float = 0.2, seed: int = 0,
                 threads: int | None = None, target_precision: float = 0.95, frozen_norms: bool = True,
                 calibration_folds: int | str = "auto", fold_share: float = 0.5, proposals: int = 100,
                 proposals_before_nms: int = 300, predict_size: int | None = None, precision: str = "auto"):
        self.n_classes, self.backbone, self.weights, self.pretrained = n_classes, backbone, weights, pretrained
        self.batch_size, self.epochs, self.time_budget, self.lr = batch_size, epochs, time_budget, lr
        self.gamma, self.gamma_epochs, self.rois_per_image = gamma, gamma_epochs, rois_per_image
        self.eval_period, self.min_size, self.max_size = eval_period, min_size, max_size
        self.warmup_steps, self.momentum, self.weight_decay = warmup_steps, momentum, weight_decay
        self.flip, self.colour, self.seed, self.threads = flip, colour, seed, threads
        self.target_precision = target_precision
        self.frozen_norms = frozen_norms
        self.calibration_folds, self.fold_share = calibration_folds, fold_share
        self.proposals, self.proposals_before_nms = proposals, proposals_before_nms
        self.predict_size = predict_size
        self.precision = precision

    def get_params(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.endswith("_") and not k.startswith("_")}

    def validate_params(self) -> BoxDetector:
        checks = [(self.n_classes >= 1, "a detector needs at least one class"),
                  (self.batch_size >= 1, f"batch size {self.batch_size} must be at least 1"),
                  (self.epochs is None or self.epochs >= 1, f"epochs {self.epochs} must be at least 1"),
                  (self.time_budget is None or self.time_budget > 0, "the time budget must be more than 0 seconds"),
                  (self.lr > 0, f"learning rate {self.lr} must be more than 0"),
                  (0 < self.gamma <= 1, f"gamma {self.gamma} must lie in (0, 1]"),
                  (self.rois_per_image >= 16, f"RoIs per image {self.rois_per_image} must be at least 16"),
                  (self.eval_period >= 1, f"evaluation period {self.eval_period} must be at least 1 epoch"),
                  (64 <= self.min_size <= self.max_size, f"min size {self.min_size} must lie in [64, max size "
                                                         f"{self.max_size}]"),
                  (0.5 <= self.target_precision < 1, f"target precision {self.target_precision} must lie in [0.5, 1)"),
                  (self.calibration_folds == "auto" or self.calibration_folds in (0, *range(2, 11)),
                   f"calibration folds {self.calibration_folds!r}: give auto, 0 (none) or 2 to 10"),
                  (0 < self.fold_share <= 2, f"fold share {self.fold_share} must lie in (0, 2]"),
                  (self.proposals >= 1, f"proposals {self.proposals} must be at least 1"),
                  (self.proposals_before_nms >= 1, f"proposals before NMS {self.proposals_before_nms} must be at "
                                                   f"least 1"),
                  (self.predict_size is None or 64 <= self.predict_size <= self.max_size,
                   f"predict size {self.predict_size} must lie in [64, max size {self.max_size}]: the short side of "
                   f"the image at prediction, in pixels (default: min size, {self.min_size})")]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} must be one of {', '.join(PRECISIONS)} (auto: "
                             f"{AUTO_PRECISION})")
        return self

    def compute_dtype(self) -> torch.dtype | None:
        """The dtype training and prediction autocast to on this CPU (None: float32), from `precision`."""
        precision = getattr(self, "precision", "fp32")
        return autocast_dtype(torch.device("cpu"), AUTO_PRECISION if precision == "auto" else precision)

    def _autocast(self):
        dtype = self.compute_dtype()
        return torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()

    # --- training ---

    def _network(self) -> torch.nn.Module:
        sizes = tuple(sorted({max(64, int(self.min_size * f) // 32 * 32) for f in (0.75, 0.85, 1.0)} | {self.min_size}))
        return build_detector(self.n_classes, backbone=self.backbone, weights=self.weights, pretrained=self.pretrained,
                              rois_per_image=self.rois_per_image, min_size=sizes, max_size=self.max_size,
                              frozen_norms=getattr(self, "frozen_norms", True), proposals=self.proposals,
                              proposals_before_nms=self.proposals_before_nms)

    def fit(self, images: Sequence[np.ndarray], targets: Sequence[Detections], test_images: Sequence[np.ndarray] = (),
            test_targets: Sequence[Detections] = (), *, start_from: dict[str, Any] | None = None,
            unseen: Sequence[int] | None = None,
            on_progress: Callable[[int, int | None, str], None] | None = None,
            on_checkpoint: Callable[[BoxDetector], None] | None = None) -> BoxDetector:
        """Train on `images` with `targets` ({"boxes": N×4, "labels": N}); `start_from`: a network state to
        fine-tune (a previous version) instead of the ImageNet backbone; `unseen`: the positions in `images` that
        network never trained on (the calibration folds then fine-tune it too, holding those out)."""
        self.validate_params()
        if not len(images):
            raise ValueError("no training images")
        torch.manual_seed(self.seed)
        self.network_ = self._network()
        if start_from is not None:
            self.network_.load_state_dict(start_from)
        self.history_: dict[str, list] = {"epoch": [], "loss": [], "eval_epoch": [], "map50": [], "map": [],
                                          "map75": [], "precision": [], "recall": []}
        self._state = {"epoch": 0, "step": 0, "elapsed": 0.0, "stopped": "", "rng": np.random.default_rng(self.seed)}
        self.optimizer_ = torch.optim.SGD([p for p in self.network_.parameters() if p.requires_grad], lr=self.lr,
                                          momentum=self.momentum, weight_decay=self.weight_decay)
        self._train(images, targets, test_images, test_targets, on_progress, on_checkpoint)
        base = (start_from, sorted(set(int(i) for i in unseen))) if start_from is not None and unseen else None
        self._cross_calibrate(images, targets, test_images, test_targets, on_progress, on_checkpoint, base=base)
        return self

    # --- cross-validated calibration ---

    def folds_for(self, held_out_boxes: int, train_images: int) -> int:
        """How many cross-validation folds calibration adds: `calibration_folds`, or for "auto" AUTO_FOLDS when the
        held-out images hold fewer than AUTO_FOLDS_BELOW true boxes (too few to show a precision near 0.9) and
        there are training images enough for each fold to hold out at least one."""
        if self.calibration_folds != "auto":
            return int(self.calibration_folds) if train_images >= int(self.calibration_folds) else 0
        return AUTO_FOLDS if held_out_boxes < AUTO_FOLDS_BELOW and train_images >= 2 * AUTO_FOLDS else 0

    def _cross_calibrate(self, images, targets, test_images, test_targets, on_progress, on_checkpoint,
                         base: tuple[dict[str, Any], list[int]] | None = None) -> None:
        """More held-out evidence for the threshold when the held-out images are few: K fold models, each started
        like the main network and trained on the held-out images plus the training images less one fold, for
        `fold_share` of the main run's steps, predict their fold. The threshold is then chosen on the main network's
        held-out predictions pooled with these out-of-fold ones (the final network itself is not changed: as
        scikit-learn's CalibratedClassifierCV(ensemble=False)). Stopped during the folds: the held-out threshold stays.

        Fine-tuning (`base` = the start network's state and the training positions it never saw): one fold, the
        unseen images, held out of a copy fine-tuned from the same start on everything else. A fold started from
        ImageNet for a share of one round's steps is far weaker than a network fine-tuned over many rounds (raccoon:
        no threshold certified below 30 held-out boxes), and a fold started from the base network may not hold out
        images the base trained on (it has learnt them): the images new since the base are the one fold it can
        honestly predict."""
        state = self._state
        held_boxes = sum(len(np.asarray(t["labels"]).reshape(-1)) for t in test_targets)
        folds = self.folds_for(held_boxes, len(images))
        if not folds or state["stopped"] == "stopped" or getattr(self, "cv_", None) is not None:
            return
        steps = max(1, round(self.fold_share * state["step"]))
        if base is not None and len(base[1]) < len(images):
            parts, folds, start = [np.asarray(base[1])], 1, base[0]
        else:
            parts, start = np.array_split(np.random.default_rng(self.seed + 1).permutation(len(images)), folds), None
        per_epoch = [-(-(len(images) - len(part) + len(test_images)) // self.batch_size) for part in parts]
        epochs = [-(-steps // n) for n in per_epoch]  # whole epochs: at least `steps` steps
        total = sum(e * n for e, n in zip(epochs, per_epoch))
        preds, truths, order, drawn, done = [], [], [], [], 0
        for k, part in enumerate(parts):
            inside = set(part.tolist())
            keep = [i for i in range(len(images)) if i not in inside]
            fold_images = [images[i] for i in keep] + list(test_images)
            fold_targets = [targets[i] for i in keep] + list(test_targets)
            model = BoxDetector(**{**self.get_params(), "epochs": epochs[k], "time_budget": None,
                                   "gamma_epochs": None, "eval_period": epochs[k], "calibration_folds": 0,
                                   "seed": self.seed + 10 + k, "pretrained": start is None})

            def report(step, _, message, k=k):
                if on_progress:
                    on_progress(done + step, total, f"calibration fold {k + 1} of {folds}: {message}")

            model.fit(fold_images, fold_targets, start_from=start, on_progress=report)
            if model._state["stopped"] == "stopped":
                state["stopped"] = "stopped"
                log.info("stopped during the calibration folds: the threshold stays the held-out images' one")
                return
            done += model._state["step"]
            found, read = model._predict_and_read_drawn([images[i] for i in part], [targets[i] for i in part])
            preds.extend(found)
            drawn.extend(read)
            order.extend(int(i) for i in part)
            truths.extend({"boxes": np.asarray(targets[i]["boxes"], float).reshape(-1, 4),
                           "labels": np.asarray(targets[i]["labels"], int)} for i in part)
        self.cv_ = (preds, truths, {"folds": folds, "steps": steps, "images": len(images), "order": order,
                                    "from_base": start is not None, "drawn": drawn})
        self.calibrate(self.target_precision)
        if on_checkpoint:
            on_checkpoint(self)

    def _milestones(self) -> list[float]:
        """Where the learning rate drops, as a share of the run (epochs when given, else the time budget)."""
        if self.gamma_epochs and self.epochs:
            return sorted(e / self.epochs for e in self.gamma_epochs)
        if self.gamma_epochs:
            log.warning("gamma epochs without --epochs: the learning rate drops at 70%% and 90%% of the time budget")
        return [0.7, 0.9]

    def _progress(self, epoch_share: float) -> float:
        """How far the run is, 0..1: the larger of its share of the epochs and of the time budget."""
        by_epochs = epoch_share / self.epochs if self.epochs else 0.0
        by_time = self._state["elapsed"] / self.time_budget if self.time_budget else 0.0
        return max(by_epochs, by_time)

    def _train(self, images, targets, test_images, test_targets, on_progress, on_checkpoint) -> None:
        state = self._state
        tensors = [_tensor(image) for image in images]
        boxes = [torch.as_tensor(np.asarray(t["boxes"], np.float32).reshape(-1, 4)) for t in targets]
        labels = [torch.as_tensor(np.asarray(t["labels"], np.int64)) for t in targets]
        total_epochs = self.epochs or 10_000
        milestones = self._milestones()
        steps_per_epoch = -(-len(tensors) // self.batch_size)
        device = torch.device("cpu")
        log.info("detector training in %s", "bf16 autocast" if self.compute_dtype() == torch.bfloat16 else "float32")
        with cpu_threads(device, self.threads):
            while state["epoch"] < total_epochs and not state["stopped"]:
                self.network_.train()
                order = state["rng"].permutation(len(tensors))
                losses = []
                for start in range(0, len(order), self.batch_size):
                    began = time.perf_counter()
                    share = self._progress(state["epoch"] + start / len(order))
                    rate = self.lr * self.gamma ** sum(share >= m for m in milestones)
                    rate *= min(1.0, (state["step"] + 1) / max(1, self.warmup_steps))
                    for group in self.optimizer_.param_groups:
                        group["lr"] = rate
                    batch = [self._augment(tensors[i], boxes[i], labels[i], state["rng"])
                             for i in order[start:start + self.batch_size]]
                    with self._autocast():
                        parts = self.network_([b[0] for b in batch], [b[1] for b in batch])
                    loss = sum(part.float() for part in parts.values())
                    self.optimizer_.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(self.network_.parameters(), 10.0)
                    self.optimizer_.step()
                    losses.append(float(loss.detach()))
                    state["step"] += 1
                    state["elapsed"] += time.perf_counter() - began
                    if on_progress:
                        try:
                            on_progress(state["epoch"] * steps_per_epoch + start // self.batch_size + 1,
                                        steps_per_epoch * self.epochs if self.epochs else None,
                                        f"epoch {state['epoch'] + 1}, loss {np.mean(losses):.3f}")
                        except Stop:
                            state["stopped"] = "stopped"
                            break
                    if self.time_budget and state["elapsed"] >= self.time_budget:
                        state["stopped"] = "time budget"
                        break
                state["epoch"] += 1
                self.history_["epoch"].append(state["epoch"])
                self.history_["loss"].append(round(float(np.mean(losses)) if losses else float("nan"), 4))
                last = state["stopped"] or state["epoch"] >= total_epochs
                if last or state["epoch"] % self.eval_period == 0:
                    self._evaluate(test_images, test_targets)
                    if on_checkpoint:
                        on_checkpoint(self)
            if not state["stopped"]:
                state["stopped"] = "epochs"

    def _augment(self, image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, rng) -> tuple:
        """A horizontal flip (boxes flipped with it) and a brightness/contrast change; the network's transform
        adds scale jitter (a random short side among ~75 %, 85 % and 100 % of min_size)."""
        if self.flip and rng.random() < 0.5:
            image = image.flip(-1)
            width = image.shape[-1]
            boxes = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1) \
                if len(boxes) else boxes
        if self.colour:
            gain = 1 + rng.uniform(-self.colour, self.colour)
            shift = rng.uniform(-self.colour, self.colour) / 2
            mean = image.mean()
            image = ((image - mean) * gain + mean + shift).clamp(0, 1)
        return image, {"boxes": boxes, "labels": labels}

    # --- evaluation and calibration ---

    def _evaluate(self, test_images, test_targets) -> None:
        if not len(test_images):
            return
        preds, self.held_out_drawn_ = self._predict_and_read_drawn(test_images, test_targets)
        self.held_out_ = (preds, [{"boxes": np.asarray(t["boxes"], float).reshape(-1, 4),
                                   "labels": np.asarray(t["labels"], int)} for t in test_targets])
        figures = coco_map(preds, self.held_out_[1], self.n_classes)
        self.calibrate(self.target_precision)
        overall = self.thresholds_.get(0)
        self.history_["eval_epoch"].append(self._state["epoch"])
        for key in ("map50", "map", "map75"):
            self.history_[key].append(figures[key])
        self.history_["precision"].append(overall.precision if overall else None)
        self.history_["recall"].append(overall.recall if overall else None)

    def _predict_and_read_drawn(self, images, targets) -> tuple[list[Detections], list[np.ndarray]]:
        """(the detections of `images`, and per image what the box classifier makes of each labelled box as drawn:
        M×(n+1) chances, background first), in one pass of the network per image."""
        found = self.predict_with_features(images, given=[np.asarray(t["boxes"], float).reshape(-1, 4)
                                                          for t in targets])
        return ([{k: f[k] for k in ("boxes", "labels", "scores")} for f in found],
                [f["given_proba"] for f in found])

    def calibrate(self, target_precision: float) -> dict[int, BoxThreshold]:
        """Thresholds from the held-out predictions of the last evaluation (with the out-of-fold ones of the
        calibration folds, when they ran): one for all classes (key 0), and one per class that has ≥
        PER_CLASS_BOXES held-out boxes; no refit."""
        self.target_precision = target_precision
        preds, truths = getattr(self, "held_out_", ([], []))
        if getattr(self, "cv_", None) is not None:
            preds, truths = list(preds) + list(self.cv_[0]), list(truths) + list(self.cv_[1])
        scores, correct, classes = scored_boxes(preds, truths, 0.5)
        truth_labels = np.concatenate([np.asarray(t["labels"], int) for t in truths]) if truths else np.zeros(0, int)
        thresholds = {0: choose_threshold(scores, correct, len(truth_labels), target_precision)}
        for k in range(1, self.n_classes + 1):
            mine = classes == k
            if mine.sum() >= PER_CLASS_BOXES:
                found = choose_threshold(scores[mine], correct[mine], int((truth_labels == k).sum()),
                                         target_precision, name=str(k), min_boxes=PER_CLASS_BOXES)
                if found.threshold is not None:
                    thresholds[k] = found
        self.thresholds_ = thresholds
        return thresholds

    def threshold_for(self, label: int) -> float | None:
        chosen = self.thresholds_.get(label) or self.thresholds_.get(0)
        return chosen.threshold if chosen else None

    # --- prediction ---

    @property
    def prediction_sizes(self) -> tuple[int, int]:
        """(short side, long side cap) of the input at prediction: `predict_size`, or `min_size` when not given;
        the cap shrinks with it (max_size × predict_size / min_size), so wide images scale like the others."""
        short = getattr(self, "predict_size", None) or self.min_size
        return short, max(short, round(self.max_size * short / self.min_size))

    def predict(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Every box the network keeps (score ≥ 0.05), with its class (1..n) and score. With T threads (`threads`,
        or the free cores) and several images, T images run at once, one torch thread each: on 2 cores, 8 raccoon
        photos took 0.67× the CPU time and 0.89× the wall time of one image at a time on 2 threads, with the same
        boxes (a 416 px Faster R-CNN is too small a job to split well across threads;
        benchmarks/detector_inference.py)."""
        def one(network: torch.nn.Module, image: np.ndarray, _) -> Detections:
            return _numpy(network([_tensor(image)])[0])

        return self._each_image(one, images, [None] * len(images))

    def predict_with_features(self, images: Sequence[np.ndarray],
                              given: Sequence[np.ndarray] | None = None) -> list[dict[str, np.ndarray]]:
        """As `predict`, with what the box predictor read for each kept box (`features`, N×F: the box head's output
        at the proposal the box came from) and, for `given` boxes (per image M×4, in the image's pixels), the same at
        those boxes (`given_features`, M×F): what the class heads of a shared detector learn from and score
        (ml.micro_boxes.SharedBoxHead), and what the box classifier makes of each given box as drawn
        (`given_proba`, M×(n+1): background, then the classes; the box label-error check reads it). One pass of the
        network per image, as `predict`."""

        def one(network: torch.nn.Module, image: np.ndarray, extra: np.ndarray | None) -> dict[str, np.ndarray]:
            tensor = _tensor(image)
            original = [tuple(tensor.shape[-2:])]
            batch, _ = network.transform([tensor])
            features = network.backbone(batch.tensors)
            proposals, _ = network.rpn(batch, features)
            found, represented = _detections_with_features(network.roi_heads, features, proposals[0],
                                                           batch.image_sizes[0])
            (h, w), (height, width) = batch.image_sizes[0], original[0]
            extra = torch.as_tensor(np.asarray(extra if extra is not None else [], np.float32).reshape(-1, 4))
            extra = extra.to(proposals[0].dtype) * torch.tensor([w / width, h / height, w / width, h / height],
                                                                dtype=proposals[0].dtype)
            given = network.roi_heads.box_head(network.roi_heads.box_roi_pool(features, [extra], batch.image_sizes))
            given_logits, _ = network.roi_heads.box_predictor(given)
            out = _numpy(network.transform.postprocess([found], batch.image_sizes, original)[0])
            return {**out, "features": represented.float().numpy().astype(np.float32),
                    "given_features": given.float().numpy().astype(np.float32),
                    "given_proba": torch.softmax(given_logits.float(), 1).numpy().astype(float)}

        return self._each_image(one, images, list(given) if given is not None else [None] * len(images))

    def _each_image(self, one: Callable, images: Sequence[np.ndarray], extras: list) -> list:
        """`one(network, image, extra)` on every image under the prediction settings. With T threads (`threads`,
        or the free cores) and several images, T images run at once, one torch thread each (see `predict`)."""
        network = self._inference_network()
        threads = max(1, self.threads or default_threads(wait=False))  # never waits for a fresh count
        workers = min(threads, len(images))

        def run(image: np.ndarray, extra) -> Any:
            if workers > 1:
                torch.set_num_threads(1)  # this worker thread's own setting (OpenMP keeps one per thread)
            with torch.inference_mode(), self._autocast():  # thread-local, as is grad mode: entered in the worker
                return one(network, image, extra)

        with cpu_threads(torch.device("cpu"), 1 if workers > 1 else threads), \
                prediction_size(network, *self.prediction_sizes):
            if workers <= 1:
                return [run(image, extra) for image, extra in zip(images, extras)]
            with ThreadPoolExecutor(workers, thread_name_prefix="detector") as pool:
                return list(pool.map(run, images, extras))

    def _inference_network(self) -> torch.nn.Module:
        """The network to predict with: a copy with the backbone's batch norms folded into its convolutions (0.8-0.9x
        the time on the benchmark CPU, boxes within 1e-4 px), made again whenever a weight has changed since
        (training steps and loading weights bump each tensor's version counter). The first prediction also lets the
        process keep freed memory for reuse (`keep_freed_memory`)."""
        keep_freed_memory()
        network = self.network_
        key = (id(network), sum(t._version for t in (*network.parameters(), *network.buffers())))
        cached = getattr(self, "_inference", None)
        if cached is None or cached[0] != key:
            network.eval()
            body, folded = fold_batch_norms(network.backbone.body)  # a folded copy of the body, or the body itself
            # the rest copied around the folded body (deepcopy's memo stands it in for the original)
            copied = copy.deepcopy(network, memo={id(network.backbone.body): body}) if folded else network
            cached = self._inference = (key, copied)
        return cached[1]

    # --- checkpoints ---

    @property
    def summary_(self) -> dict[str, Any]:
        h, state = self.history_, self._state
        last = {k: h[k][-1] for k in ("map50", "map", "map75", "precision", "recall") if h[k]}
        overall = getattr(self, "thresholds_", {}).get(0)
        return {"epochs": state["epoch"], "steps": state["step"], "training_seconds": round(state["elapsed"], 1),
                "stopped": state["stopped"] or "running", **last,
                "threshold": round(overall.threshold, 4) if overall and overall.threshold is not None else None,
                "calibrated_on": self.calibration_evidence}

    @property
    def calibration_evidence(self) -> str:
        """Where the thresholds come from, in words: "10 held-out images + 40 out-of-fold (3 folds)"."""
        held = len(getattr(self, "held_out_", ([], []))[0])
        cv = getattr(self, "cv_", None)
        if cv and cv[2].get("from_base"):
            return f"{held} held-out images + {len(cv[0])} new since the base version (a fold fine-tuned without them)"
        return f"{held} held-out images" + (f" + {len(cv[0])} out-of-fold ({cv[2]['folds']} folds)" if cv else "")

    @property
    def calibration_images(self) -> int:
        cv = getattr(self, "cv_", None)
        return len(getattr(self, "held_out_", ([], []))[0]) + (len(cv[0]) if cv else 0)

    def checkpoint(self) -> bytes:
        buffer = io.BytesIO()
        torch.save({"params": self.get_params(), "network": self.network_.state_dict(),
                    "optimizer": self.optimizer_.state_dict(), "history": self.history_,
                    "state": {k: v for k, v in self._state.items() if k != "rng"},
                    "rng": self._state["rng"].bit_generator.state, "held_out": getattr(self, "held_out_", None),
                    "held_out_drawn": getattr(self, "held_out_drawn_", None), "cv": getattr(self, "cv_", None)},
                   buffer)
        return buffer.getvalue()

    @classmethod
    def from_checkpoint(cls, data: bytes) -> BoxDetector:
        saved = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
        # a version saved before `precision` existed trained and predicted in float32: it keeps doing so
        detector = cls(**{"precision": "fp32", **saved["params"], "pretrained": False})
        detector.network_ = detector._network()
        detector.network_.load_state_dict(saved["network"])
        detector.optimizer_ = torch.optim.SGD([p for p in detector.network_.parameters() if p.requires_grad],
                                              lr=detector.lr, momentum=detector.momentum,
                                              weight_decay=detector.weight_decay)
        detector.optimizer_.load_state_dict(saved["optimizer"])
        detector.history_ = saved["history"]
        rng = np.random.default_rng()
        rng.bit_generator.state = saved["rng"]
        detector._state = {**saved["state"], "rng": rng}
        detector.cv_ = saved.get("cv")
        detector.held_out_drawn_ = saved.get("held_out_drawn")  # None in versions saved before it existed
        if saved["held_out"] is not None or detector.cv_ is not None:
            if saved["held_out"] is not None:
                detector.held_out_ = saved["held_out"]
            detector.calibrate(detector.target_precision)
        else:
            detector.thresholds_ = {}
        return detector

    def resume(self, images, targets, test_images=(), test_targets=(), *, epochs: int | None = None,
               time_budget: float | None = None, on_progress=None, on_checkpoint=None) -> BoxDetector:
        """Continue a checkpointed run where it stopped, to `epochs` in all or for `time_budget` more seconds."""
        if epochs is not None:
            if epochs <= self._state["epoch"]:
                raise ValueError(f"the run already trained {self._state['epoch']} epochs; ask for more")
            self.epochs = epochs
        if time_budget is not None:
            self.time_budget = self._state["elapsed"] + time_budget
        self._state["stopped"] = ""
        self._train(images, targets, test_images, test_targets, on_progress, on_checkpoint)
        self._cross_calibrate(images, targets, test_images, test_targets, on_progress, on_checkpoint)
        return self
