"""Cheaper forward passes for prediction, with the same arithmetic: batch norms folded into the convolutions before
them (the allocator's part is in `labelloop.ml.allocator`)."""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

log = logging.getLogger(__name__)

FOLD_CHECK_SIZE = (1, 3, 96, 128)  # the random input a folded copy must answer like the original
FOLD_TOLERANCE = 1e-4  # largest difference allowed, relative to the output's largest magnitude


def fold_batch_norms(module: nn.Module) -> tuple[nn.Module, int]:
    """A copy of `module`, in evaluation mode, where every batch norm that reads a convolution's output alone is
    folded into that convolution's weights and bias (and replaced by what followed it inside the norm module: timm's
    BatchNormAct2d keeps its activation). Returns (copy, norms folded); (module, 0) when the copy does not give the
    original's answer on a random input, or nothing could be folded.

    A norm in evaluation mode is y = (x - mean) / sqrt(var + eps) * w + b, an affine map per channel, so the folded
    convolution computes the same thing in one pass over memory instead of two."""
    original_mode = module.training
    module.eval()
    try:
        folded = copy.deepcopy(module)
        pairs = _conv_norm_pairs(folded)
        for conv, norm_name, norm in pairs:
            _fold_one(conv, norm)
            parent_name, _, leaf = norm_name.rpartition(".")
            parent = folded.get_submodule(parent_name) if parent_name else folded
            setattr(parent, leaf, _after_norm(norm))
        if not pairs or not _same_answer(module, folded):
            return module, 0
        return folded, len(pairs)
    finally:
        module.train(original_mode)


def _conv_norm_pairs(module: nn.Module) -> list[tuple[nn.Conv2d, str, nn.Module]]:
    """(convolution, name of its norm, norm) for each norm whose input was a convolution's output, seen in one
    forward pass; norms of a kind that cannot be replaced are left alone."""
    calls: list[tuple[str, nn.Module, torch.Tensor, torch.Tensor]] = []
    watched = [(n, m) for n, m in module.named_modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    hooks = [m.register_forward_hook(lambda m, args, out, n=n: calls.append((n, m, args[0], out)))
             for n, m in watched]
    try:
        with torch.inference_mode():
            module(_check_input(module))
    except Exception:  # noqa: BLE001 - a module that does not take one image tensor is simply not folded
        log.debug("not folding %s: it does not take a plain image batch", type(module).__name__, exc_info=True)
        return []
    finally:
        for hook in hooks:
            hook.remove()
    made_by: dict[int, nn.Conv2d] = {}  # id of an output tensor -> its convolution (every tensor is held by `calls`)
    uses: dict[int, int] = {}
    for _, m, given, _ in calls:
        uses[id(given)] = uses.get(id(given), 0) + 1
    pairs, seen = [], set()
    for name, m, given, out in calls:
        if isinstance(m, nn.Conv2d):
            made_by[id(out)] = m
        elif (id(given) in made_by and uses[id(given)] == 1 and _replaceable(m) and id(m) not in seen
              and m.num_features == made_by[id(given)].out_channels):
            pairs.append((made_by[id(given)], name, m))
            seen.add(id(m))
    return pairs


def _replaceable(norm: nn.Module) -> bool:
    if type(norm) is nn.BatchNorm2d:
        return norm.track_running_stats
    # timm's BatchNormAct2d: batch_norm, then `drop`, then `act`
    return type(norm).__name__ == "BatchNormAct2d" and norm.track_running_stats and hasattr(norm, "act")


def _after_norm(norm: nn.Module) -> nn.Module:
    if type(norm) is nn.BatchNorm2d:
        return nn.Identity()
    return nn.Sequential(norm.drop, norm.act) if hasattr(norm, "drop") else nn.Sequential(norm.act)


@torch.no_grad()
def _fold_one(conv: nn.Conv2d, norm: nn.Module) -> None:
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    conv.weight, conv.bias = fuse_conv_bn_weights(conv.weight, conv.bias, norm.running_mean, norm.running_var,
                                                  norm.eps, norm.weight, norm.bias)
    conv.weight.requires_grad_(False)
    conv.bias.requires_grad_(False)


def _check_input(module: nn.Module) -> torch.Tensor:
    parameter = next(module.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    generator = torch.Generator().manual_seed(0)
    return torch.rand(FOLD_CHECK_SIZE, generator=generator).to(device).contiguous(memory_format=torch.channels_last)


def _same_answer(original: nn.Module, folded: nn.Module) -> bool:
    x = _check_input(original)
    with torch.inference_mode():
        a, b = _tensors(original(x)), _tensors(folded(x))
    if len(a) != len(b) or any(p.shape != q.shape for p, q in zip(a, b)):
        return False
    worst = max(float((p - q).abs().max()) / max(float(p.abs().max()), 1e-6) for p, q in zip(a, b))
    if worst > FOLD_TOLERANCE:
        log.warning("batch norms not folded: the folded copy differs by %.2g of the output's scale", worst)
        return False
    return True


def _tensors(output) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        return [v for v in output.values() if isinstance(v, torch.Tensor)]
    return [v for v in output if isinstance(v, torch.Tensor)]
