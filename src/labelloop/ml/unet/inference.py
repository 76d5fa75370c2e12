"""Whole images of any size through a fully convolutional network: overlapping tiles blended with a cosine
taper (no seams), optional test-time augmentation over flips and transposes."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

ALIGN = 32  # the U-Net halves its input five times
FLIPS = ((), (3,), (2,), (2, 3))  # tensor dims flipped: none, horizontal, vertical, both
# TTA views: (transpose height and width first?, dims flipped). 8 = all of the square's symmetries.
VIEWS = {0: ((False, ()),), 2: ((False, ()), (False, (3,))), 4: tuple((False, f) for f in FLIPS),
         8: tuple((t, f) for t in (False, True) for f in FLIPS)}


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Evenly spread starts of `tile`-long windows covering 0..length, neighbours sharing >= `overlap`."""
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def tile_size(length: int, max_tile: int, overlap: int) -> int:
    """The smallest aligned tile that covers `length` in as few windows as `max_tile` would need."""
    if length <= max_tile:
        return _align(length)
    count = math.ceil((length - overlap) / (max_tile - overlap))
    return min(_align(math.ceil((length + (count - 1) * overlap) / count)), max_tile)


def _align(value: int) -> int:
    return max(ALIGN, math.ceil(value / ALIGN) * ALIGN)


def taper(length: int, overlap: int, *, start_inside: bool, end_inside: bool) -> np.ndarray:
    """1-D blending weights: a raised-cosine ramp over `overlap` px on each side that meets another tile, 1 elsewhere
    (a side on the image border keeps full weight: nothing else covers it)."""
    weights = np.ones(length, np.float32)
    ramp_length = min(overlap, length // 2)
    if ramp_length > 0:
        ramp = (0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp_length) + 0.5) / ramp_length)).astype(np.float32)
        if start_inside:
            weights[:ramp_length] = ramp
        if end_inside:
            weights[length - ramp_length:] = ramp[::-1]
    return weights


def sliding_window(forward: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, n_outputs: int, *,
                   max_tile: int = 512, overlap: int = 64, batch_size: int = 4, tta: int = 0) -> torch.Tensor:
    """Blended logits (n_outputs×H×W, float32, CPU) of a 1×3×H×W input: tiles of at most `max_tile` px (aligned to 32)
    overlapping by `overlap`, each weighted by a cosine taper; `tta` = 0, 2 (+ horizontal flip), 4 (+ vertical
    flips) or 8 (each of those also transposed) views averaged, each mapped back before averaging. Inputs smaller
    than a tile are padded by reflection."""
    if tta not in VIEWS:
        raise ValueError(f"tta must be 0, 2, 4 or 8 views, got {tta}")
    _, _, height, width = image.shape
    tile_h, tile_w = tile_size(height, max_tile, overlap), tile_size(width, max_tile, overlap)
    pad_h, pad_w = max(tile_h - height, 0), max(tile_w - width, 0)
    if pad_h or pad_w:
        mode = "reflect" if pad_h < height and pad_w < width else "replicate"
        image = torch.nn.functional.pad(image, (0, pad_w, 0, pad_h), mode=mode)
    full_h, full_w = image.shape[2], image.shape[3]
    ys, xs = tile_starts(full_h, tile_h, overlap), tile_starts(full_w, tile_w, overlap)
    total = torch.zeros(n_outputs, full_h, full_w)
    weight_sum = torch.zeros(1, full_h, full_w)
    boxes = [(y, x) for y in ys for x in xs]
    for start in range(0, len(boxes), batch_size):
        chunk = boxes[start:start + batch_size]
        tiles = torch.cat([image[:, :, y:y + tile_h, x:x + tile_w] for y, x in chunk])
        logits = sum(_unview(forward(_view(tiles, view)), view) for view in VIEWS[tta]) / len(VIEWS[tta])
        logits = logits.float().cpu()
        for (y, x), tile_logits in zip(chunk, logits):
            wy = taper(tile_h, overlap, start_inside=y > 0, end_inside=y + tile_h < full_h)
            wx = taper(tile_w, overlap, start_inside=x > 0, end_inside=x + tile_w < full_w)
            window = torch.from_numpy(np.outer(wy, wx))
            total[:, y:y + tile_h, x:x + tile_w] += tile_logits * window
            weight_sum[:, y:y + tile_h, x:x + tile_w] += window
    return (total / weight_sum)[:, :height, :width]


def _view(tensor: torch.Tensor, view: tuple[bool, tuple[int, ...]]) -> torch.Tensor:
    transpose, dims = view
    tensor = tensor.transpose(2, 3) if transpose else tensor
    return torch.flip(tensor, dims) if dims else tensor


def _unview(tensor: torch.Tensor, view: tuple[bool, tuple[int, ...]]) -> torch.Tensor:
    transpose, dims = view
    tensor = torch.flip(tensor, dims) if dims else tensor
    return tensor.transpose(2, 3) if transpose else tensor
