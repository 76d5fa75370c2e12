"""Benchmark: Lucchi as a stack. Label 3 of its 33 slices, train the pixel classifier on them, predict the other 30.

    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/micro_stack.py                      # seeds 0,1,2, both variants
    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/micro_stack.py --seeds 0 --variants scribbles   # a quick look

The training split of /work/shared/data/lucchi_mito is every 5th slice (0, 5, ..., 160) of a 165-slice FIB-SEM
volume, so neighbouring files are 5 slices (25 nm) apart. A seed picks 3 evenly spaced labelled slices (file
positions o, o+11, o+22 with o = 5, 4, 6 for seeds 0, 1, 2) and the forest's random state. Variants of what the
labelled slices give the forest:
- scribbles: 1,000 random truth pixels per class per labelled slice (the protocol of benchmarks/pixel_classifier.py);
- dense: the labelled slices' whole truth masks (a person who drew every mitochondrion), of which the forest
  trains on a uniform random sample of --dense-pixels pixels per slice (true class proportions, ~7 % mitochondria;
  the forest's balanced class weights even them out).

Foreground (mitochondrion) IoU pooled over the pixels of the 30 other slices, and per distance to the nearest
labelled slice (in volume slices): does quality fall with distance? That is the reason for the queue order
`nearest-labelled` (services/labelling/stack_order.py), which serves those neighbours first.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lucchi_mito" / "train"
SPACING = 5  # volume slices between neighbouring files
OFFSETS = {0: 5, 1: 4, 2: 6}  # seed -> file position of the first labelled slice


def _slices() -> list[int]:
    return sorted(int(p.stem.split("_")[1]) for p in (DATA / "images").glob("slice_*.png"))


def _load(index: int) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    image = np.asarray(Image.open(DATA / "images" / f"slice_{index:03d}.png"))
    mask = np.asarray(Image.open(DATA / "masks" / f"slice_{index:03d}.png")) > 127
    return image, mask


def labelled_slices(slices: list[int], seed: int) -> list[int]:
    offset = OFFSETS.get(seed, seed % 11)
    return [slices[p] for p in (offset, offset + 11, offset + 22)]


def _labels(mask: np.ndarray, variant: str, rng: np.random.Generator, dense_pixels: int) -> np.ndarray:
    """Class map for the forest: 1 = background, 2 = mitochondrion, 0 = unlabelled."""
    labels = np.zeros(mask.shape, np.uint8)
    if variant == "dense":  # the whole truth mask, of which the forest trains on a uniform random sample
        idx = rng.choice(mask.size, min(dense_pixels, mask.size), replace=False)
        labels.flat[idx] = np.where(mask.flat[idx], 2, 1)
        return labels
    for value, region in ((1, ~mask), (2, mask)):
        idx = np.flatnonzero(region)
        labels.flat[rng.choice(idx, min(1000, idx.size), replace=False)] = value
    return labels


def run(variant: str, seed: int, args) -> dict:
    from labelloop.ml.pixel_classifier import PixelClassifier
    from labelloop.services.labelling.stack_order import distances

    slices = _slices()
    seeds_of = labelled_slices(slices, seed)
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for index in seeds_of:
        image, mask = _load(index)
        images.append(image)
        labels.append(_labels(mask, variant, rng, args.dense_pixels))
    clf = PixelClassifier(n_estimators=args.n_estimators, autocontext=args.autocontext, random_state=seed,
                          n_jobs=args.jobs).fit(images, labels)
    distance = dict(zip(slices, distances(slices, seeds_of)))
    per_slice = []
    start = time.perf_counter()
    for index in slices:
        if index in seeds_of:
            continue
        image, mask = _load(index)
        foreground = clf.predict(image) == 2
        per_slice.append({"slice": index, "distance": int(distance[index]),
                          "inter": int(np.count_nonzero(foreground & mask)),
                          "union": int(np.count_nonzero(foreground | mask))})
    predict_s = time.perf_counter() - start
    by_distance: dict[int, list[int]] = {}
    for row in per_slice:
        pooled = by_distance.setdefault(row["distance"], [0, 0, 0])
        pooled[0] += row["inter"]
        pooled[1] += row["union"]
        pooled[2] += 1
    inter = sum(r["inter"] for r in per_slice)
    union = sum(r["union"] for r in per_slice)
    return {"variant": variant, "seed": seed, "labelled": seeds_of, "iou": inter / union,
            "mean_slice_iou": float(np.mean([r["inter"] / r["union"] for r in per_slice])),
            "by_distance": {d: {"iou": v[0] / v[1], "slices": v[2]} for d, v in sorted(by_distance.items())},
            "train_s": clf.training_seconds_, "predict_s_per_slice": predict_s / len(per_slice)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default="scribbles,dense")
    parser.add_argument("--n-estimators", type=int, default=20)
    parser.add_argument("--dense-pixels", type=int, default=50_000,
                        help="dense: pixels per labelled slice the forest trains on (all 786,432 take ~30x longer)")
    parser.add_argument("--autocontext", action="store_true")
    parser.add_argument("--jobs", type=int, default=2, help="forest threads (the benchmark machine has 2 cores)")
    parser.add_argument("--json", type=Path, help="also write every run here")
    args = parser.parse_args(argv)
    if not (DATA / "images").is_dir():
        print(f"dataset not found at {DATA}", file=sys.stderr)
        return 2
    print(f"CPU threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, forest n_jobs={args.jobs}, "
          f"{os.cpu_count()} cores visible; autocontext={args.autocontext}")
    runs = []
    for variant in args.variants.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            result = run(variant, seed, args)
            runs.append(result)
            steps = ", ".join(f"{d}: {v['iou']:.3f} ({v['slices']})" for d, v in result["by_distance"].items())
            print(f"{variant} seed {seed} labelled {result['labelled']}: IoU {result['iou']:.3f} "
                  f"(mean per slice {result['mean_slice_iou']:.3f}); by distance in slices (n): {steps}; "
                  f"train {result['train_s']:.1f} s, predict {result['predict_s_per_slice']:.2f} s/slice", flush=True)
    for variant in args.variants.split(","):
        mine = [r for r in runs if r["variant"] == variant]
        ious = [r["iou"] for r in mine]
        pooled: dict[int, list[float]] = {}
        for r in mine:
            for d, v in r["by_distance"].items():
                pooled.setdefault(d, []).append(v["iou"])
        steps = ", ".join(f"{d}: {np.mean(v):.3f}" for d, v in sorted(pooled.items()))
        print(f"{variant}: IoU {np.mean(ious):.3f} ± {np.std(ious):.3f} over {len(mine)} seeds; "
              f"mean by distance: {steps}")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
