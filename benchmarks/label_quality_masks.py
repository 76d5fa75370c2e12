"""Benchmark: label errors in semantic masks on Lucchi mitochondria (issue 21) — objects erased or added.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/label_quality_masks.py --images 20 --seeds 0 1 2

Per seed: a seeded `--images` of Lucchi's 33 training slices (1024×768) with their Lucchi++ masks, 10 % of them
corrupted (seeded, at least one): half have a whole mitochondrion erased (one of the image's larger ones), the
others a false mitochondrion added (an ellipse the size of the image's median mitochondrion, on background away
from the others). `cross_fitted_maps` (3 folds by image, a pixel forest per fold, each image reduced to the per-image
cap) and `find_mask_label_issues` then flag images at the default cut. Reported per seed and pooled: precision and
recall of the flagged images, where the corrupted images rank, time per image and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DATA = Path("/work/shared/data/lucchi_mito/train")

from labelloop.ml.mask_label_issues import MAX_PIXELS, cross_fitted_maps, find_mask_label_issues  # noqa: E402


def load(names: list[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    images = [np.asarray(Image.open(DATA / "images" / n)) for n in names]
    masks = [(np.asarray(Image.open(DATA / "masks" / n)) > 127).astype(np.uint8) for n in names]
    return images, masks


def erase(mask: np.ndarray, rng) -> np.ndarray:
    """One of the image's larger mitochondria (seeded among the upper half by area) set to background."""
    count, regions, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    large = np.flatnonzero(areas >= np.median(areas)) + 1
    out = mask.copy()
    out[regions == rng.choice(large)] = 0
    return out


def add(mask: np.ndarray, rng) -> np.ndarray:
    """A false mitochondrion: an ellipse of the image's median object area on background, 20 px from any object."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    area = float(np.median(stats[1:, cv2.CC_STAT_AREA])) if count > 1 else 3000.0
    ratio = rng.uniform(1.2, 2.0)
    a, b = np.sqrt(area * ratio / np.pi), np.sqrt(area / ratio / np.pi)
    far = cv2.dilate(mask, np.ones((41, 41), np.uint8)) == 0
    h, w = mask.shape
    for _ in range(200):
        x, y = int(rng.uniform(a, w - a)), int(rng.uniform(a, h - a))
        blob = np.zeros_like(mask)
        cv2.ellipse(blob, (x, y), (int(a), int(b)), float(rng.uniform(0, 180)), 0, 360, 1, -1)
        if far[blob > 0].all():
            return np.maximum(mask, blob)
    raise RuntimeError("no free background for a false mitochondrion")


def run_seed(names: list[str], n_images: int, share: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(names, n_images, replace=False))
    images, masks = load(chosen)
    n_bad = max(1, round(share * n_images))
    bad = rng.choice(n_images, n_bad, replace=False)
    kinds = {}
    for j, i in enumerate(bad):
        kinds[int(i)] = "erased" if j % 2 == 0 else "added"
        masks[i] = erase(masks[i], rng) if kinds[int(i)] == "erased" else add(masks[i], rng)
    start = time.perf_counter()
    maps = cross_fitted_maps(images, masks, 2, folds=3, seed=seed)
    suspects, scores = find_mask_label_issues(maps.labels, maps.proba, ["background", "mitochondrion"],
                                              scale=maps.scale)
    seconds = time.perf_counter() - start
    flagged = {s.index for s in suspects}
    order = list(np.argsort(-scores))
    hits = flagged & set(kinds)
    return {"seed": seed, "images": chosen, "corrupted": {chosen[i]: k for i, k in kinds.items()},
            "flagged": [chosen[i] for i in sorted(flagged)],
            "precision": round(len(hits) / len(flagged), 3) if flagged else None,
            "recall": round(len(hits) / len(kinds), 3),
            "rank_of_corrupted": {chosen[i]: order.index(i) + 1 for i in kinds},
            "scores": {chosen[i]: round(float(scores[i]), 4) for i in order},
            "reasons": {chosen[s.index]: s.reason for s in suspects},
            "seconds": round(seconds, 1), "seconds_per_image": round(seconds / n_images, 2),
            "tp": len(hits), "fp": len(flagged - set(kinds)), "fn": len(set(kinds) - flagged)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--share", type=float, default=0.1, help="share of the images corrupted")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "label_quality_masks.json")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"Lucchi not found at {DATA}")
    names = sorted(p.name for p in (DATA / "masks").glob("*.png"))
    runs = []
    for seed in args.seeds:
        result = run_seed(names, args.images, args.share, seed)
        runs.append(result)
        print(json.dumps({k: result[k] for k in ("seed", "corrupted", "flagged", "precision", "recall",
                                                  "rank_of_corrupted", "seconds_per_image")}), flush=True)
    tp, fp, fn = (sum(r[k] for r in runs) for k in ("tp", "fp", "fn"))
    report = {"images_per_seed": args.images, "share": args.share, "seeds": args.seeds, "max_pixels": MAX_PIXELS,
              "precision": round(tp / (tp + fp), 3) if tp + fp else None, "recall": round(tp / (tp + fn), 3),
              "seconds_per_image": round(sum(r["seconds"] for r in runs) / (args.images * len(runs)), 2),
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
              "cpu": platform.processor() or platform.machine(), "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}))


if __name__ == "__main__":
    main()
