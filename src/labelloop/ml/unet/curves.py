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
    for axis, (key, label) in zip(axes, PANELS):
        for split, style in (("train", "-"), ("val", "-o")):
            values = history.get(f"{split}_{key}", [])
            if values:
                axis.plot(epochs[:len(values)], values, style, markersize=3,
                          label="training patches" if split == "train" else "validation images")
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
