"""Prediction with the batch norms folded into the convolutions (ml/inference.py): the same answer as the network
as trained, refreshed when the weights change, and left alone where folding would change the answer."""

from __future__ import annotations

import torch
from torch import nn

from labelloop.ml.allocator import keep_freed_memory
from labelloop.ml.inference import fold_batch_norms


def _trained_norms(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every norm statistics and affine weights that are far from the identity (as training leaves them)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=generator))
                m.running_var.copy_(torch.rand(m.num_features, generator=generator) * 3 + 0.1)
                m.weight.copy_(torch.randn(m.num_features, generator=generator))
                m.bias.copy_(torch.randn(m.num_features, generator=generator))
    return module.eval()


def test_a_timm_backbone_folds_every_norm_and_answers_as_before():
    import timm

    body = _trained_norms(timm.create_model("tf_efficientnet_lite0", pretrained=False, features_only=True,
                                            out_indices=(2, 3, 4)))
    folded, count = fold_batch_norms(body)
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in body.modules())
    assert count == norms > 40
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in body.modules())  # the original is untouched
    x = torch.rand(2, 3, 131, 177)  # an odd size: the "same" padding of the strided convolutions differs
    with torch.inference_mode():
        for a, b in zip(body(x), folded(x)):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(a.abs().max()))


class _Residual(nn.Module):
    """A norm whose convolution's output is also added back: folding the norm would change the sum."""

    def __init__(self):
        super().__init__()
        self.conv, self.norm = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return self.norm(y) + y


def test_a_norm_whose_input_is_used_elsewhere_is_not_folded():
    module = _trained_norms(_Residual())
    folded, count = fold_batch_norms(module)
    assert count == 0 and folded is module


def test_a_plain_conv_norm_stack_folds_and_keeps_its_training_mode():
    module = _trained_norms(nn.Sequential(nn.Conv2d(3, 8, 3, bias=True), nn.BatchNorm2d(8), nn.ReLU(),
                                          nn.Conv2d(8, 4, 1, bias=False), nn.BatchNorm2d(4)))
    module.train()
    folded, count = fold_batch_norms(module)
    assert count == 2 and module.training  # the caller's mode comes back
    x = torch.rand(1, 3, 20, 24)
    with torch.inference_mode():
        module.eval()
        assert torch.allclose(module(x), folded(x), atol=1e-5)


def test_keeping_freed_memory_is_set_once_and_says_whether_it_could():
    assert keep_freed_memory() in (True, False)
    assert keep_freed_memory() is keep_freed_memory()
