"""A simulation's summary (per strategy over seeds, and against random), its JSON file and its PNG: dataset
quality against human time, one line per strategy (mean over seeds, band from the lowest to the highest seed),
random dashed."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

FIGURES = ("human_seconds", "scratch_seconds", "effort_ratio", "dataset_quality", "model_quality",
           "human_labelled", "auto_accepted", "auto_accepted_wrong", "seconds_to_goal", "effort_ratio_at_goal")


def _spread(values: list[float]) -> dict[str, float] | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"mean": round(statistics.fmean(values), 4), "min": round(min(values), 4), "max": round(max(values), 4),
            "std": round(statistics.pstdev(values), 4) if len(values) > 1 else 0.0, "n": len(values)}


def summarise(runs: list[dict[str, Any]], plan) -> dict[str, Any]:
    """Per strategy: each figure's mean, min, max and spread over the seeds; against random (when it ran): how
    much less human time each strategy needed to reach the quality goal, and whether the gap exceeds the seeds'
    spread (the strategy's slowest seed still faster than random's fastest)."""
    goal = plan.task.quality_goal
    strategies: dict[str, Any] = {}
    for run in runs:
        run["effort_ratio_at_goal"] = (round(run["scratch_seconds"] / run["seconds_to_goal"], 3)
                                       if run.get("seconds_to_goal") else None)
    for name in plan.strategies:
        mine = [r for r in runs if r["strategy"] == name]
        strategies[name] = {figure: _spread([r.get(figure) for r in mine]) for figure in FIGURES}
        strategies[name]["seeds_reaching_goal"] = sum(r["seconds_to_goal"] is not None for r in mine)
        strategies[name]["seeds"] = len(mine)
    versus: dict[str, Any] = {}
    if "random" in strategies:
        base = [r["seconds_to_goal"] for r in runs if r["strategy"] == "random"]
        for name in plan.strategies:
            if name == "random":
                continue
            mine = [r["seconds_to_goal"] for r in runs if r["strategy"] == name]
            if None in base or None in mine or not base or not mine:
                versus[name] = {"compared": False,
                                "reason": f"not every seed of {name} and random reached quality {goal}"}
                continue
            saved = statistics.fmean(base) - statistics.fmean(mine)
            versus[name] = {"compared": True, "seconds_saved_vs_random": round(saved, 2),
                            "share_saved_vs_random": round(saved / statistics.fmean(base), 4),
                            "beyond_seed_spread": max(mine) < min(base) if saved > 0 else min(mine) > max(base)}
    best = max(strategies, key=lambda n: (strategies[n]["effort_ratio"] or {}).get("mean", 0))
    return {"quality_goal": goal, "strategies": strategies, "versus_random": versus, "best_by_effort_ratio": best}


def write_outputs(result: dict[str, Any], out: Path) -> dict[str, str]:
    """simulation.json and simulation.png under `out` (created)."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": str(out / "simulation.json"), "png": str(out / "simulation.png")}
    Path(files["png"]).write_bytes(quality_png(result))
    Path(files["json"]).write_text(json.dumps({**result, "files": files}, indent=2))
    return files


def quality_png(result: dict[str, Any], title: str | None = None) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    plan = result["plan"]
    runs = result["runs"]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    top = max((p["human_seconds"] for r in runs for p in r["curve"]), default=1.0) or 1.0
    scratch = runs[0]["scratch_seconds"] if runs else None
    grid = np.linspace(0, top, 400)
    colours = plt.get_cmap("tab10")
    for n, name in enumerate(plan["strategies"]):
        curves = []
        for run in (r for r in runs if r["strategy"] == name):
            x = np.array([0.0] + [p["human_seconds"] for p in run["curve"]])  # nothing labelled at 0 s
            y = np.array([0.0] + [p["dataset_quality"] for p in run["curve"]])
            # a step: the quality reached after a round holds until the next round's labels are in
            curves.append(y[np.searchsorted(x, grid, side="right") - 1])  # a finished run keeps its quality
        stack = np.array(curves)
        style = "--" if name == "random" else "-"
        colour = "black" if name == "random" else colours(n % 10)
        mean, low, high = stack.mean(axis=0), stack.min(axis=0), stack.max(axis=0)
        ax.plot(grid / 60, mean, style, color=colour, label=f"{name} ({len(curves)} seeds)")
        if len(curves) > 1:
            ax.fill_between(grid / 60, low, high, color=colour, alpha=0.15)
    if scratch:  # labelling every item by hand, no model: quality grows with the items done
        ax.plot([0, scratch / 60], [0, 1], color="grey", lw=0.8, ls=":", label="every item by hand")
    ax.axhline(plan["quality_goal"], color="grey", lw=0.8, ls=":")
    ax.set_xlabel("human time (minutes, cost model: " + result["cost_model"]["name"] + ")")
    ax.set_ylabel(f"dataset quality ({plan['quality']})")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(0, max(top, scratch or 0) / 60 * 1.02)
    ax.set_title(title or f"{plan['project']}: {plan['model']}, start {plan['start']}, batch {plan['batch']}")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
