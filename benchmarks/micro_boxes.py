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
- the shared chain (`--base shared-detector`): one class-agnostic `BoxDetector(1)` on every labelled box, a seeded
  20 % of the images held out, and per class a `SharedBoxHead` (a logistic regression on its box features) whose
  threshold is chosen on the held-out images (with cross-fitted heads on the training images when those hold
  < 30 boxes of the class); one detector pass per image, each box given to the passing class with the top score.
Every detector trains the same --epochs at the same sizes (the chain trains K times as many steps in all).
Calibration folds are off (`--calibration-folds 0`) unless asked: they would add 1.5x each model's training.
Figures on val2017 per class: AP@0.5 of the scores; at the calibrated threshold, pre-labels, precision, recall;
and the seconds to train and to predict the 128 images (chain: K detector passes per image). The prediction
times are then taken again --repeats times, the three models interleaved in one process, and their medians and
ratios to the single detector reported (`predict_ratio`).
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


def shared_chain(images, truths, classes: list[str], options: dict, seed: int):
    """The shared detector (every box as one class "object") and a head per class, as the product trains them
    (services/assist/micro_boxes.SharedTrunk and train_shared_class)."""
    from labelloop.ml.detection.detector import BoxDetector
    from labelloop.ml.micro_boxes import SharedBoxHead, held_out_images, object_samples

    held = held_out_images(np.array([len(t["labels"]) > 0 for t in truths]), 0.2, seed)
    fit, test = split_held_out(len(images), held)
    agnostic = [{"boxes": t["boxes"], "labels": np.ones(len(t["labels"]), int)} for t in truths]
    detector = BoxDetector(1, **{**options, "calibration_folds": 0}).validate_params()
    started = time.perf_counter()
    detector.fit([images[i] for i in fit], [agnostic[i] for i in fit], [images[i] for i in test],
                 [agnostic[i] for i in test])
    trunk_seconds = time.perf_counter() - started
    started = time.perf_counter()
    train_found = detector.predict_with_features([images[i] for i in fit], given=[truths[i]["boxes"] for i in fit])
    held_found = detector.predict_with_features([images[i] for i in test])
    samples = object_samples(train_found, [[classes[k - 1] for k in truths[i]["labels"]] for i in fit],
                             [truths[i]["boxes"] for i in fit])
    heads, per_class = [], []
    for k, name in enumerate(classes, 1):
        own = [truths[i]["boxes"][truths[i]["labels"] == k] for i in range(len(truths))]
        head = SharedBoxHead(name, "benchmark", options["target_precision"], seed=seed).fit(
            samples, held_found, [own[i] for i in test], train_found, [own[i] for i in fit])
        heads.append(head)
        figures = head.figures()
        per_class.append({"class": name, "held_out_threshold": figures["threshold"],
                          "held_out_ap50": figures["average_precision"], "held_out_reason": figures["reason"],
                          "calibrated_on": figures["calibrated_on"]})
        print("head", json.dumps(per_class[-1]), flush=True)
    heads_seconds = time.perf_counter() - started
    return detector, heads, {"train_seconds": round(trunk_seconds + heads_seconds, 1),
                             "detector_seconds": round(trunk_seconds, 1), "heads_seconds": round(heads_seconds, 1),
                             "detector_map50_held_out": detector.history_["map50"][-1], "models": per_class}


def predict_shared(detector, heads, images) -> list[list[dict]]:
    """Per head, per image: the shared detector's boxes scored by the head (one detector pass per image); each box
    kept for the passing head with the top score (ml.micro_boxes.exclusive)."""
    from labelloop.ml.micro_boxes import exclusive

    found = detector.predict_with_features(images)
    scored = [h.score(found) for h in heads]
    thresholds = np.array([np.inf if h.threshold_ is None else h.threshold_ for h in heads])
    for n in range(len(images)):
        for s, scores in zip(scored, exclusive([s[n]["scores"] for s in scored], thresholds)):
            s[n]["scores"] = scores
    return scored


