"""Benchmark (issue 19): expert seconds saved on classification, every sampling strategy against random.

    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/effort_classification.py            # both datasets, 3 seeds
    .venv/bin/python benchmarks/effort_classification.py --dataset hymenoptera --seeds 0 --strategies random,margin

Per dataset a workspace (--workspace, default /tmp/labelloop-effort) holds one project with every image (imported
with its folder labels, which the simulation does not copy) and the classifier's embeddings, computed once and
reused by every run. `labelloop simulate` then runs, through the same services as the command (plan_simulation,
run_simulation), with the default cost model: --start 20 items labelled from scratch, then --batch items per round
from the project's queue in the strategy's order, the classifier retrained and recalibrated each round, pre-labels
above the calibrated threshold (target precision 0.95, the project default) auto-accepted, until every item is
labelled by hand or auto-accepted (at most --max-rounds). The truth is the class folders.

Writes <out>/<dataset>.json (the whole result) and docs/effort_<dataset>.png, and prints a markdown table: per
strategy the mean and range over seeds of human seconds, effort ratio (every item by hand / human), dataset
quality (accuracy of the final labels, auto-accepted errors included), time to quality 0.98 and the wall time per
simulation; then each strategy against random (seconds saved to quality 0.98, and whether the gap is beyond the
seeds' spread).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from effort_common import spread, versus_random  # noqa: E402 (benchmarks/ is on the path)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DATASETS = {  # (images folder, default batch): clothing10's pool is 4x hymenoptera's, so larger rounds
    "hymenoptera": (DATA / "hymenoptera", 20),
    "clothing10": (DATA / "clothing10" / "images", 50),
}
STRATEGIES = "random,least-confidence,margin,entropy,k-center,hybrid"


def project_ready(workspace, name: str, folder: Path) -> None:
    """The project with every image and the classifier's embeddings (computed once)."""
    from labelloop.errors import NotFound
    from labelloop.services.assist.embeddings import embed_project
    from labelloop.services.assist.model_kinds import get_model_kind
    from labelloop.services.data.importing import import_path
    from labelloop.services.projects import create_project, get_project

    try:
        with workspace.session() as session:
            project = get_project(session, name)
    except NotFound:
        with workspace.session() as session:
            create_project(session, name, "classification")
        import_path(workspace, name, folder, format="folders", skip_bad=True)
        with workspace.session() as session:
            project = get_project(session, name)
    choice = get_model_kind("classifier").settings(project, {})
    started = time.perf_counter()
    summary = embed_project(workspace, project, model_name=choice["encoder"])
    print(f"{name}: embeddings ready ({summary.to_dict().get('computed', '?')} computed in "
          f"{time.perf_counter() - started:.0f} s)", file=sys.stderr)


