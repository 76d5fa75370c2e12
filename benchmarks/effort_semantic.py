"""Benchmark (issue 19): expert seconds saved on semantic segmentation (pixel-rf, corrective scribbles), an
uncertainty order against random.

    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/effort_semantic.py                 # both sets, 3 seeds
    .venv/bin/python benchmarks/effort_semantic.py --dataset nuclei --seeds 0 --strategies random
    .venv/bin/python benchmarks/effort_semantic.py --dataset lucchi --seeds 0 --strategies random --model unet \
        --set epochs=40 --set steps_per_epoch=9          # the U-Net, a fixed 360 steps a round

Sets (../shared/data), each made a semantic task in a temporary folder (images linked, masks written there):
- **nuclei**: DSB2018 fluorescence nuclei, the first --nuclei-items 256x256 images by id; nucleus = label > 0.
- **lucchi**: Lucchi mitochondria, --lucchi-items slices of the train volume spread evenly over it (1024x768 each).

Per set a workspace holds one semantic project with the images; `labelloop simulate` then runs through the same
services as the command (plan_simulation, run_simulation) with the default cost model and pixel-rf's defaults:
--start items drawn from scratch (their start scribbles: 1,000 truth pixels per class), then --batch items per
round from the project's queue in the strategy's order, each corrected with one scribble stroke per wrong class
and the rest of its wrong area (docs/simulate.md, "Semantic"), the forest retrained after each round, until every
pool item is labelled. Sets of 50 items or more keep 20 % apart to measure the model on.

Strategies: pixel-rf gives no class probabilities per item, only an uncertainty (1 - the prediction's mean
confidence), which least-confidence, margin and entropy all read as it is: they give the same order, so only
least-confidence runs beside random. k-center and hybrid need embeddings, which a pixel classifier has none of.

Writes <out>/<set>.json and docs/effort_semantic_<set>.png, and prints a markdown table per set.
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
DATA = ROOT.parent / "shared" / "data"


def nuclei_truth(folder: Path, count: int) -> Path:
    import numpy as np
    from PIL import Image

    index = json.loads((DATA / "nuclei_dsb2018" / "instances_index.json").read_text())
    chosen = sorted(e["image_id"] for e in index if (e["height"], e["width"]) == (256, 256))[:count]
    return _write(folder, [(DATA / "nuclei_dsb2018" / "images" / f"{i}.png",
                            lambda i=i: (np.asarray(Image.open(DATA / "nuclei_dsb2018" / "labels" / f"{i}.png")) > 0))
                           for i in chosen], "nucleus")


def lucchi_truth(folder: Path, count: int) -> Path:
    import numpy as np
    from PIL import Image

    slices = sorted((DATA / "lucchi_mito" / "train" / "images").glob("slice_*.png"))
    picked = [slices[round(k * (len(slices) - 1) / max(1, count - 1))] for k in range(count)]
    return _write(folder, [(p, lambda p=p: np.asarray(Image.open(p.parent.parent / "masks" / p.name)) > 127)
                           for p in picked], "mitochondrion")


def _write(folder: Path, pairs, name: str) -> Path:
    import numpy as np
    from PIL import Image

    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    for image, mask in pairs:
        link = folder / "images" / image.name
        if not link.exists():
            link.symlink_to(image.resolve())
        Image.fromarray(mask().astype(np.uint8) * 255).save(folder / "masks" / image.name)
    (folder / "classes.txt").write_text(name + "\n")
    return folder


SETS = {"nuclei": (nuclei_truth, "nuclei_items", 4), "lucchi": (lucchi_truth, "lucchi_items", 2)}


def table(name: str, result: dict) -> str:
    summary, runs = result["summary"], result["runs"]
    goal = summary["quality_goal"]
    walls: dict[str, list[float]] = {}
    for run in runs:
        walls.setdefault(run["strategy"], []).append(run["timing"]["wall_seconds"])
    lines = [f"**{name}**: pool {runs[0]['pool']} images, {runs[0]['held_out']} held out, by hand "
             f"{runs[0]['scratch_seconds']:.0f} s; start {result['plan']['start']}, batch {result['plan']['batch']}, "
             f"seeds {', '.join(map(str, result['plan']['seeds']))}", "",
             f"| strategy | human s | effort ratio | s to IoU {goal} | ratio at {goal} | model IoU (held out, last "
             "round) | strokes | redrawn objects | wall s / simulation |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for strategy, f in summary["strategies"].items():
        mine = [r for r in runs if r["strategy"] == strategy]
        strokes = sum(r["actions"].get("scribble_stroke", 0) for r in mine) / len(mine)
        drawn = sum(r["actions"].get("draw_mask", 0) for r in mine) / len(mine)
        lines.append(f"| {strategy} | {spread(f['human_seconds'])} | {spread(f['effort_ratio'], '{:.2f}')}x | "
                     f"{spread(f['seconds_to_goal'])} ({f['seeds_reaching_goal']}/{f['seeds']} seeds) | "
                     f"{spread(f['effort_ratio_at_goal'], '{:.2f}')} | {spread(f['model_quality'], '{:.3f}')} | "
                     f"{strokes:.0f} | {drawn:.0f} | {sum(walls[strategy]) / len(walls[strategy]):.0f} |")
    lines.append("")
    lines += versus_random(summary, f"IoU {goal}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=[*SETS, "all"], default="all")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--strategies", default="random,least-confidence")
    parser.add_argument("--nuclei-items", type=int, default=50)
    parser.add_argument("--lucchi-items", type=int, default=12)
    parser.add_argument("--start", type=int, default=None, help="default: 4 (nuclei), 2 (lucchi)")
    parser.add_argument("--batch", type=int, default=None, help="default: as --start")
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/labelloop-effort-semantic"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/labelloop-effort-semantic/results"))
    parser.add_argument("--png-dir", type=Path, default=ROOT / "docs")
    parser.add_argument("--model", default="pixel-rf", help="the model kind each round trains (pixel-rf or unet)")
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
    for name in (SETS if args.dataset == "all" else [args.dataset]):
        make, count_option, default_start = SETS[name]
        truth = make(args.workspace / f"{name}-truth", getattr(args, count_option))
        workspace = Workspace.open(args.workspace / name, create=True)
        with workspace.session() as session:
            try:
                create_project(session, name, "semantic", [(truth / "classes.txt").read_text().strip()])
            except Conflict:
                pass
        import_path(workspace, name, truth / "images", format="images")
        start = args.start or default_start
        plan = plan_simulation(workspace, name, truth, format="masks", start=start, batch=args.batch or start,
                               strategy=args.strategies.split(",")[0], compare=args.strategies, seeds=args.seeds,
                               model=args.model, model_params=model_params)
        started = time.perf_counter()
        result = run_simulation(workspace, plan, progress=lambda d, t, m: print(f"{name}: {m}", file=sys.stderr)
                                if m else None)
        result["timing"]["benchmark_seconds"] = round(time.perf_counter() - started, 1)
        suffix = "" if args.model == "pixel-rf" else f"_{args.model}"
        (args.out / f"{name}{suffix}.json").write_text(json.dumps(result, indent=2))
        png = args.png_dir / f"effort_semantic_{name}{suffix}.png"
        png.write_bytes(quality_png(result, title=f"{name} (semantic, {args.model}): dataset mean IoU against human "
                                                  "time"))
        print(table(name, result))
        print(f"\n(json: {args.out / f'{name}{suffix}.json'}, png: {png}, {result['timing']['benchmark_seconds']:.0f} s)\n",
              flush=True)


if __name__ == "__main__":
    main()
