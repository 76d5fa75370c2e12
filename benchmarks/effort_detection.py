"""Benchmark (issue 19): expert seconds saved on detection (raccoon), a sampling strategy against random.

    .venv/bin/python benchmarks/effort_detection.py --prepare
    nice .venv/bin/python benchmarks/effort_detection.py --strategies random --part random &
    nice .venv/bin/python benchmarks/effort_detection.py --strategies least-confidence --part lc &
    wait; .venv/bin/python benchmarks/effort_detection.py --merge

A workspace (--workspace, default /tmp/labelloop-effort-detection) holds one detection project with the 200 raccoon
photos (imported without their boxes). `labelloop simulate` then runs through the same services as the command
(plan_simulation, run_simulation), default cost model, truth = the VOC files: --start images drawn from scratch,
then --batch images per round from the project's queue in the strategy's order, the detector trained each round for
--round-budget (its time_budget; the calibration folds the product adds when the held-out boxes are few come on
top), its boxes above the calibrated threshold shown as pre-labels, which the simulated person verifies, adjusts,
relabels, deletes or completes. Box pre-labels are never auto-accepted, so a run stopped after --rounds has labelled
only part of the pool: the table's "ratio on labelled" prices the same images' boxes drawn from scratch (every true
box of a labelled image is drawn, verified, adjusted or relabelled exactly once) against the human seconds spent.

Writes <out>/raccoon.json (the whole result; parts as raccoon.<part>.json) and docs/effort_raccoon.png, and prints a
markdown table per strategy: human seconds, images labelled, the box actions, the ratio on the labelled images with
boxes drawn at 7 s and at 35 s, box F1 of the dataset, the detector's mAP@0.5 on the held-out images per round, and
the wall time per simulation.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RACCOON = ROOT.parent / "shared" / "data" / "raccoon"
NAME = "raccoon"
ORDER = "random,least-confidence,margin,entropy,k-center,hybrid".split(",")
DRAWN = ("draw_box", "verify_box", "adjust_box", "change_class")  # each true box of a labelled image: one of these


def project_ready(workspace) -> None:
    from labelloop.errors import NotFound
    from labelloop.services.data.importing import import_path
    from labelloop.services.projects import create_project, get_project

    try:
        with workspace.session() as session:
            get_project(session, NAME)
    except NotFound:
        with workspace.session() as session:
            create_project(session, NAME, "detection", ["raccoon"])
        import_path(workspace, NAME, RACCOON / "images", format="images")


def labelled_ratio(actions: dict, costs: dict) -> float | None:
    """By-hand seconds of the labelled images' boxes / the human seconds spent on them."""
    human = sum(costs[a] * n for a, n in actions.items())
    return round(costs["draw_box"] * sum(actions.get(a, 0) for a in DRAWN) / human, 3) if human else None