def merge_all(outputs: list[list[dict]], thresholds: np.ndarray) -> tuple[list[dict], list[dict]]:
    """Per image the chain's merged pre-labels (labels 1..K) and every box it found (for AP)."""
    from labelloop.ml.micro_boxes import merge_detections

    merged, raw = [], []
    for n in range(len(outputs[0])):
        every = [outputs[k][n] for k in range(len(outputs))]
        boxes, ks, scores = merge_detections(every, thresholds)
        merged.append({"boxes": boxes, "labels": ks + 1, "scores": scores})
        finite = [np.isfinite(e["scores"]) for e in every]
        raw.append({"boxes": np.concatenate([e["boxes"].reshape(-1, 4)[f] for e, f in zip(every, finite)]),
                    "labels": np.concatenate([np.full(int(f.sum()), k + 1) for k, f in enumerate(finite)]),
                    "scores": np.concatenate([e["scores"][f] for e, f in zip(every, finite)])})
    return merged, raw


def main(argv: list[str] | None = None) -> dict:
    from labelloop.ml.micro_boxes import held_out_images

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", nargs="+", default=["person", "car", "clock"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--min-size", type=int, default=320)
    parser.add_argument("--max-size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--calibration-folds", default="0")
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved prediction timings of the three")
    parser.add_argument("--skip-chain", action="store_true",
                        help="no chain of one-class detectors (K trainings): the single detector and the shared one")
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
    for k, name in enumerate([] if args.skip_chain else classes, 1):
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
    merged, raw = merge_all(outputs, thresholds) if micros else ([], [])
    chain_classes = {}
    for k, name in enumerate([] if args.skip_chain else classes, 1):
        figures = scores_on(raw, test_truths, k, None)  # AP@0.5 of every box the class's micro-model found
        at = scores_on(merged, test_truths, k, -np.inf if np.isfinite(thresholds[k - 1]) else None)
        chain_classes[name] = {**at, "ap50": figures["ap50"],
                               "threshold": None if np.isinf(thresholds[k - 1]) else round(float(thresholds[k - 1]), 4)}
    report["chain"] = {"train_seconds": round(sum(m["train_seconds"] for m in per_model), 1),
                       "predict_seconds": round(predict_seconds, 1), "models": per_model, "classes": chain_classes}
    print("chain", json.dumps(report["chain"]), flush=True)

    # the shared chain
    shared, heads, report["shared"] = shared_chain(images, truths, classes, options, args.seed)
    shared_predict = lambda: predict_shared(shared, heads, test_images)  # noqa: E731
    started = time.perf_counter()
    scored = shared_predict()
    predict_seconds = time.perf_counter() - started
    thresholds = np.array([np.inf if h.threshold_ is None else h.threshold_ for h in heads])
    merged, raw = merge_all(scored, thresholds)
    report["shared"].update(predict_seconds=round(predict_seconds, 1), classes={
        name: {**scores_on(merged, test_truths, k, -np.inf if np.isfinite(thresholds[k - 1]) else None),
               "ap50": scores_on(raw, test_truths, k, None)["ap50"],
               "threshold": None if np.isinf(thresholds[k - 1]) else round(float(thresholds[k - 1]), 4)}
        for k, name in enumerate(classes, 1)})
    print("shared", json.dumps(report["shared"]), flush=True)

    # prediction times side by side: the three interleaved, --repeats rounds
    runs: dict[str, list[float]] = {"single": [], "chain": [], "shared": []}
    jobs = {"single": lambda: single.predict(test_images), "chain": lambda: [m.predict(test_images) for m in micros],
            "shared": shared_predict}
    if args.skip_chain:
        del jobs["chain"], runs["chain"]
    for _ in range(args.repeats):
        for key, job in jobs.items():
            started = time.perf_counter()
            job()
            runs[key].append(time.perf_counter() - started)
    medians = {k: float(np.median(v)) for k, v in runs.items()}
    report["predict_repeats"] = {k: [round(x, 2) for x in v] for k, v in runs.items()}
    report["predict_ratio"] = {k: round(v / medians["single"], 3) for k, v in medians.items()}
    print("predict seconds", json.dumps(report["predict_repeats"]), "ratio", json.dumps(report["predict_ratio"]),
          flush=True)
    report["load_after"] = round(os.getloadavg()[0], 2)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return report


if __name__ == "__main__":
    main()
