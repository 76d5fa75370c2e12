"""Focal + Dice loss against class imbalance, and pooled pixel metrics (accuracy, foreground IoU)."""

from __future__ import annotations

import numpy as np
import torch

LOSS_TERMS = ("focal", "dice", "ce")


def parse_loss(spec: str) -> tuple[str, ...]:
    """'focal+dice' -> ('focal', 'dice'); unknown terms are a ValueError naming the known ones."""
    terms = tuple(t.strip().lower() for t in spec.split("+") if t.strip())
    unknown = [t for t in terms if t not in LOSS_TERMS]
    if not terms or unknown:
        raise ValueError(f"loss {spec!r}: combine {', '.join(LOSS_TERMS)} with '+', e.g. focal+dice")
    return terms


class SegmentationLoss(torch.nn.Module):
    """Weighted sum of focal, Dice and cross-entropy terms; binary (1 logit) or multi-class (softmax)."""

    def __init__(self, n_outputs: int, terms: tuple[str, ...] = ("focal", "dice"), *, focal_weight: float = 1.0,
                 dice_weight: float = 1.0, ce_weight: float = 1.0, gamma: float = 2.0):
        from segmentation_models_pytorch import losses

        super().__init__()
        self.binary = n_outputs == 1
        mode = "binary" if self.binary else "multiclass"
        weights = {"focal": focal_weight, "dice": dice_weight, "ce": ce_weight}
        modules = {"focal": lambda: losses.FocalLoss(mode, gamma=gamma),
                   "dice": lambda: losses.DiceLoss(mode, from_logits=True),
                   "ce": lambda: (torch.nn.BCEWithLogitsLoss() if self.binary else torch.nn.CrossEntropyLoss())}
        self.terms = torch.nn.ModuleDict({t: modules[t]() for t in terms})
        self.weights = {t: float(weights[t]) for t in terms}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        goal = target.unsqueeze(1).float() if self.binary else target.long()
        return sum(self.weights[name] * term(logits, goal) for name, term in self.terms.items())


def predicted_classes(logits: torch.Tensor) -> torch.Tensor:
    return (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(dim=1)


def confusion(predicted: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray, n_classes: int) -> np.ndarray:
    """n_classes × n_classes counts, rows = truth, columns = prediction."""
    predicted = torch.as_tensor(predicted).reshape(-1).long().cpu()
    target = torch.as_tensor(target).reshape(-1).long().cpu()
    counts = torch.bincount(target * n_classes + predicted, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes).numpy().astype(np.int64)


def scores(matrix: np.ndarray) -> dict[str, float]:
    """Pixel accuracy and foreground IoU (mean over classes 1.. that occur in truth or prediction)."""
    total = matrix.sum()
    accuracy = float(np.trace(matrix) / total) if total else 0.0
    ious = []
    for k in range(1, matrix.shape[0]):
        union = matrix[k, :].sum() + matrix[:, k].sum() - matrix[k, k]
        if union:
            ious.append(matrix[k, k] / union)
    return {"accuracy": accuracy, "iou": float(np.mean(ious)) if ious else 1.0}
