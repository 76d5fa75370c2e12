"""Benchmark (issue 19): expert seconds saved on instance segmentation (each nucleus its own mask) with the U-Net
split by watershed, an order against random.

    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/effort_instance.py --seeds 0 --strategies random \
        --set epochs=10 --set steps_per_epoch=6 --set batch_size=4 --set patch=128   # 60 fixed steps a round
    .venv/bin/python benchmarks/effort_instance.py --seeds 0,1,2 --strategies random,least-confidence

The set (../shared/data/nuclei_dsb2018): the first --items 256x256 images by id, their 16-bit label images as the
truth (`--format instances`: one mask per nucleus), in one instance project in a workspace under --workspace.
`labelloop simulate` then runs through the same services as the command (plan_simulation, run_simulation) with
the default cost model: --start items drawn from scratch (`draw_mask` per nucleus), then --batch items per round
from the project's queue in the strategy's order, the shown objects verified, corrected, deleted, and the missed
ones drawn (docs/simulate.md, "Instance"), the U-Net retrained from its pretrained encoder after each round, until
every pool item is labelled. 50 items or more keep 20 % apart to measure the model on.

--round-budget defaults to an hour so that the U-Net's --set epochs x steps_per_epoch, not the machine's load,
ends each round's training (the budget is whichever comes first).

Writes <out>/nuclei_instance.json and docs/effort_instance_nuclei.png, and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from effort_common import model_params as parse_sets, spread, versus_random  # noqa: E402 (benchmarks/)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "nuclei_dsb2018"


def nuclei_truth(folder: Path, count: int) -> Path:
    """images/ and labels/ (links to the set's files) and classes.txt for the first `count` 256x256 images."""
    index = json.loads((DATA / "instances_index.json").read_text())
    chosen = sorted(e["image_id"] for e in index if (e["height"], e["width"]) == (256, 256))[:count]
    for sub in ("images", "labels"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for image_id in chosen:
            link = folder / sub / f"{image_id}.png"
            if not link.exists():
                link.symlink_to((DATA / sub / f"{image_id}.png").resolve())
    (folder / "classes.txt").write_text("nucleus\n")
    return folder


def table(result: dict) -> str:
    summary, runs = result["summary"], result["runs"]
    goal = summary["quality_goal"]
    lines = [f"pool {runs[0]['pool']} images, {runs[0]['held_out']} held out, by hand "
             f"{runs[0]['scratch_seconds']:.0f} s; start {result['plan']['start']}, batch {result['plan']['batch']}, "
             f"seeds {', '.join(map(str, result['plan']['seeds']))}", "",
             f"| strategy | human s | effort ratio | s to F1 {goal} | ratio at {goal} | with draw_mask 34 s | "
             "model F1 (held out, last round) | verified | corrected px | deleted | drawn | wall s / simulation |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for strategy, f in summary["strategies"].items():
        mine = [r for r in runs if r["strategy"] == strategy]

        def mean(action: str) -> float:
            return sum(r["actions"].get(action, 0) for r in mine) / len(mine)

        assisted = sum(r["cost_variants"]["draw_mask_assisted"]["effort_ratio"] or 0 for r in mine) / len(mine)
        wall = sum(r["timing"]["wall_seconds"] for r in mine) / len(mine)
        lines.append(f"| {strategy} | {spread(f['human_seconds'])} | {spread(f['effort_ratio'], '{:.2f}')}x | "
                     f"{spread(f['seconds_to_goal'])} ({f['seeds_reaching_goal']}/{f['seeds']} seeds) | "
                     f"{spread(f['effort_ratio_at_goal'], '{:.2f}')} | {assisted:.2f}x | "
                     f"{spread(f['model_quality'], '{:.3f}')} | {mean('verify_box'):.0f} | "
                     f"{mean('mask_correction_per_px'):.0f} | {mean('delete_shape'):.0f} | {mean('draw_mask'):.0f} | "
                     f"{wall:.0f} |")
    lines.append("")
    lines += versus_random(summary, f"F1 {goal}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--strategies", default="random")
    parser.add_argument("--items", type=int, default=50)
    parser.add_argument("--start", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--round-budget", default="1h")
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/labelloop-effort-instance"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/labelloop-effort-instance/results"))
    parser.add_argument("--png-dir", type=Path, default=ROOT / "docs")
    parser.add_argument("--model", default="unet", help="the model kind each round trains (unet or pixel-rf)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="the model kind's own options for every round, as `labelloop simulate --set`")
    args = parser.parse_args()
    model_params = parse_sets(args.sets)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from labelloop.errors import Conflict
    from labelloop.services.assist.simulation import plan_simulation, run_simulation
    from labelloop.services.assist.simulation.report import quality_png
    from labelloop.services.data.importing import import_path
    from labelloop.services.projects import create_project
    from labelloop.services.workspace import Workspace

    args.out.mkdir(parents=True, exist_ok=True)
    truth = nuclei_truth(args.workspace / "nuclei-truth", args.items)
    workspace = Workspace.open(args.workspace / "nuclei", create=True)
    with workspace.session() as session:
        try:
            create_project(session, "nuclei", "instance", ["nucleus"])
        except Conflict:
            pass
    import_path(workspace, "nuclei", truth / "images", format="images")
    plan = plan_simulation(workspace, "nuclei", truth, format="instances", start=args.start, batch=args.batch,
                           strategy=args.strategies.split(",")[0], compare=args.strategies, seeds=args.seeds,
                           model=args.model, model_params=model_params, round_budget=args.round_budget)
    started = time.perf_counter()
    result = run_simulation(workspace, plan, progress=lambda d, t, m: print(f"nuclei: {m}", file=sys.stderr, flush=True)
                            if m else None)
    result["timing"]["benchmark_seconds"] = round(time.perf_counter() - started, 1)
    suffix = "" if args.model == "unet" else f"_{args.model}"
    (args.out / f"nuclei_instance{suffix}.json").write_text(json.dumps(result, indent=2))
    png = args.png_dir / f"effort_instance_nuclei{suffix}.png"
    png.write_bytes(quality_png(result, title=f"DSB2018 nuclei (instance, {args.model}): instance F1 against human "
                                              "time"))
    print(table(result))
    print(f"\n(json: {args.out / f'nuclei_instance{suffix}.json'}, png: {png}, "
          f"{result['timing']['benchmark_seconds']:.0f} s)\n", flush=True)


if __name__ == "__main__":
    main()
