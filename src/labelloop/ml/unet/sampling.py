"""Training patches drawn from whole images, biased toward foreground, augmented by the dataset generator's
Augmenter (flips, rot90, ElasticTransform, brightness/contrast, gamma, noise, blur)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labelloop.ml.dataset_generator import AugmentSpec, Augmenter, crop

# Stronger than the dataset generator's default: with a dozen images, augmentation is most of the data.
TRAINING_AUGMENT = AugmentSpec(flips=0.5, rot90=0.5, elastic=0.3, brightness_contrast=0.5, gamma=0.3, noise=0.2,
                               blur=0.15)


@dataclass
class Batch:
    images: np.ndarray  # N×P×P (grey) or N×P×P×3, float32 in [0, 1]
    masks: np.ndarray  # N×P×P, class indices (uint8)


class PatchSampler:
    """Square patches of `size` from (image, mask) pairs; with probability `foreground_bias` a patch is centred
    (with jitter) on a random foreground pixel, else placed uniformly. Images are picked in proportion to area.
    Every draw comes from `rng`, so the same generator state gives the same batches."""

    def __init__(self, images: list[np.ndarray], masks: list[np.ndarray], size: int, *,
                 foreground_bias: float = 0.5, augment: AugmentSpec | None = TRAINING_AUGMENT):
        self.images, self.masks, self.size = images, masks, int(size)
        self.foreground_bias = float(foreground_bias)
        self.augmenter = Augmenter(augment) if augment is not None else None
        areas = np.array([m.size for m in masks], dtype=np.float64)
        self.weights = areas / areas.sum()
        self.foreground = [np.flatnonzero(m) for m in masks]

    def box(self, index: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        height, width = self.masks[index].shape
        size = self.size
        pixels = self.foreground[index]
        if len(pixels) and rng.random() < self.foreground_bias:
            y, x = divmod(int(pixels[rng.integers(len(pixels))]), width)
            x0, y0 = x - int(rng.integers(size)), y - int(rng.integers(size))
        else:
            x0, y0 = int(rng.integers(max(width - size, 0) + 1)), int(rng.integers(max(height - size, 0) + 1))
        x0 = min(max(x0, 0), max(width - size, 0))
        y0 = min(max(y0, 0), max(height - size, 0))
        return x0, y0, x0 + size, y0 + size

    def sample(self, count: int, rng: np.random.Generator) -> Batch:
        images, masks = [], []
        for _ in range(count):
            index = int(rng.choice(len(self.images), p=self.weights))
            image, mask = crop(self.images[index], self.masks[index], self.box(index, rng))
            if self.augmenter is not None:
                pair = self.augmenter(image, mask, int(rng.integers(2**63 - 1)))
                image, mask = pair.image, pair.mask
            images.append(np.clip(image, 0.0, 1.0))
            masks.append(mask)
        return Batch(np.stack(images).astype(np.float32, copy=False), np.stack(masks))
