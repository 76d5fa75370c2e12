"""Benchmark: a chain of box micro-models (one one-class detector per class) against one detector of the same
classes, on the same labelled images and the same training steps (issue 20, coco128 detection).

    OMP_NUM_THREADS=2 nice .venv/bin/python benchmarks/micro_models.py --dataset coco128-boxes --epochs 3
    OMP_NUM_THREADS=2 nice .venv/bin/python benchmarks/micro_boxes.py --classes person car clock --epochs 3

coco128's YOLO boxes (object_detection/labels): the 128 train2017 images holding a box of one of the classes are the
labelled images (as in a detection project whose classes are these: an image with none of them has no label); the
128 val2017 images are the unlabelled ones the figures are measured on, against their own boxes. On the same
labelled images, as the product trains them (services/assist/micro_boxes.py, model_kinds/detector.py):
- the chain: per class a `BoxDetector(1)` on that class's boxes (the other labelled images as negatives), a seeded
  20 % of the images holding the class and of the others held out, the threshold chosen on them for the target;
  merged per image (ml.micro_boxes.merge_detections: same class at IoU >= 0.5, the higher score stays);
- the single detector: one `BoxDetector(K)`, a seeded 20 % of the labelled images held out, a threshold per class
  where a class has >= 30 held-out boxes, else the one for all classes.
Every detector trains the same --epochs at the same sizes (the chain trains K times as many steps in all).
Calibration folds are off (`--calibration-folds 0`) unless asked: they would add 1.5x each model's training.
Figures on val2017 per class: AP@0.5 of the scores; at the calibrated threshold, pre-labels, precision, recall;
and the seconds to train and to predict the 128 images (chain: K detector passes per image).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DATA = ROOT.parent / "shared" / "data" / "coco128"


def load(split: str, classes: list[str]) -> tuple[list[np.ndarray], list[dict], list[str]]:
    """(images, truths with labels 1..K, file names) of a coco128 split, boxes of `classes` only, in pixels."""
    import yaml

    names = yaml.safe_load((DATA / "object_detection" / "config.yaml").read_text())["names"]
    index = {name: k + 1 for k, name in enumerate(classes)}
    wanted = {c: index[n] for c, n in names.items() if n in index}
    images, truths, files = [], [], []
    for path in sorted((DATA / "images" / split).glob("*.jpg")):
        label_file = DATA / "object_detection" / "labels" / split / f"{path.stem}.txt"
        rows = [line.split() for line in label_file.read_text().splitlines() if line.strip()] \
            if label_file.exists() else []
        image = np.asarray(Image.open(path).convert("RGB"))
        h, w = image.shape[:2]
        boxes, labels = [], []
        for c, cx, cy, bw, bh in ((int(r[0]), *map(float, r[1:5])) for r in rows):
            if c in wanted:
                boxes.append([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h])
                labels.append(wanted[c])
        images.append(image)
        truths.append({"boxes": np.array(boxes, float).reshape(-1, 4), "labels": np.array(labels, int)})
        files.append(path.name)
    return images, truths, files


def split_held_out(n: int, held: np.ndarray) -> tuple[list[int], list[int]]:
    held = set(np.asarray(held).tolist())
    return [i for i in range(n) if i not in held], sorted(held)


def train(n_classes: int, images, truths, held: np.ndarray, options: dict) -> tuple[object, float]:
    from labelloop.ml.detection.detector import BoxDetector

    fit, test = split_held_out(len(images), held)
    detector = BoxDetector(n_classes, **options).validate_params()
    started = time.perf_counter()
    detector.fit([images[i] for i in fit], [truths[i] for i in fit], [images[i] for i in test],
                 [truths[i] for i in test])
    return detector, time.perf_counter() - started


def scores_on(found: list[dict], truths: list[dict], k: int, threshold: float | None) -> dict:
    """Class k's figures on the test images: AP@0.5 of every box, and at the threshold pre-labels, precision, recall."""
    from labelloop.ml.detection.evaluation import coco_map, match

    pred = [{"boxes": f["boxes"][f["labels"] == k], "labels": np.ones(int((f["labels"] == k).sum()), int),
             "scores": f["scores"][f["labels"] == k]} for f in found]
    truth = [{"boxes": t["boxes"][t["labels"] == k], "labels": np.ones(int((t["labels"] == k).sum()), int)}
             for t in truths]
    out = {"truths": int(sum(len(t["labels"]) for t in truth)), "ap50": coco_map(pred, truth, 1)["map50"],
           "threshold": None if threshold is None else round(float(threshold), 4), "prelabels": 0,
           "precision": None, "recall": None}
    if threshold is None:
        return out
    kept = [{k2: v[p["scores"] >= threshold] for k2, v in p.items()} for p in pred]
    right = found_truths = 0
    for p, t in zip(kept, truth):
        matched, taken = match(p, t, 0.5)
        right += int((matched > 0).sum())
        found_truths += int(taken.sum())
    calls = int(sum(len(p["scores"]) for p in kept))
    out.update(prelabels=calls, precision=round(right / calls, 4) if calls else None,
               recall=round(found_truths / out["truths"], 4) if out["truths"] else None)
    return out