def table(name: str, result: dict) -> str:
    summary = result["summary"]
    walls = {}
    for run in result["runs"]:
        walls.setdefault(run["strategy"], []).append(run["timing"]["wall_seconds"])
    runs = result["runs"]
    lines = [f"**{name}**: pool {runs[0]['pool']} items, {runs[0]['held_out']} held out, by hand "
             f"{runs[0]['scratch_seconds']:.0f} s; start {result['plan']['start']}, batch {result['plan']['batch']}, "
             f"seeds {', '.join(map(str, result['plan']['seeds']))}",
             "",
             "| strategy | human s | effort ratio | dataset quality | s to quality 0.98 | ratio at 0.98 | "
             "labelled by hand | auto-accepted (wrong) | wall s / simulation |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for strategy, f in summary["strategies"].items():
        wall = walls[strategy]
        lines.append(
            f"| {strategy} | {spread(f['human_seconds'])} | {spread(f['effort_ratio'], '{:.2f}')}x | "
            f"{spread(f['dataset_quality'], '{:.3f}')} | {spread(f['seconds_to_goal'])} "
            f"({f['seeds_reaching_goal']}/{f['seeds']} seeds) | {spread(f['effort_ratio_at_goal'], '{:.2f}')} | "
            f"{spread(f['human_labelled'])} | {spread(f['auto_accepted'])} ({spread(f['auto_accepted_wrong'])}) | "
            f"{sum(wall) / len(wall):.0f} |")
    lines.append("")
    lines += versus_random(summary, "quality 0.98")
    return "\n".join(lines)


def merged_parts(out: Path, tag: str, order: list[str]) -> dict:
    """One result from the parts `{tag}.*.json` run in parallel: their runs together (strategies in `order`), the
    summary computed again, the longest part's time."""
    from types import SimpleNamespace

    from labelloop.services.assist.simulation.report import summarise

    parts = [json.loads(p.read_text()) for p in sorted(out.glob(f"{tag}.*.json"))]
    if not parts:
        raise SystemExit(f"no parts {out}/{tag}.*.json to merge")
    strategies = sorted({s for p in parts for s in p["plan"]["strategies"]}, key=order.index)
    runs = sorted((r for p in parts for r in p["runs"]), key=lambda r: (order.index(r["strategy"]), r["seed"]))
    plan = {**parts[0]["plan"], "strategies": strategies}
    light = SimpleNamespace(strategies=strategies, task=SimpleNamespace(quality_goal=plan["quality_goal"]))
    return {**parts[0], "plan": plan, "runs": runs, "summary": summarise(runs, light),
            "timing": {"parts": [p["timing"] for p in parts],
                       "benchmark_seconds": max(p["timing"].get("benchmark_seconds", 0) for p in parts)}}


def merge(tag: str, out: Path, png_dir: Path) -> None:
    """One result from the parts run in parallel, written with its figure and printed."""
    from labelloop.services.assist.simulation.report import quality_png

    result = merged_parts(out, tag, STRATEGIES.split(","))
    plan = result["plan"]
    (out / f"{tag}.json").write_text(json.dumps(result, indent=2))
    png = png_dir / f"effort_{tag}.png"
    png.write_bytes(quality_png(result, title=f"{tag}: dataset quality against human time "
                                              f"(start {plan['start']}, batch {plan['batch']})"))
    print(table(tag, result))
    print(f"\n(json: {out / f'{tag}.json'}, png: {png}, parts ran in parallel, longest "
          f"{result['timing']['benchmark_seconds']:.0f} s)\n")


def _tag(name: str, args) -> str:
    """The result's file name: the dataset and the options that change what is measured."""
    return name + (f"_t{round(args.target_precision * 100):03d}" if args.target_precision else "") + \
        ("" if args.model == "classifier" else f"_{args.model}") + (f"_grid{args.grid}" if args.grid else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=[*DATASETS, "all"], default="all")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--strategies", default=STRATEGIES)
    parser.add_argument("--start", type=int, default=20)
    parser.add_argument("--batch", type=int, default=None, help="default: 20 (hymenoptera), 50 (clothing10)")
    parser.add_argument("--max-rounds", type=int, default=40)
    parser.add_argument("--target-precision", type=float, default=None,
                        help="auto-acceptance target (default: the project's, 0.95); files get a _tNNN suffix")
    parser.add_argument("--model", default="classifier",
                        help="classifier (one model), or micro: a chain of one micro-model per class, retrained "
                             "and chained each round (issue 20); files get a _micro suffix")
    parser.add_argument("--grid", type=int, default=None,
                        help="label on grid pages of 4, 6 or 9 of the classifier's suggestions (the grid view's "
                             "GET /similar?suggest=true); files get a _gridN suffix")
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/labelloop-effort"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/labelloop-effort/results"))
    parser.add_argument("--png-dir", type=Path, default=ROOT / "docs")
    parser.add_argument("--part", default=None,
                        help="run only --strategies and write <dataset>.<part>.json (to run parts in parallel)")
    parser.add_argument("--merge", action="store_true",
                        help="combine the <dataset>.*.json parts into <dataset>.json, the PNG and the table")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from labelloop.services.assist.simulation import plan_simulation, run_simulation
    from labelloop.services.assist.simulation.report import quality_png
    from labelloop.services.workspace import Workspace

    workspace = Workspace.open(args.workspace, create=True)
    args.out.mkdir(parents=True, exist_ok=True)
    names = list(DATASETS) if args.dataset == "all" else [args.dataset]
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if args.merge:
        for name in names:
            merge(_tag(name, args), args.out, args.png_dir)
        return
    for name in names:
        folder, batch = DATASETS[name]
        if not folder.is_dir():
            print(f"{name}: {folder} is missing, skipped", file=sys.stderr)
            continue
        project_ready(workspace, name, folder)
        plan = plan_simulation(workspace, name, folder, format="folders", strategy=strategies[0],
                               compare=strategies[1:], start=args.start, batch=args.batch or batch,
                               rounds=args.max_rounds, seeds=args.seeds, target_precision=args.target_precision,
                               model=args.model, grid=args.grid)
        tag = _tag(name, args)
        started = time.perf_counter()
        result = run_simulation(workspace, plan, progress=lambda d, t, m: print(f"  {name}: {m}", file=sys.stderr))
        result["timing"]["benchmark_seconds"] = round(time.perf_counter() - started, 1)
        if args.part:
            (args.out / f"{tag}.{args.part}.json").write_text(json.dumps(result, indent=2))
            continue
        (args.out / f"{tag}.json").write_text(json.dumps(result, indent=2))
        png = args.png_dir / f"effort_{tag}.png"
        png.write_bytes(quality_png(result, title=f"{name}: dataset quality against human time "
                                                  f"(start {plan.start}, batch {plan.batch}, target "
                                                  f"{args.target_precision or 'default'}, {args.model}"
                                                  f"{f', grid {args.grid}' if args.grid else ''})"))
        print(table(tag, result))
        print(f"\n(json: {args.out / f'{tag}.json'}, png: {png}, {result['timing']['benchmark_seconds']:.0f} s)\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
