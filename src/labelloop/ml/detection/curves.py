"""A detector's training curves as one PNG: training loss per epoch, and test-image mAP at each evaluation."""

from __future__ import annotations

import io


def curves_png(history: dict[str, list], title: str = "") -> bytes:
    from matplotlib.figure import Figure  # no pyplot: no global backend or window state (renders with Agg)

    figure = Figure(figsize=(9, 3.6), dpi=100, layout="constrained")
    loss, scores = figure.subplots(1, 2)
    loss.plot(history.get("epoch", []), history.get("loss", []), "-", label="training images")
    loss.set_title("loss")
    evaluated = history.get("eval_epoch", [])
    for key, label in (("map50", "mAP@0.5"), ("map", "mAP@0.5:0.95"), ("precision", "precision above threshold"),
                       ("recall", "recall above threshold")):
        points = [(e, v) for e, v in zip(evaluated, history.get(key, [])) if v is not None]
        if points:
            scores.plot(*zip(*points), "-o", markersize=3, label=label)
    scores.set_title("test images")
    scores.set_ylim(0, 1.02)
    for axis in (loss, scores):
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend(loc="best", fontsize=8)
    if title:
        figure.suptitle(title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
