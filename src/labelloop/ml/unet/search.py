"""Learning-rate and batch-size search with short trials: an LR range test, then successive halving
(eta = 3) over (learning rate, batch size) chosen by validation IoU."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from labelloop.ml.unet.sampling import PatchSampler
from labelloop.ml.unet.training import Trainer

ETA = 3
BATCH_SIZES = (4, 8, 16)
DEFAULT_PATCHES = 128  # first-rung patches per trial when no time budget sizes them
MIN_RANGE_STEPS = 10  # a range test shortened to fit a time budget still sweeps four decades in these
RANGE_TEST_SHARE = 0.3  # of a timed search's seconds, at most, for the range test
Step = Callable[[str], None]  # called after every trial step (progress, cancel point)


@dataclass
class Trial:
    lr: float
    batch_size: int
    rung: int
    patches: int
    val_loss: float
    val_iou: float


def lr_range_test(trainer: Trainer, sampler: PatchSampler, rng: np.random.Generator, batch_size: int, *,
                  steps: int = 30, low: float = 1e-5, high: float = 1e-1, seconds: float | None = None,
                  on_step: Step | None = None) -> dict:
    """Raise the learning rate exponentially from `low` to `high` over `steps` steps (fastai/Smith); the suggestion
    is a tenth of the rate at the lowest smoothed loss. With `seconds`, the first step's time sets how many steps
    fit (never fewer than MIN_RANGE_STEPS). The trainer's weights are left trained: use a copy."""
    rates, losses, smoothed = [], [], []
    average, best = 0.0, math.inf
    step = 0
    while step < steps:
        lr = low * (high / low) ** (step / max(steps - 1, 1))
        started = time.perf_counter()
        loss, _ = trainer.step(sampler.sample(batch_size, rng), lr)
        if seconds and step == 0:  # the first step ran at `low` whatever the count: the sweep can still shrink
            steps = min(steps, max(MIN_RANGE_STEPS, int(seconds / max(time.perf_counter() - started, 1e-9))))
        average = 0.7 * average + 0.3 * loss
        value = average / (1 - 0.7 ** (step + 1))
        rates.append(lr)
        losses.append(loss)
        smoothed.append(value)
        best = min(best, value)
        if on_step:
            on_step(f"learning-rate range test: lr {lr:.1e}, loss {loss:.3f}")
        if not math.isfinite(loss) or (step > steps // 3 and value > 4 * best):
            break
        step += 1
    suggested = rates[int(np.argmin(smoothed))] / 10
    suggested = float(min(max(suggested, low * 10), high / 10))
    return {"suggested": suggested, "lrs": [round(r, 8) for r in rates], "losses": [round(v, 5) for v in smoothed]}


def successive_halving(make_trainer: Callable[[], Trainer], configs: list[tuple[float, int]], sampler: PatchSampler,
                       rng: np.random.Generator, evaluate: Callable[[Trainer], dict], base_patches: int, *,
                       on_step: Step | None = None) -> tuple[tuple[float, int], list[Trial]]:
    """Train every (lr, batch size) on `base_patches` patches, keep the best third by validation IoU, train those on
    ETA times more, and so on until one is left; returns (best config, every trial)."""
    trials: list[Trial] = []
    alive = [(config, None) for config in configs]  # (config, saved trainer state to continue from)
    rung, budget = 0, base_patches
    while True:
        keep = len(alive) // ETA  # survivors of this rung; 0 or 1 means this is the last rung
        ranked: list = []
        for (lr, batch_size), state in alive:
            trainer = make_trainer()
            if state is not None:
                trainer.network.load_state_dict(state["network"])
                trainer.optimizer.load_state_dict(state["optimizer"])
            steps = max(1, math.ceil(budget / batch_size))
            warmup = max(1, steps // 10) if rung == 0 else 0
            for step in range(steps):
                rate = lr * min(1.0, (step + 1) / warmup) if warmup else lr
                trainer.step(sampler.sample(batch_size, rng), rate)
                if on_step:
                    on_step(f"search rung {rung}: lr {lr:.1e}, batch {batch_size}, step {step + 1}/{steps}")
            metrics = evaluate(trainer)
            trials.append(Trial(lr, batch_size, rung, steps * batch_size, round(metrics["loss"], 5),
                                round(metrics["iou"], 5)))
            saved = ({"network": copy.deepcopy(trainer.network.state_dict()),
                      "optimizer": copy.deepcopy(trainer.optimizer.state_dict())} if keep > 1 else None)
            ranked.append((metrics["iou"], -metrics["loss"], (lr, batch_size), saved))
            ranked.sort(key=lambda r: (r[0], r[1]), reverse=True)
            del ranked[max(keep, 1):]  # only the survivors' states stay in memory
        if keep <= 1:
            return ranked[0][2], trials
        alive = [(config, saved) for _, _, config, saved in ranked]
        rung, budget = rung + 1, budget * ETA


def candidates(lr: float | None, batch_size: int | None, suggested_lr: float | None) -> list[tuple[float, int]]:
    """The grid searched: a fixed value stays fixed; an automatic lr spans the suggestion / 3, x 1, x 3."""
    rates = [lr] if lr is not None else [suggested_lr / 3, suggested_lr, suggested_lr * 3]
    sizes = [batch_size] if batch_size is not None else list(BATCH_SIZES)
    return [(float(r), int(b)) for r in rates for b in sizes]


def search_plan(configs: int) -> tuple[int, int]:
    """(patches trained in all, in units of the first rung's per-trial budget; trials, each ending in a validation
    pass) of successive halving over `configs` configurations."""
    cost, trials, alive, factor = 0, 0, configs, 1
    while True:
        cost, trials = cost + alive * factor, trials + alive
        alive //= ETA
        if alive <= 1:
            return cost, trials
        factor *= ETA


def trials_record(trials: list[Trial]) -> list[dict]:
    return [asdict(t) for t in trials]


def choose(make_trainer: Callable[[], Trainer], evaluate: Callable[[Trainer], dict], sampler: PatchSampler,
           rng: np.random.Generator, lr: float | None, batch_size: int | None, *, seconds: float | None = None,
           patches: int | None = None, range_test_steps: int = 30, on_step: Step | None = None) -> dict:
    """Search what is None of (lr, batch size): the range test (for lr), then successive halving, its first-rung
    trials sized by `patches`, or to fit the search into `seconds` at the range test's speed. Returns the record:
    lr_range_test, trials, chosen {lr, batch_size}, seconds."""
    record: dict = {}
    tick = time.perf_counter()
    suggested = None
    if lr is None:
        tested_trainer = make_trainer()
        record["lr_range_test"] = lr_range_test(tested_trainer, sampler, rng, batch_size or 8, steps=range_test_steps,
                                                seconds=seconds and RANGE_TEST_SHARE * seconds, on_step=on_step)
        suggested = record["lr_range_test"]["suggested"]
    configs = candidates(lr, batch_size, suggested)
    if patches is None:
        patches = DEFAULT_PATCHES
        tested = len(record["lr_range_test"]["lrs"]) if lr is None else 0
        if seconds and tested and len(configs) > 1:
            per_patch = (time.perf_counter() - tick) / (tested * (batch_size or 8))
            # Every trial ends in a validation pass: time one, so the plan counts them too.
            started = time.perf_counter()
            evaluate(tested_trainer)
            per_trial = time.perf_counter() - started
            cost, trials = search_plan(len(configs))
            spare = seconds - (time.perf_counter() - tick) - trials * per_trial
            patches = max(16, int(spare / per_patch / cost))
    if len(configs) > 1:
        chosen, trials = successive_halving(make_trainer, configs, sampler, rng, evaluate, patches, on_step=on_step)
        record["trials"] = trials_record(trials)
    else:
        chosen = configs[0]
    record.update(chosen={"lr": chosen[0], "batch_size": chosen[1]}, seconds=round(time.perf_counter() - tick, 1))
    return record
