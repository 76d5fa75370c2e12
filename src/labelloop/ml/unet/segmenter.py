"""UNetSegmenter: a U-Net with an ImageNet-pretrained encoder behind the scikit-learn contract.

`fit(images, masks)` trains on whole images (class index masks, 0 = background), `predict_proba(image)` gives
H×W×C probabilities for an image of any size, `checkpoint()` / `from_checkpoint()` carry everything needed to
predict or to `resume()` an interrupted run exactly where its last evaluation left it."""

from __future__ import annotations

import copy
import inspect
import io
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labelloop.ml.dataset_generator import AugmentSpec
from labelloop.ml.inference import fold_batch_norms
from labelloop.ml.unet import search
from labelloop.ml.unet.inference import VIEWS
from labelloop.ml.unet.losses import SegmentationLoss, parse_loss, scores
from labelloop.ml.unet.network import (DEFAULT_DECODER_CHANNELS, DEFAULT_ENCODER, InputNormaliser, build_network,
                                       scale_image)
from labelloop.ml.unet.sampling import TRAINING_AUGMENT, PatchSampler
from labelloop.ml.unet.training import (PRECISIONS, Trainer, autocast_dtype, averaged_weights, cpu_threads,
                                        image_logits, one_cycle, outside, pick_device, split_items, split_regions)

log = logging.getLogger(__name__)
FORMAT = "labelloop-unet/1"
DEFAULT_EPOCHS = 40
Progress = Callable[[int, int | None, str], None]  # (done, total, message); may raise to stop (cancel)
METRICS = ("loss", "accuracy", "iou")
VAL_SPLITS = ("auto", "items", "regions")
# `val_split="auto"`: below this many images, validate on a held-out band of every image rather than on whole held-out
# images. Holding 2 of 12 Lucchi slices out cost 0.008 test IoU against training on all 12 (docs/benchmarks.md).
REGION_SPLIT_BELOW = 20


@dataclass
class RunState:
    """Where a training run stands after an evaluation: what a checkpoint needs to resume it exactly."""

    lr: float
    batch_size: int
    steps_per_epoch: int
    train_items: list[int]
    val_items: list[int]
    rng: dict[str, Any]
    step: int = 0
    epoch: int = 0
    elapsed: float = 0.0
    schedule_start: float = 0.0  # seconds into the run when training proper began (after a search)
    best_iou: float = -1.0
    best_epoch: int = 0
    since_best: int = 0
    stopped: str = ""
    search: dict[str, Any] = field(default_factory=dict)
    val_regions: list[list[int]] = field(default_factory=list)  # per image [y0, y1, x0, x1]: its validation band
    joined_epoch: int = 0  # the epoch in which the bands joined training (the final fit); 0: not (yet)
    skipped: float = 0.0  # share of the schedule passed over when early stopping moved the final fit forward
    history: dict[str, list] = field(default_factory=lambda: {"epoch": [], "lr": [], "seconds": [],
                                                              **{f"{s}_{m}": [] for s in ("train", "val")
                                                                 for m in METRICS}})


SEARCH_VAL_PIXELS = 1 << 20  # what each search trial is ranked on: 12 trials must fit in the search's time share
SEARCH_VAL_CROP = 512


