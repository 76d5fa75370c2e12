"""Benchmark: box label errors on raccoon (issue 21) — 10 % of the boxes removed, 10 % shifted by half their size.

    .venv/bin/python benchmarks/label_quality_boxes.py --threads 1          # 100 images, ~500 detector steps

A seeded 100 of the 200 photos, with errors injected into their boxes (seeded): 10 % of all boxes removed, another
10 % shifted by half their width or height (kept inside the image). The detector is trained as the product trains
it on those labels (20 % held out; the held-out images hold too few boxes, so 3 calibration folds run, each on the
others' labels), so every image gets an out-of-sample prediction: the held-out ones from the network, the rest
from the fold that did not train on them. `find_box_label_issues` then flags images, twice on the same predictions:
with cleanlab's checks only (`cleanlab`), and with the box classifier's reading of each labelled box as drawn too
(`with_drawn`, the product's default since 2026-12-07). Reported for each: for removed and for shifted boxes, the
recall of the images that carry one (flagged at all, and flagged with the right kind); the precision of the flags
(flagged images that carry an injected error); the precision-recall of the image scores.
The main network trains a fixed number of steps (`--steps`), so the figures do not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import pickle
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detector_raccoon import DATA, ROOT, held_out, load  # noqa: E402


def inject(targets: list[dict], images: list[np.ndarray], share: float, seed: int):
    """Copies of `targets` with `share` of all boxes removed and another `share` shifted by half their size;
    per image the set of errors it carries."""
    rng = np.random.default_rng(seed)
    where = [(i, j) for i, t in enumerate(targets) for j in range(len(t["boxes"]))]
    chosen = rng.permutation(len(where))
    count = round(share * len(where))
    removed = {where[k] for k in chosen[:count]}
    shifted = {where[k] for k in chosen[count:2 * count]}
    out, errors = [], [set() for _ in targets]
    for i, t in enumerate(targets):
        height, width = images[i].shape[:2]
        boxes, labels = [], []
        for j, (box, label) in enumerate(zip(t["boxes"], t["labels"])):
            box = np.array(box, float)
            if (i, j) in removed:
                errors[i].add("removed")
                continue
            if (i, j) in shifted:
                errors[i].add("shifted")
                w, h = box[2] - box[0], box[3] - box[1]
                dx, dy = (w / 2, 0.0) if rng.random() < 0.5 else (0.0, h / 2)
                sign = rng.choice([-1, 1])
                if box[0] + sign * dx < 0 or box[2] + sign * dx > width:
                    sign = -sign
                if box[1] + sign * dy < 0 or box[3] + sign * dy > height:
                    sign = -sign
                box = box + sign * np.array([dx, dy, dx, dy])
                box = np.clip(box, 0, [width, height, width, height])
            boxes.append(box)
            labels.append(label)
        out.append({"boxes": np.array(boxes, float).reshape(-1, 4), "labels": np.array(labels, int)})
    return out, errors


def figures(suspects, quality: np.ndarray, errors: list[set]) -> dict:
    """Recall per injected kind (flagged, and flagged as that kind), precision of the flags, AP of the scores."""
    from sklearn.metrics import average_precision_score

    flagged = {s.index: s for s in suspects}
    out = {"flagged": len(suspects)}
    for name in ("removed", "shifted"):
        carrying = [i for i, e in enumerate(errors) if name in e]
        kind = "overlooked" if name == "removed" else "badloc"
        out[name] = {"images": len(carrying), "recall": round(np.mean([i in flagged for i in carrying]), 4),
                     "recall_right_kind": round(np.mean([i in flagged and flagged[i].kind == kind
                                                         for i in carrying]), 4)}
    out["precision"] = round(np.mean([bool(errors[i]) for i in flagged]), 4) if flagged else None
    truth = np.array([bool(e) for e in errors])
    out["average_precision"] = round(float(average_precision_score(truth, 1 - quality)), 4)
    out["kinds"] = {k: sum(s.kind == k for s in suspects) for k in ("overlooked", "badloc", "swap")}
    out["top"] = [{"index": s.index, "score": s.score, "kind": s.kind, "reason": s.reason,
                   "injected": sorted(errors[s.index])} for s in suspects[:15]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--steps", type=int, default=200, help="the main network's steps (batch 4); folds: half")
    parser.add_argument("--share", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "label_quality_boxes.json")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"raccoon not found at {DATA}")
    from labelloop.ml.detection import BoxDetector
    from labelloop.ml.detection.label_issues import find_box_label_issues

    paths = sorted((DATA / "images").glob("*.jpg"), key=lambda p: int(p.stem.split("-")[1]))
    order = np.random.default_rng(args.seed + 7).permutation(len(paths))[:args.images]
    images, clean = load([paths[i] for i in order])
    noisy, errors = inject(clean, images, args.share, args.seed)
    hold = sorted(set(held_out(len(images), args.seed).tolist()))
    fit_i = [i for i in range(len(images)) if i not in hold]
    per_epoch = -(-len(fit_i) // 4)
    detector = BoxDetector(1, epochs=max(1, round(args.steps / per_epoch)), eval_period=10_000, seed=args.seed,
                           threads=args.threads, calibration_folds=3, target_precision=0.9)
    started = time.perf_counter()
    detector.fit([images[i] for i in fit_i], [noisy[i] for i in fit_i], [images[i] for i in hold],
                 [noisy[i] for i in hold],
                 on_progress=lambda d, t, m: print(f"\r  {m} {d}/{t}", end="", file=sys.stderr, flush=True))
    wall = time.perf_counter() - started
    preds, drawn = [None] * len(images), [None] * len(images)
    for i, p, c in zip(hold, detector.held_out_[0], detector.held_out_drawn_):
        preds[i], drawn[i] = p, c
    for k, p, c in zip(detector.cv_[2]["order"], detector.cv_[0], detector.cv_[2]["drawn"]):
        preds[fit_i[k]], drawn[fit_i[k]] = p, c
    args.out.parent.mkdir(parents=True, exist_ok=True)  # what the training gave, kept before anything reads it
    args.out.with_suffix(".pkl").write_bytes(pickle.dumps({"noisy": noisy, "clean": clean, "errors": errors,
                                                           "preds": preds, "drawn": drawn}))
    report = {"cpu": platform.processor() or platform.machine(), "threads": args.threads, "seed": args.seed,
              "images": len(images), "boxes": int(sum(len(t["boxes"]) for t in clean)), "steps": args.steps,
              "wall_s": round(wall, 1), "detector": detector.summary_}
    kept = {}
    for variant, read in (("cleanlab", None), ("with_drawn", drawn)):
        suspects, quality = find_box_label_issues(noisy, preds, ["raccoon"], read)
        report[variant] = figures(suspects, quality, errors)
        kept[variant] = quality
    args.out.write_text(json.dumps(report, indent=1, default=float))
    args.out.with_suffix(".pkl").write_bytes(pickle.dumps({"noisy": noisy, "clean": clean, "errors": errors,
                                                           "preds": preds, "drawn": drawn, "quality": kept}))
    print(file=sys.stderr)
    print(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
