"""One optimiser over one network: a training step on a batch of patches, evaluation on whole images, the
learning-rate schedule and the seeded item split."""

from __future__ import annotations

import contextlib
import functools
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from labelloop.ml import cpu_load
from labelloop.ml.unet.inference import sliding_window
from labelloop.ml.unet.losses import SegmentationLoss, confusion, predicted_classes, scores
from labelloop.ml.unet.network import InputNormaliser
from labelloop.ml.unet.sampling import Batch

PRECISIONS = ("auto", "bf16", "fp32")
WARMUP = 0.05  # share of the run spent ramping up to the peak learning rate
START_DIVISOR, END_DIVISOR = 25.0, 1000.0  # one-cycle: start at peak/25, end at peak/1000


def one_cycle(peak: float, progress: float) -> float:
    """Learning rate at `progress` (0..1 of the run): linear warm-up, then cosine annealing."""
    progress = min(max(progress, 0.0), 1.0)
    if progress < WARMUP:
        start = peak / START_DIVISOR
        return start + (peak - start) * progress / WARMUP
    cosine = 0.5 * (1.0 + math.cos(math.pi * (progress - WARMUP) / (1.0 - WARMUP)))
    end = peak / END_DIVISOR
    return end + (peak - end) * cosine


def split_items(count: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(training, validation) indices: a seeded `fraction` of the items (at least one, when there are two or more)
    held out; with a single item, or fraction 0, validation uses the training items."""
    if count < 2 or fraction <= 0:
        return list(range(count)), []
    held = min(max(1, round(count * fraction)), count - 1)
    order = np.random.default_rng(seed).permutation(count)
    return sorted(order[held:].tolist()), sorted(order[:held].tolist())


Region = tuple[int, int, int, int]  # y0, y1, x0, x1


def split_regions(shapes: list[tuple[int, int]], fraction: float, seed: int, patch: int) -> list[Region] | None:
    """A validation band per image: a seeded edge (start or end of its longer side) of `fraction` of its area,
    spanning the shorter side. Training patches come from the rest of the image, so every image teaches and every
    image is checked on pixels never trained on. None when fraction is 0 or an image's rest cannot hold a patch."""
    if fraction <= 0:
        return None
    rng = np.random.default_rng(seed)
    regions = []
    for height, width in shapes:
        long_side = max(height, width)
        band = max(1, round(long_side * fraction))
        if long_side - band < patch or min(height, width) < patch:
            return None
        start = 0 if rng.random() < 0.5 else long_side - band
        if width >= height:
            regions.append((0, height, start, start + band))
        else:
            regions.append((start, start + band, 0, width))
    return regions


def outside(array: np.ndarray, region: Region) -> np.ndarray:
    """The part of `array` left when the edge band `region` (from split_regions) is cut off."""
    y0, y1, x0, x1 = region
    height, width = array.shape[:2]
    if (y0, y1) == (0, height):
        return array[:, x1:] if x0 == 0 else array[:, :x0]
    return array[y1:] if y0 == 0 else array[:y0]


def pick_device(device: str | None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def cpu_threads(device: torch.device, threads: int | None):
    """On CPU use `threads`, else the cores this process may run on less those other processes keep busy now
    (`cpu_load.free_cores`), and restore torch's setting afterwards. Measured on 2 shared cores: with other work
    running, 2 threads made a training step 5-10x slower than 1 (each thread waits at every layer for the one that
    lost its core)."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, threads or default_threads()))
    try:
        yield
    finally:
        torch.set_num_threads(before)


REUSE_S = 30.0  # prediction enters cpu_threads once per image: measure at most this often, not on every image
_decided: tuple[float, int] | None = None  # (time.monotonic() when measured, threads)
_refresher: threading.Thread | None = None
_refresher_lock = threading.Lock()


def default_threads(clock: Callable[[], float] = time.monotonic, *, wait: bool = True) -> int:
    """`cpu_load.free_cores()`, measured again (a wait of `cpu_load.WINDOW_S`) when the last decision is older than
    REUSE_S: what a training run should start from. With `wait=False` (a served prediction) only the first call
    waits; a stale decision is returned at once and measured again in the background. Waiting there added half a
    second to one served prediction every REUSE_S: most of the Label Studio backend's p99
    (benchmarks/ls_backend_latency.py)."""
    global _decided, _refresher
    now = clock()
    if _decided is None or (wait and now - _decided[0] > REUSE_S):
        _decided = (now, cpu_load.free_cores())
    elif now - _decided[0] > REUSE_S:
        with _refresher_lock:
            if _refresher is None or not _refresher.is_alive():
                _refresher = threading.Thread(target=_measure_free_cores, args=(now,), daemon=True,
                                              name="labelloop-free-cores")
                _refresher.start()
    return _decided[1]


def _measure_free_cores(now: float) -> None:
    global _decided
    _decided = (now, cpu_load.free_cores())


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX); emulated bf16 is slower than float32."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The dtype convolutions run in (None: float32). 'auto' is bfloat16 on CUDA and on CPUs with native bf16
    (measured on this project's 2-core AMD EPYC with AVX512-BF16: a training step 1.45x cheaper in CPU time and
    whole-image inference ~2x faster than float32), float32 elsewhere."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32" or device.type not in ("cpu", "cuda"):
        return None
    if precision == "bf16" or device.type == "cuda" or cpu_has_native_bf16():
        return torch.bfloat16
    return None


def image_logits(network: torch.nn.Module, normaliser: InputNormaliser, device: torch.device, image: np.ndarray,
                 n_outputs: int, *, max_tile: int, overlap: int, tta: int = 0, batch_size: int = 4,
                 autocast: torch.dtype | None = None) -> torch.Tensor:
    """Blended logits (outputs×H×W, CPU, float32) of one [0, 1] image (H×W or H×W×3), the network in eval mode."""
    network.eval()
    inputs = normaliser(image[None], torch.device("cpu"))

    def forward(tiles: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), _autocast(device, autocast):
            return network(tiles.to(device).contiguous(memory_format=torch.channels_last)).float()

    return sliding_window(forward, inputs, n_outputs, max_tile=max_tile, overlap=overlap, batch_size=batch_size,
                          tta=tta)


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def ema_with_warmup(decay: float):
    """An AveragedModel `multi_avg_fn`: exponential moving average whose decay ramps up as (1 + n) / (10 + n) toward
    `decay` (the num_updates rule of TensorFlow's ExponentialMovingAverage), so a short run is not dragged back to its
    starting weights. Integer buffers (batch norms' counters) are copied."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged) -> None:
        rate = min(decay, (1.0 + float(n_averaged)) / (10.0 + float(n_averaged)))
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1.0 - rate)
        else:
            torch._foreach_copy_(averaged, current)

    return update


def averaged_weights(average_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The network's own state dict inside an AveragedModel's (its keys without "module.", less the counter)."""
    return {k.removeprefix("module."): v for k, v in average_state.items() if k.startswith("module.")}


class Trainer:
    """AdamW over a network, channels_last, optional bfloat16 autocast (`autocast_dtype`); with `ema_decay` > 0 an
    exponential moving average of the weights (and batch-norm statistics) follows every step, and evaluation uses
    it (`evaluated`)."""

    def __init__(self, network: torch.nn.Module, loss: SegmentationLoss, normaliser: InputNormaliser,
                 n_classes: int, device: torch.device, *, weight_decay: float = 1e-4,
                 autocast: torch.dtype | None = None, ema_decay: float = 0.0):
        self.network = network.to(device, memory_format=torch.channels_last)
        self.loss, self.normaliser, self.n_classes, self.device = loss, normaliser, n_classes, device
        self.autocast = autocast
        self.optimizer = torch.optim.AdamW(self.network.parameters(), lr=1e-3, weight_decay=weight_decay)
        self.average = (torch.optim.swa_utils.AveragedModel(self.network, multi_avg_fn=ema_with_warmup(ema_decay),
                                                            use_buffers=True) if ema_decay > 0 else None)

    @property
    def evaluated(self) -> torch.nn.Module:
        """The network that is evaluated and kept: the moving average when there is one."""
        return self.average.module if self.average is not None else self.network

    def step(self, batch: Batch, lr: float) -> tuple[float, np.ndarray]:
        """One optimiser step; returns (loss, confusion of the batch's predictions)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.network.train()
        inputs = self.normaliser(batch.images, self.device)
        target = torch.from_numpy(batch.masks.astype(np.int64)).to(self.device)
        with _autocast(self.device, self.autocast):
            logits = self.network(inputs)
        loss = self.loss(logits, target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.average is not None:
            self.average.update_parameters(self.network)
        return float(loss.detach()), confusion(predicted_classes(logits.detach()), target, self.n_classes)

    def logits(self, image: np.ndarray, *, max_tile: int, overlap: int, tta: int = 0) -> torch.Tensor:
        return image_logits(self.evaluated, self.normaliser, self.device, image, self.loss_outputs,
                            max_tile=max_tile, overlap=overlap, tta=tta, autocast=self.autocast)

    @property
    def loss_outputs(self) -> int:
        return 1 if self.loss.binary else self.n_classes

    def evaluate(self, images: list[np.ndarray], masks: list[np.ndarray], *, max_tile: int,
                 overlap: int) -> dict[str, float]:
        """Loss (pixel-weighted mean over images), pixel accuracy and foreground IoU pooled over all pixels."""
        matrix = np.zeros((self.n_classes, self.n_classes), np.int64)
        loss_sum = pixels = 0.0
        for image, mask in zip(images, masks):
            logits = self.logits(image, max_tile=max_tile, overlap=overlap)[None]
            target = torch.from_numpy(mask.astype(np.int64))[None]
            with torch.inference_mode():
                loss_sum += float(self.loss(logits, target)) * mask.size  # the loss holds no tensors: any device
            pixels += mask.size
            matrix += confusion(predicted_classes(logits), target, self.n_classes)
        return {"loss": loss_sum / max(pixels, 1), **scores(matrix)}