def main(argv: list[str] | None = None) -> dict:
    from labelloop.ml.micro_boxes import held_out_images, merge_detections

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", nargs="+", default=["person", "car", "clock"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--min-size", type=int, default=320)
    parser.add_argument("--max-size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--calibration-folds", default="0")
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    classes = args.classes
    folds = args.calibration_folds if args.calibration_folds == "auto" else int(args.calibration_folds)
    options = {"epochs": args.epochs, "min_size": args.min_size, "max_size": args.max_size,
               "batch_size": args.batch_size, "eval_period": 1_000_000, "calibration_folds": folds,
               "target_precision": args.target, "seed": args.seed}
    images, truths, _ = load("train2017", classes)
    labelled = [i for i, t in enumerate(truths) if len(t["labels"])]
    images, truths = [images[i] for i in labelled], [truths[i] for i in labelled]
    test_images, test_truths, _ = load("val2017", classes)
    print(f"{len(images)} labelled train2017 images, {len(test_images)} val2017 images; classes {classes}; "
          f"{args.epochs} epochs at {args.min_size}-{args.max_size} px; load {os.getloadavg()[0]:.1f}", flush=True)
    report: dict = {"classes": classes, "settings": {**options, "labelled": len(images), "test": len(test_images)},
                    "chain": {}, "single": {}, "load_before": round(os.getloadavg()[0], 2)}

    # the single detector
    rng = np.random.default_rng(args.seed)
    held = rng.choice(len(images), size=max(1, round(0.2 * len(images))), replace=False)
    single, seconds = train(len(classes), images, truths, held, options)
    started = time.perf_counter()
    found = single.predict(test_images)
    predict_seconds = time.perf_counter() - started
    report["single"] = {"train_seconds": round(seconds, 1), "predict_seconds": round(predict_seconds, 1),
                        "classes": {c: scores_on(found, test_truths, k, single.threshold_for(k))
                                    for k, c in enumerate(classes, 1)}}
    print("single", json.dumps(report["single"]), flush=True)

    # the chain
    micros, per_model = [], []
    for k, name in enumerate(classes, 1):
        has = np.array([(t["labels"] == k).any() for t in truths])
        one = [{"boxes": t["boxes"][t["labels"] == k], "labels": np.ones(int((t["labels"] == k).sum()), int)}
               for t in truths]
        held = held_out_images(has, 0.2, args.seed)
        detector, seconds = train(1, images, one, held, options)
        micros.append(detector)
        per_model.append({"class": name, "examples": int(has.sum()), "train_seconds": round(seconds, 1),
                          "held_out_threshold": detector.threshold_for(1),
                          "held_out_reason": (detector.thresholds_.get(0).reason if detector.thresholds_.get(0)
                                              else "")})
        print("micro", json.dumps(per_model[-1]), flush=True)
    started = time.perf_counter()
    outputs = [m.predict(test_images) for m in micros]
    predict_seconds = time.perf_counter() - started
    thresholds = np.array([np.inf if m.threshold_for(1) is None else m.threshold_for(1) for m in micros])
    merged, raw = [], []
    for n in range(len(test_images)):
        boxes, ks, scores = merge_detections([outputs[k][n] for k in range(len(micros))], thresholds)
        merged.append({"boxes": boxes, "labels": ks + 1, "scores": scores})
        every = [outputs[k][n] for k in range(len(micros))]
        raw.append({"boxes": np.concatenate([e["boxes"].reshape(-1, 4) for e in every]),
                    "labels": np.concatenate([np.full(len(e["scores"]), k + 1) for k, e in enumerate(every)]),
                    "scores": np.concatenate([e["scores"] for e in every])})
    chain_classes = {}
    for k, name in enumerate(classes, 1):
        figures = scores_on(raw, test_truths, k, None)  # AP@0.5 of every box the class's micro-model found
        at = scores_on(merged, test_truths, k, -np.inf if np.isfinite(thresholds[k - 1]) else None)
        chain_classes[name] = {**at, "ap50": figures["ap50"],
                               "threshold": None if np.isinf(thresholds[k - 1]) else round(float(thresholds[k - 1]), 4)}
    report["chain"] = {"train_seconds": round(sum(m["train_seconds"] for m in per_model), 1),
                       "predict_seconds": round(predict_seconds, 1), "models": per_model, "classes": chain_classes}
    report["load_after"] = round(os.getloadavg()[0], 2)
    print("chain", json.dumps(report["chain"]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return report


if __name__ == "__main__":
    main()
