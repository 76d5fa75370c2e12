"""Object detection: a Faster R-CNN over a timm backbone, fine-tuned on labelled boxes. `BoxDetector` imports torch,
so it is loaded on first use: the evaluation and label-issue modules work without torch (the core install)."""

from __future__ import annotations

from typing import Any

__all__ = ["BoxDetector"]


def __getattr__(name: str) -> Any:
    if name == "BoxDetector":
        from labelloop.ml.detection.detector import BoxDetector

        return BoxDetector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
