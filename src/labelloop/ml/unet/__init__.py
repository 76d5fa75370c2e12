"""U-Net segmentation with an ImageNet-pretrained timm encoder (imports torch: load it only where a model needs it)."""

from labelloop.ml.unet.network import DEFAULT_ENCODER, build_network, scale_image
from labelloop.ml.unet.segmenter import UNetSegmenter

__all__ = ["DEFAULT_ENCODER", "UNetSegmenter", "build_network", "scale_image"]
