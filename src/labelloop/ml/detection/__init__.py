"""Object detection: a Faster R-CNN over a timm backbone, fine-tuned on labelled boxes (imports torch)."""

from labelloop.ml.detection.detector import BoxDetector

__all__ = ["BoxDetector"]