def search_subset(images: list[np.ndarray], masks: list[np.ndarray], pixels: int = SEARCH_VAL_PIXELS,
                  crop: int = SEARCH_VAL_CROP) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Centre crops (at most `crop` px a side) of validation images spread evenly over the list, about `pixels` in
    all: a search trial's validation pass. Measured on 12 Lucchi slices (1 thread, float32), validating each trial on
    every whole image took 40 s and pushed a 135 s search to 334 s."""
    per_image = [min(crop, image.shape[0]) * min(crop, image.shape[1]) for image in images]
    count = len(images)
    while count > 1 and sum(sorted(per_image)[:count]) > pixels:
        count -= 1
    chosen = sorted({round(i * (len(images) - 1) / max(count - 1, 1)) for i in range(count)})
    crops, crop_masks = [], []
    for i in chosen:
        height, width = images[i].shape[:2]
        top, left = max(0, (height - crop) // 2), max(0, (width - crop) // 2)
        crops.append(images[i][top:top + crop, left:left + crop])
        crop_masks.append(masks[i][top:top + crop, left:left + crop])
    return crops, crop_masks


class UNetSegmenter:
    """Semantic segmentation by a U-Net (segmentation-models-pytorch) over a timm encoder.

    lr / batch_size: a number, or "auto" for a search (LR range test + successive halving on validation IoU).
    epochs / time_budget (seconds): stop after whichever comes first (default: DEFAULT_EPOCHS epochs).
    An epoch is `steps_per_epoch` batches (default: enough patches to cover the training images twice), then an
    evaluation on the validation items, a checkpoint and the early-stopping check (`patience` epochs without a
    better validation IoU; with validation bands and a final fit, early stopping moves the final fit forward — it
    starts at once from the best weights and runs its own share of the schedule — instead of ending the run, so the
    bands are always trained on).
    val_fraction / val_split: the share held out for validation and the choice of the best epoch, as whole images
    ("items") or as a band of that share cut from an edge of every image ("regions"); "auto" cuts bands below
    REGION_SPLIT_BELOW images, so that with few images every one of them still trains.
    final_fit: with validation bands, the last share of the schedule trains on whole images (bands included) and
    the network predicts with the weights it ends with; the curves mark where the bands stopped being held out and
    the best epoch is chosen before that point only. 0: the bands stay out to the end.
    ema_decay: 0 (off) or e.g. 0.999: an exponential moving average of the weights follows every step; validation,
    the best epoch and prediction use it (the curves' training line stays the optimiser's own weights), and a
    checkpoint keeps both so `resume()` continues exactly."""

    def __init__(self, encoder: str = DEFAULT_ENCODER, *, weights: str | Path | None = None, pretrained: bool = True,
                 decoder_channels: tuple[int, ...] = DEFAULT_DECODER_CHANNELS, n_classes: int | None = None,
                 patch: int = 256, batch_size: int | str = 8, lr: float | str = 1e-3, weight_decay: float = 1e-4,
                 epochs: int | None = None, time_budget: float | None = None, steps_per_epoch: int | None = None,
                 loss: str = "focal+dice", focal_weight: float = 1.0, dice_weight: float = 1.0,
                 foreground_bias: float = 0.5, augment: AugmentSpec | None = TRAINING_AUGMENT,
                 val_fraction: float = 0.2, val_split: str = "auto", final_fit: float = 0.25, patience: int = 8,
                 restore_best: bool = True, seed: int = 0,
                 device: str | None = None, threads: int | None = None, max_tile: int = 1024, overlap: int = 64,
                 tta: int = 4, search_fraction: float = 0.15, search_patches: int | None = None,
                 range_test_steps: int = 30, precision: str = "auto", ema_decay: float = 0.0):
        self.encoder, self.weights, self.pretrained = encoder, weights, pretrained
        self.decoder_channels, self.n_classes, self.patch = tuple(decoder_channels), n_classes, patch
        self.batch_size, self.lr, self.weight_decay = batch_size, lr, weight_decay
        self.epochs, self.time_budget, self.steps_per_epoch = epochs, time_budget, steps_per_epoch
        self.loss, self.focal_weight, self.dice_weight = loss, focal_weight, dice_weight
        self.foreground_bias, self.augment, self.val_fraction = foreground_bias, augment, val_fraction
        self.val_split, self.final_fit = val_split, final_fit
        self.patience, self.restore_best, self.seed = patience, restore_best, seed
        self.device, self.threads, self.max_tile, self.overlap, self.tta = device, threads, max_tile, overlap, tta
        self.search_fraction, self.search_patches = search_fraction, search_patches
        self.range_test_steps, self.precision, self.ema_decay = range_test_steps, precision, ema_decay

    def get_params(self) -> dict[str, Any]:
        """The constructor's arguments, JSON-friendly (the augmentation spec as a dict)."""
        params = {name: getattr(self, name) for name in _PARAMS}
        params["augment"] = asdict(self.augment) if self.augment is not None else None
        params["decoder_channels"] = list(self.decoder_channels)
        params["weights"] = str(self.weights) if self.weights is not None else None
        return params

    # -- training ---------------------------------------------------------------------------------------------

    def fit(self, images: list[np.ndarray], masks: list[np.ndarray], *, on_progress: Progress | None = None,
            on_checkpoint: Callable[[UNetSegmenter], None] | None = None) -> UNetSegmenter:
        """Train from the pretrained encoder; `on_checkpoint(self)` after every evaluation (call `checkpoint()`)."""
        self.validate_params()
        masks = self._check_data(images, masks)
        self.n_classes_ = self.n_classes or max(2, max(int(m.max()) for m in masks) + 1)
        self.n_outputs_ = 1 if self.n_classes_ == 2 else self.n_classes_
        torch.manual_seed(self.seed)
        self.network_, self.skipped_keys_ = build_network(self.encoder, self.n_outputs_, weights=self.weights,
                                                          decoder_channels=self.decoder_channels,
                                                          pretrained=self.pretrained)
        self._initial_state = copy.deepcopy(self.network_.state_dict())
        self._last_state = self._best_state = self._optimizer_state = self._evaluated = self._average_state = None
        train_items, val_items, regions = self._split(masks)
        pixels = sum(masks[i].size for i in train_items) if not regions else \
            sum(outside(mask, region).size for mask, region in zip(masks, regions))
        batch_guess = self.batch_size if isinstance(self.batch_size, int) else 8
        steps = self.steps_per_epoch or max(8, math.ceil(2 * pixels / self.patch**2 / batch_guess))
        rng = np.random.default_rng(self.seed)
        self._state = RunState(lr=float(self.lr) if self.lr != "auto" else 0.0,
                               batch_size=batch_guess, steps_per_epoch=steps, train_items=train_items,
                               val_items=val_items, rng=rng.bit_generator.state,
                               val_regions=[list(region) for region in regions])
        return self._run(images, masks, on_progress, on_checkpoint)

    def _split(self, masks: list[np.ndarray]) -> tuple[list[int], list[int], list[tuple[int, int, int, int]]]:
        """(training items, validation items, validation bands): bands of every image when val_split asks for
        regions (or "auto" with fewer than REGION_SPLIT_BELOW images) and every image can spare one; else whole
        held-out items."""
        regions = None
        if self.val_split == "regions" or (self.val_split == "auto" and len(masks) < REGION_SPLIT_BELOW):
            regions = split_regions([mask.shape[:2] for mask in masks], self.val_fraction, self.seed, self.patch)
            if regions is None and self.val_fraction > 0:
                log.info("an image is too small to spare a validation band beside a %d px patch: validating on "
                         "held-out images", self.patch)
        if regions:
            return list(range(len(masks))), [], regions
        train_items, val_items = split_items(len(masks), self.val_fraction, self.seed)
        return train_items, val_items, []

    def plan_resume(self, *, epochs: int | None = None, time_budget: float | None = None) -> UNetSegmenter:
        """Set the resumed run's totals (epochs / seconds from the run's start); ValueError when nothing is left."""
        if not hasattr(self, "_state"):
            raise ValueError("resume() needs a segmenter loaded with from_checkpoint() or fitted before")
        if epochs is not None:
            self.epochs = epochs
        if time_budget is not None:
            self.time_budget = time_budget
        self.validate_params()
        state = self._state
        total_steps = self._planned_steps()
        if (total_steps and state.step >= total_steps) or (self.time_budget and state.elapsed >= self.time_budget) \
                or (state.skipped and self._progress(total_steps, state.elapsed) >= 1.0):
            raise ValueError(f"the run already trained {state.epoch} epochs ({state.step} steps, "
                             f"{state.elapsed:.0f} s): ask for more epochs or a longer time budget to resume it")
        return self

    def resume(self, images: list[np.ndarray], masks: list[np.ndarray], *, epochs: int | None = None,
               time_budget: float | None = None, on_progress: Progress | None = None,
               on_checkpoint: Callable[[UNetSegmenter], None] | None = None) -> UNetSegmenter:
        """Continue the run of a checkpoint on the same images (same order) up to its planned end, or up to the
        new totals `epochs` / `time_budget` (counted from the run's start); the schedule stretches to the end."""
        self.plan_resume(epochs=epochs, time_budget=time_budget)
        state = self._state
        if state.stopped == "early stopping":  # asked to go on after it stopped: a fresh patience
            state.since_best = 0
        state.stopped = ""
        masks = self._check_data(images, masks)
        return self._run(images, masks, on_progress, on_checkpoint)

    def _run(self, images, masks, on_progress, on_checkpoint) -> UNetSegmenter:
        state, started = self._state, time.perf_counter() - self._state.elapsed
        device = pick_device(self.device)
        scaled = [scale_image(image) for image in images]
        if state.val_regions:  # every image trains outside its band and is validated inside it
            train = ([outside(scaled[i], r) for i, r in enumerate(state.val_regions)],
                     [outside(masks[i], r) for i, r in enumerate(state.val_regions)])
            val = ([scaled[i][y0:y1, x0:x1] for i, (y0, y1, x0, x1) in enumerate(state.val_regions)],
                   [masks[i][y0:y1, x0:x1] for i, (y0, y1, x0, x1) in enumerate(state.val_regions)])
        else:
            train = ([scaled[i] for i in state.train_items], [masks[i] for i in state.train_items])
            held = state.val_items or state.train_items  # one item: validate on what it trained on
            val = ([scaled[i] for i in held], [masks[i] for i in held])
        sampler = PatchSampler(*train, self.patch, foreground_bias=self.foreground_bias, augment=self.augment)
        whole = PatchSampler(scaled, masks, self.patch, foreground_bias=self.foreground_bias,
                             augment=self.augment) if state.val_regions and self.final_fit else None
        if state.joined_epoch:  # resuming inside the final fit
            sampler = whole
        rng = np.random.default_rng()
        rng.bit_generator.state = state.rng
        report = on_progress or (lambda done, total, message: None)
        with cpu_threads(device, self.threads):
            dtype = autocast_dtype(device, self.precision)
            self.device_ = (f"cpu, {torch.get_num_threads()} threads" if device.type == "cpu" else str(device)) + \
                (", bf16 autocast" if dtype == torch.bfloat16 else ", float32")
            if state.step == 0 and not state.search and (self.lr == "auto" or self.batch_size == "auto"):
                self._search(device, sampler, val, rng, report)
                state.schedule_start = time.perf_counter() - started
            if self._last_state is not None:  # resuming: continue from the last evaluated weights
                self.network_.load_state_dict(self._last_state)
            trainer = self._trainer(device, average=True)
            if self._optimizer_state is not None:
                trainer.optimizer.load_state_dict(self._optimizer_state)
            if self._average_state is not None and trainer.average is not None:
                trainer.average.load_state_dict(self._average_state)
            try:
                self._epochs(trainer, sampler, val, rng, report, on_checkpoint, started, whole)
            finally:
                self._finish(trainer)
        return self

    def _trainer(self, device: torch.device, *, average: bool = False) -> Trainer:
        """A trainer over `network_`; `average`: with the run's moving average of weights (not for search trials,
        whose few steps would be judged on a lagging average)."""
        loss = SegmentationLoss(self.n_outputs_, parse_loss(self.loss), focal_weight=self.focal_weight,
                                dice_weight=self.dice_weight)
        return Trainer(self.network_, loss, InputNormaliser(self.encoder), self.n_classes_, device,
                       weight_decay=self.weight_decay, autocast=autocast_dtype(device, self.precision),
                       ema_decay=self.ema_decay if average else 0.0)

    def _search(self, device: torch.device, sampler: PatchSampler, val, rng, report: Progress) -> None:
        """Choose lr and/or batch size by short trials from the pretrained weights; the run starts afresh after."""
        state = self._state
        lr = None if self.lr == "auto" else float(self.lr)
        batch = None if self.batch_size == "auto" else int(self.batch_size)
        trial_val = search_subset(*val)
        evaluate = lambda t: t.evaluate(*trial_val, max_tile=self.max_tile, overlap=self.overlap)  # noqa: E731

        def fresh() -> Trainer:
            self.network_.load_state_dict(self._initial_state)
            return self._trainer(device)

        def step(message: str) -> None:
            report(0, None, message)

        seconds = self.search_fraction * self.time_budget if self.time_budget else None
        record = search.choose(fresh, evaluate, sampler, rng, lr, batch, seconds=seconds, patches=self.search_patches,
                               range_test_steps=self.range_test_steps, on_step=step)
        state.lr, state.batch_size = record["chosen"]["lr"], record["chosen"]["batch_size"]
        state.search = record
        if not self.steps_per_epoch and self.batch_size == "auto":  # an epoch's patches stay as planned for 8
            state.steps_per_epoch = max(8, math.ceil(state.steps_per_epoch * 8 / state.batch_size))
        self.network_.load_state_dict(self._initial_state)
        log.info("search chose lr %.2e, batch size %d in %.0f s", state.lr, state.batch_size, record["seconds"])

    def _planned_steps(self) -> int | None:
        epochs = self.epochs if self.epochs is not None else (None if self.time_budget else DEFAULT_EPOCHS)
        return epochs * self._state.steps_per_epoch if epochs is not None else None

    def _epochs(self, trainer: Trainer, sampler, val, rng, report: Progress, on_checkpoint, started: float,
                whole: PatchSampler | None = None) -> None:
        """Epochs until the schedule ends or early stopping; `whole`: the sampler over whole images that takes over
        for the final fit (validation bands joining training)."""
        state = self._state
        total_steps = self._planned_steps()
        while not state.stopped:
            matrix = np.zeros((self.n_classes_, self.n_classes_), np.int64)
            losses = []
            out_of_time = False
            for _ in range(state.steps_per_epoch):
                elapsed = time.perf_counter() - started
                progress = self._progress(total_steps, elapsed)
                if progress >= 1.0:
                    out_of_time = True
                    break
                if whole is not None and not state.joined_epoch and progress >= 1.0 - self.final_fit:
                    state.joined_epoch, sampler = state.epoch + 1, whole
                    report(state.step, total_steps, f"epoch {state.epoch + 1}: final fit, the validation bands "
                                                    "join training")
                loss, batch_matrix = trainer.step(sampler.sample(state.batch_size, rng), one_cycle(state.lr, progress))
                losses.append(loss)
                matrix += batch_matrix
                state.step += 1
                if total_steps:
                    report(state.step, total_steps, f"epoch {state.epoch + 1}: loss {loss:.3f}")
                else:
                    report(int(elapsed), int(self.time_budget), f"epoch {state.epoch + 1}: loss {loss:.3f}")
            if not losses:
                state.stopped = ("early stopping, then the final fit" if state.skipped else
                                 "time budget" if self.time_budget and not total_steps else "epochs")
                break
            self._evaluate(trainer, val, losses, matrix, started)
            state.rng = rng.bit_generator.state
            if out_of_time or (total_steps and state.step >= total_steps) \
                    or (state.skipped and self._progress(total_steps, time.perf_counter() - started) >= 1.0):
                state.stopped = ("early stopping, then the final fit" if state.skipped else
                                 "epochs" if total_steps and state.step >= total_steps else "time budget")
            elif state.since_best >= self.patience and not state.joined_epoch:
                if whole is None:
                    state.stopped = "early stopping"
                else:  # the bands have judged enough: the final fit now, from the best weights, at its own length
                    now = self._progress(total_steps, time.perf_counter() - started)
                    state.skipped += max(0.0, 1.0 - self.final_fit - now)
                    trainer.network.load_state_dict(self._best_state)
                    if trainer.average is not None:
                        trainer.average.module.load_state_dict(self._best_state)
                    report(state.step, total_steps, f"epoch {state.epoch}: no better on the held-out bands for "
                                                    f"{state.since_best} epochs (best epoch {state.best_epoch}): the "
                                                    "final fit starts now from the best weights")
            self._last_state = _cpu(trainer.network.state_dict())
            self._average_state = _cpu(trainer.average.state_dict()) if trainer.average is not None else None
            self._optimizer_state = copy.deepcopy(trainer.optimizer.state_dict())
            self._evaluated = copy.deepcopy(state)
            if on_checkpoint:
                on_checkpoint(self)
            history = state.history
            report(state.step, total_steps, f"epoch {state.epoch}: val loss {history['val_loss'][-1]:.3f}, "
                                            f"val IoU {history['val_iou'][-1]:.3f}")

    def _progress(self, total_steps: int | None, elapsed: float) -> float:
        """How far through the schedule the run is (0..1): by steps, or by time with a budget, whichever is further,
        plus the share early stopping passed over to start the final fit sooner."""
        state = self._state
        by_steps = state.step / total_steps if total_steps else 0.0
        by_time = ((elapsed - state.schedule_start) / max(self.time_budget - state.schedule_start, 1e-9)
                   if self.time_budget else 0.0)
        return max(by_steps, by_time) + state.skipped

    def _evaluate(self, trainer: Trainer, val, losses: list[float], matrix: np.ndarray, started: float) -> None:
        state = self._state
        measured = trainer.evaluate(*val, max_tile=self.max_tile, overlap=self.overlap)
        train = {"loss": float(np.mean(losses)), **scores(matrix)}
        state.epoch += 1
        state.elapsed = time.perf_counter() - started
        history = state.history
        history["epoch"].append(state.epoch)
        history["lr"].append(float(trainer.optimizer.param_groups[0]["lr"]))
        history["seconds"].append(round(state.elapsed, 2))
        for name in METRICS:
            history[f"train_{name}"].append(round(train[name], 5))
            history[f"val_{name}"].append(round(measured[name], 5))
        history.setdefault("val_held_out", [True] * (len(history["epoch"]) - 1)).append(not state.joined_epoch)
        if state.joined_epoch:  # the final fit: its last weights predict; the bands no longer judge it
            self._best_state = _cpu(trainer.evaluated.state_dict())
        elif measured["iou"] > state.best_iou + 1e-4:
            state.best_iou, state.best_epoch, state.since_best = measured["iou"], state.epoch, 0
            self._best_state = _cpu(trainer.evaluated.state_dict())
        else:
            state.since_best += 1
        log.info("epoch %d: train loss %.4f, val loss %.4f, val IoU %.4f", state.epoch, train["loss"],
                 measured["loss"], measured["iou"])

    def _finish(self, trainer: Trainer) -> None:
        """After the run, or when it is interrupted: the run state stays that of the last evaluation (what the last
        checkpoint holds, so `resume()` works in memory too) and the network predicts with the best weights."""
        if self._state.epoch == 0:
            return
        if not self._state.stopped:
            if self._evaluated is None:
                return
            self._state = copy.deepcopy(self._evaluated)
            self._state.stopped = "interrupted"
        self.network_.load_state_dict(self._prediction_state())
        self.network_.to("cpu")

    def _prediction_state(self) -> dict[str, torch.Tensor]:
        """The best evaluated weights (restore_best), else the last evaluated ones: the moving average if any."""
        if self.restore_best and self._best_state is not None:
            return self._best_state
        if self._average_state is not None:
            return averaged_weights(self._average_state)
        return self._last_state

    # -- results ----------------------------------------------------------------------------------------------

    @property
    def history_(self) -> dict[str, list]:
        return self._state.history

    @property
    def search_(self) -> dict[str, Any]:
        """The hyperparameter search's record (range test, trials, choice); empty when nothing was searched."""
        return self._state.search

    @property
    def summary_(self) -> dict[str, Any]:
        """Figures worth recording on a Model."""
        state = self._state
        return {"epochs": state.epoch, "steps": state.step, "training_seconds": round(state.elapsed, 1),
                "best_epoch": state.best_epoch, "val_iou": round(state.best_iou, 4), "lr": state.lr,
                "batch_size": state.batch_size, "stopped": state.stopped or "running",
                "validation": self.validation_,
                "device": getattr(self, "device_", None)}

    @property
    def validation_(self) -> str:
        """What the validation line of the curves (and the best epoch) is measured on, in words."""
        state = self._state
        if state.val_regions:
            bands = f"held-out bands ({self.val_fraction:.0%} of each image)"
            if state.joined_epoch:
                return f"{bands} until epoch {state.joined_epoch - 1}, then a final fit on whole images"
            return bands
        return "held-out items" if state.val_items else "training items"

    def checkpoint(self) -> bytes:
        """Everything to predict, or to resume at the last evaluation, as torch.save bytes."""
        if self._last_state is None:
            raise ValueError("no epoch has been evaluated yet: there is nothing to checkpoint")
        predict_with = self._prediction_state()
        payload = {
            "format": FORMAT, "params": self.get_params(), "n_classes": self.n_classes_, "network": predict_with,
            "training": {"state": asdict(self._state), "optimizer": self._optimizer_state,
                         "network": None if predict_with is self._last_state else self._last_state,
                         "average": self._average_state},
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        return buffer.getvalue()

    @classmethod
    def from_checkpoint(cls, data: bytes | Path, *, device: str | None = None) -> UNetSegmenter:
        """A segmenter that predicts like the checkpointed one and can `resume()` its run."""
        source = io.BytesIO(data) if isinstance(data, bytes) else str(data)
        payload = torch.load(source, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ValueError("not a labelloop U-Net checkpoint")
        params = dict(payload["params"])
        augment = params.pop("augment")
        params.update(augment=AugmentSpec(**augment) if augment is not None else None,
                      decoder_channels=tuple(params["decoder_channels"]), device=device)
        segmenter = cls(**params)
        segmenter.n_classes_ = int(payload["n_classes"])
        segmenter.n_outputs_ = 1 if segmenter.n_classes_ == 2 else segmenter.n_classes_
        segmenter.network_, segmenter.skipped_keys_ = build_network(
            segmenter.encoder, segmenter.n_outputs_, decoder_channels=segmenter.decoder_channels, pretrained=False)
        segmenter.network_.load_state_dict(payload["network"])
        training = payload["training"]
        segmenter._last_state = training["network"] if training["network"] is not None else payload["network"]
        segmenter._best_state = payload["network"] if segmenter.restore_best else None
        segmenter._optimizer_state = training["optimizer"]
        segmenter._average_state = training.get("average")  # absent from checkpoints before ema_decay
        segmenter._state = RunState(**training["state"])
        segmenter._evaluated = copy.deepcopy(segmenter._state)
        return segmenter

    # -- prediction -------------------------------------------------------------------------------------------

    def predict_logits(self, image: np.ndarray, *, tta: int | None = None) -> torch.Tensor:
        device = pick_device(self.device)
        network = self._inference_network().to(device)
        with cpu_threads(device, self.threads):
            return image_logits(network, InputNormaliser(self.encoder), device, scale_image(image), self.n_outputs_,
                                max_tile=self.max_tile, overlap=self.overlap, tta=self.tta if tta is None else tta,
                                autocast=autocast_dtype(device, self.precision))

    def _inference_network(self) -> torch.nn.Module:
        """The network with its batch norms folded, channels-last, built once per set of weights (they change only
        as a run goes on, so the run's step and state name them)."""
        key = (id(self.network_), self._state.step, self._state.stopped)
        if getattr(self, "_folded", (None, None))[0] != key:
            self._folded = (key, fold_batch_norms(self.network_)[0].to(memory_format=torch.channels_last))
        return self._folded[1]

    def predict_proba(self, image: np.ndarray, *, tta: int | None = None) -> np.ndarray:
        """H×W×n_classes probabilities of an image of any size (grey, RGB; 8 or 16 bit)."""
        logits = self.predict_logits(image, tta=tta)
        if self.n_outputs_ == 1:
            foreground = torch.sigmoid(logits[0])
            proba = torch.stack([1 - foreground, foreground])
        else:
            proba = torch.softmax(logits, dim=0)
        return proba.permute(1, 2, 0).numpy().astype(np.float32, copy=False)

    def predict(self, image: np.ndarray, *, tta: int | None = None) -> np.ndarray:
        return self.predict_proba(image, tta=tta).argmax(axis=2).astype(np.uint8 if self.n_classes_ < 256 else np.uint16)

    # -- checks -----------------------------------------------------------------------------------------------

    def validate_params(self) -> UNetSegmenter:
        """Raise ValueError on a setting that cannot work; returns self."""
        parse_loss(self.loss)
        if not (self.lr == "auto" or (isinstance(self.lr, (int, float)) and self.lr > 0)):
            raise ValueError(f"lr must be a positive number or 'auto', got {self.lr!r}")
        if not (self.batch_size == "auto" or (isinstance(self.batch_size, int) and self.batch_size >= 1)):
            raise ValueError(f"batch_size must be a positive integer or 'auto', got {self.batch_size!r}")
        if self.patch < 32 or self.patch % 32:
            raise ValueError(f"patch must be a multiple of 32 pixels (the U-Net halves it 5 times), got {self.patch}")
        if self.max_tile % 32 or self.overlap * 2 >= self.max_tile:
            raise ValueError(f"max_tile must be a multiple of 32 and more than twice the overlap, got "
                             f"{self.max_tile} and {self.overlap}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be at least 0 and below 1, got {self.val_fraction}")
        if not 0 <= self.final_fit < 1:
            raise ValueError(f"final_fit is a share of the schedule, at least 0 and below 1, got {self.final_fit}")
        if self.val_split not in VAL_SPLITS:
            raise ValueError(f"val_split must be one of {', '.join(VAL_SPLITS)}, got {self.val_split!r}")
        if not 0 <= self.foreground_bias <= 1:
            raise ValueError(f"foreground_bias is a probability (0..1), got {self.foreground_bias}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.tta not in VIEWS:
            raise ValueError(f"tta must be 0, 2, 4 or 8 views (flips, then transposes too), got {self.tta}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be at least 0 (off) and below 1, got {self.ema_decay}")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.time_budget is not None and self.time_budget <= 0:
            raise ValueError(f"time_budget must be positive seconds, got {self.time_budget}")
        return self

    def _check_data(self, images, masks) -> list[np.ndarray]:
        if not images or len(images) != len(masks):
            raise ValueError(f"fit needs one mask per image and at least one pair, got {len(images)} images and "
                             f"{len(masks)} masks")
        checked = []
        for number, (image, mask) in enumerate(zip(images, masks)):
            mask = np.asarray(mask)
            if mask.ndim != 2 or mask.shape != np.shape(image)[:2]:
                raise ValueError(f"mask {number} has shape {mask.shape} but its image is {np.shape(image)[:2]}")
            if not np.issubdtype(mask.dtype, np.integer) and mask.dtype != bool:
                raise ValueError(f"mask {number} must hold class indices (integers), got {mask.dtype}")
            if self.n_classes and int(mask.max()) >= self.n_classes:
                raise ValueError(f"mask {number} holds class {int(mask.max())} but n_classes is {self.n_classes}")
            checked.append(mask.astype(np.uint8 if int(mask.max()) < 256 else np.int64))
        return checked


_PARAMS = tuple(inspect.signature(UNetSegmenter.__init__).parameters)[1:]


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