def table(result: dict) -> str:
    costs = result["cost_model"]["seconds"]
    traditional = {**costs, "draw_box": costs["draw_box_traditional"]}
    first = result["runs"][0]
    plan = result["plan"]
    growth = "fine-tuning the round before" if plan.get("from_previous") else "trained anew"
    lines = [f"**raccoon**: pool {first['pool']} images, {first['held_out']} held out, all by hand "
             f"{first['scratch_seconds']:.0f} s (boxes at 7 s); start {plan['start']}, batch {plan['batch']}, "
             f"rounds {plan['rounds'] or 'until done'}, {growth} each round, round budget "
             f"{plan['round_budget_seconds']:.0f} s, target precision "
             f"{plan['target_precision'] or 'project default'}, seeds {', '.join(map(str, plan['seeds']))}, "
             f"--set {plan.get('model_params') or '-'}",
             "",
             "| strategy | seed | labelled by hand | human s | actions | ratio on labelled (7 s / 35 s boxes) | "
             "box F1 of the dataset | held-out mAP@0.5 per round | wall s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for run in result["runs"]:
        actions = run["actions"]
        maps = ", ".join("-" if p["model_quality"] is None else f"{p['model_quality']:.2f}" for p in run["curve"])
        lines.append(f"| {run['strategy']} | {run['seed']} | {run['human_labelled']} | {run['human_seconds']:.0f} | "
                     f"{', '.join(f'{a} {n:g}' for a, n in actions.items())} | "
                     f"{labelled_ratio(actions, costs):.2f}x / {labelled_ratio(actions, traditional):.2f}x | "
                     f"{run['dataset_quality']:.3f} | {maps} | {run['timing']['wall_seconds']:.0f} |")
    lines.append("")
    lines.append("Per round (human-labelled images, cumulative human s, box F1): " + "; ".join(
        f"{run['strategy']}: " + ", ".join(f"{p['human_labelled']}/{p['human_seconds']:.0f}/{p['dataset_quality']:.2f}"
                                           for p in run["curve"]) for run in result["runs"]))
    return "\n".join(lines)


def merge(out: Path, png_dir: Path) -> None:
    """One result from the parts run in parallel, written with its figure and printed."""
    from effort_classification import merged_parts

    from labelloop.services.assist.simulation.report import quality_png

    result = merged_parts(out, NAME, ORDER)
    plan = result["plan"]
    (out / f"{NAME}.json").write_text(json.dumps(result, indent=2))
    png = png_dir / f"effort_{NAME}.png"
    png.write_bytes(quality_png(result, title=f"raccoon: box F1 of the dataset against human time "
                                              f"(start {plan['start']}, batch {plan['batch']})"))
    print(table(result))
    print(f"\n(json: {out / f'{NAME}.json'}, png: {png}, parts ran in parallel, longest "
          f"{result['timing']['benchmark_seconds']:.0f} s)\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--strategies", default="random,least-confidence")
    parser.add_argument("--start", type=int, default=20)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--until-done", action="store_true", help="rounds until the pool is labelled (not --rounds)")
    parser.add_argument("--from-previous", action="store_true",
                        help="each round fine-tunes the round before's detector (simulate --from-previous)")
    parser.add_argument("--round-budget", default="2m")
    parser.add_argument("--target-precision", type=float, default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the detector (per part)")
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/labelloop-effort-detection"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/labelloop-effort-detection/results"))
    parser.add_argument("--png-dir", type=Path, default=ROOT / "docs")
    parser.add_argument("--part", default=None, help="write raccoon.<part>.json (to run strategies in parallel)")
    parser.add_argument("--merge", action="store_true", help="combine the parts into raccoon.json, the PNG, the table")
    parser.add_argument("--prepare", action="store_true", help="only create the project (before parts run in parallel)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    from labelloop.services.assist.simulation import plan_simulation, run_simulation
    from labelloop.services.workspace import Workspace

    args.out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        merge(args.out, args.png_dir)
        return
    if not RACCOON.is_dir():
        raise SystemExit(f"{RACCOON} is missing")
    workspace = Workspace.open(args.workspace, create=True)
    project_ready(workspace)
    if args.prepare:
        return
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    plan = plan_simulation(workspace, NAME, RACCOON, format="voc", model="detector", strategy=strategies[0],
                           compare=strategies[1:], start=args.start, batch=args.batch,
                           rounds=None if args.until_done else args.rounds, until_done=args.until_done,
                           round_budget=args.round_budget, target_precision=args.target_precision, seeds=args.seeds,
                           model_params={"threads": args.threads}, from_previous=args.from_previous)
    started = time.perf_counter()
    result = run_simulation(workspace, plan, progress=lambda d, t, m: print(f"  {NAME}: {m}", file=sys.stderr,
                                                                            flush=True))
    result["timing"]["benchmark_seconds"] = round(time.perf_counter() - started, 1)
    (args.out / f"{NAME}.{args.part or 'all'}.json").write_text(json.dumps(result, indent=2))
    print(table(result))


if __name__ == "__main__":
    main()
