"""Training curves as one PNG with three panels: loss, pixel accuracy, IoU (train and validation per epoch)."""

from __future__ import annotations

import io

PANELS = (("loss", "loss"), ("accuracy", "pixel accuracy"), ("iou", "foreground IoU"))


def curves_png(history: dict[str, list], title: str = "") -> bytes:
    """PNG bytes of the per-epoch `history` (keys epoch, train_loss, val_loss, train_accuracy, ...)."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or window state (renders with Agg)

    figure = Figure(figsize=(12, 3.6), dpi=100, layout="constrained")
    axes = figure.subplots(1, 3)
    epochs = history.get("epoch", [])
    held = history.get("val_held_out") or [True] * len(epochs)  # False: the final fit trains on what validates
    joined = next((i for i, flag in enumerate(held) if not flag), None)
    for axis, (key, label) in zip(axes, PANELS):
        values = history.get(f"train_{key}", [])
        if values:
            axis.plot(epochs[:len(values)], values, "-", markersize=3, label="training patches")
        values = history.get(f"val_{key}", [])
        if values:
            axis.plot(epochs[:joined], values[:joined], "-o", markersize=3, label="validation (held out)")
        if values and joined is not None:
            axis.plot(epochs[joined - 1 if joined else 0:len(values)], values[joined - 1 if joined else 0:], ":o",
                      markersize=3, color="grey", label="validation, trained on (final fit)")
            axis.axvline(epochs[joined] - 0.5, color="grey", linewidth=0.8)
        axis.set_xlabel("epoch")
        axis.set_title(label)
        axis.grid(alpha=0.3)
        if key != "loss":
            axis.set_ylim(0, 1.02)
    axes[0].legend(loc="upper right", fontsize=8)
    if title:
        figure.suptitle(title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
