"""The network: a segmentation-models-pytorch U-Net over a timm encoder with ImageNet weights loaded strictly,
and the image preparation that matches those weights (grey -> 3 channels, 16-bit stretched, mean/std)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from labelloop.errors import InvalidInput
from labelloop.ml.pretrained import DEFAULT_MODEL, load_strict, normalisation, pretrained_state_dict

DEFAULT_ENCODER = f"tu-{DEFAULT_MODEL}"
# Lighter than smp's default (256, 128, 64, 32, 16): measured on 2 CPU cores, 1.7x faster whole-image inference
# and 1.4x faster training steps for the same encoder.
DEFAULT_DECODER_CHANNELS = (128, 64, 32, 16, 16)
PERCENTILES = (1.0, 99.8)  # stretch of non-8-bit images, per image


def timm_name(encoder: str) -> str:
    """'tu-resnet34' or 'resnet34' -> 'resnet34'; unknown names are refused with the user's spelling."""
    import timm

    name = encoder[3:] if encoder.startswith("tu-") else encoder
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:5] if name else []
        hint = f" (close: {', '.join(close)})" if close else ""
        raise InvalidInput(f"unknown encoder {encoder!r}: give a timm model name, e.g. {DEFAULT_ENCODER}{hint}")
    return name


def build_network(encoder: str = DEFAULT_ENCODER, n_outputs: int = 1, *,
                  decoder_channels: tuple[int, ...] = DEFAULT_DECODER_CHANNELS, weights: str | Path | None = None,
                  pretrained: bool = True) -> tuple[torch.nn.Module, list[str]]:
    """(U-Net, skipped weight keys): the encoder's ImageNet weights (bundled for lite0, else `weights`) load
    strictly; only whole modules that a features-only encoder lacks (conv_head, bn2, classifier, ...) may be
    skipped."""
    import segmentation_models_pytorch as smp

    name = timm_name(encoder)
    network = smp.Unet(f"tu-{name}", encoder_weights=None, in_channels=3, classes=n_outputs,
                       decoder_channels=tuple(decoder_channels), encoder_depth=len(decoder_channels))
    skipped: list[str] = []
    if pretrained:
        skipped = load_encoder_weights(network.encoder.model, pretrained_state_dict(name, weights), name)
    return network, skipped


def load_encoder_weights(features: torch.nn.Module, state: dict[str, Any], name: str) -> list[str]:
    """Load a whole-classifier state dict into timm's features-only model; returns the skipped (head) keys."""
    own = features.state_dict()
    present = {key.split(".", 1)[0] for key in own}
    skipped = sorted(k for k in state if k not in own and k.split(".", 1)[0] not in present)
    kept = {k: v for k, v in state.items() if k not in skipped}
    load_strict(features, kept, what=f"encoder {name!r}", hint="; pass the weights file of that same timm model")
    return skipped


def scale_image(image: np.ndarray) -> np.ndarray:
    """float32 in [0, 1], H×W (grey) or H×W×3: uint8 / 255, anything else stretched between its percentiles."""
    image = np.asarray(image)
    if image.ndim == 3:
        if image.shape[2] == 1 or image.shape[2] == 2:
            image = image[:, :, 0]
        else:
            image = image[:, :, :3]
    if image.ndim != 2 and image.ndim != 3:
        raise ValueError(f"an image must be H×W or H×W×C, got shape {image.shape}")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    values = image.astype(np.float32)
    low, high = np.percentile(values, PERCENTILES)
    if high <= low:
        high = low + 1.0
    return np.clip((values - low) / (high - low), 0.0, 1.0)


class InputNormaliser:
    """[0, 1] patches (N×H×W or N×H×W×3 numpy) -> the network's N×3×H×W tensor with the encoder's mean/std."""

    def __init__(self, encoder: str = DEFAULT_ENCODER):
        mean, std = normalisation(timm_name(encoder))
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def __call__(self, patches: np.ndarray, device: torch.device) -> torch.Tensor:
        batch = torch.from_numpy(np.ascontiguousarray(patches, dtype=np.float32))
        batch = batch.unsqueeze(1).expand(-1, 3, -1, -1) if batch.ndim == 3 else batch.permute(0, 3, 1, 2)
        batch = (batch - self.mean) / self.std
        return batch.contiguous(memory_format=torch.channels_last).to(device, non_blocking=True)
