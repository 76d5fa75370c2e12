"""Benchmark: a chain of micro-models (one per class) against the one classifier, on the same few labels (issue 20).

    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/micro_models.py                      # both datasets, 3 seeds
    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/micro_models.py --dataset clothing10 --per-class 10 --seeds 0 1

clothing10 (1,501 photos, 10 classes, multi-class) and coco128 (256 photos, multi-label: the classes present in each
image, multilabel_from_detection.csv). Per seed, N labelled examples per class are drawn (clothing10: N items of
each class; coco128: images are added, rarest class first, until every class has N labelled positives), every
other item is unlabelled. coco128 is small (76 classes, all but 'person' on 26 images or fewer): only the classes
on at least N + 5 images take part (so that some of their images stay unlabelled); the others are left out of
both models and of the figures. On the same labels:
- the chain: one `MicroModel` per class with at least --min-examples labelled positives (ml/micro.py: cross-fitted
  held-out scores, a threshold for the target precision), merged by the project kind's rule (multi-class: the
  passing class with the highest calibrated chance, none when no class passes; multi-label: every passing class);
- the single model: one `PreLabeller` over all classes (the `classifier` model kind).
Figures on the unlabelled items, against the dataset's own labels (never seen by the calibration): classes with a
calibrated threshold, precision of the pre-labels, coverage (share of unlabelled items with a pre-label; multi-label
also the share of true labels pre-labelled), and the cost of scoring the unlabelled items (the embeddings are
shared: both read the same cached lite2 ImageNet logits, so the embedding time is reported once, per image).

Embeddings come from benchmarks/classifier_clothing10.py's cache (--cache, computed there or here on first use).

`--dataset coco128-boxes [options of benchmarks/micro_boxes.py]` runs the detection comparison instead: a chain of
one-class detectors (person, car and a rare class) against one detector of those classes (benchmarks/micro_boxes.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from classifier_clothing10 import DATA, embeddings  # noqa: E402

ENCODER = "tf_efficientnet_lite2"


def load(name: str) -> tuple[list[Path], np.ndarray, list[str], bool]:
    """(files, truths, class names, multilabel): class indices (clothing10) or an N×K 0/1 matrix (coco128)."""
    if name == "clothing10":
        files = sorted((DATA / name).glob("images/*/*.jpg"))
        classes = sorted({f.parent.name for f in files})
        return files, np.array([classes.index(f.parent.name) for f in files]), classes, False
    if name == "coco128":
        import csv

        base = DATA / name
        files = sorted(base.glob("images/*/*.jpg"))
        with (base / "multilabel_from_detection.csv").open() as handle:
            labels = {row["image"]: [c for c in row["labels"].split(";") if c] for row in csv.DictReader(handle)}
        classes = sorted({c for cs in labels.values() for c in cs})
        y = np.zeros((len(files), len(classes)), np.int64)
        for n, f in enumerate(files):
            for c in labels[f.relative_to(base).as_posix()]:
                y[n, classes.index(c)] = 1
        return files, y, classes, True
    raise SystemExit(f"unknown dataset {name!r}: clothing10 or coco128")


def labelled_subset(y: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """N labelled examples per class (multi-label: images added, rarest class first, until each class has N)."""
    rng = np.random.default_rng(seed)
    labelled = np.zeros(len(y), bool)
    if y.ndim == 1:
        for k in np.unique(y):
            members = np.flatnonzero(y == k)
            rng.shuffle(members)
            labelled[members[:per_class]] = True
        return labelled
    for k in np.argsort(y.sum(axis=0), kind="stable"):
        members = np.flatnonzero(y[:, k] > 0)
        rng.shuffle(members)
        for i in members:
            if y[labelled, k].sum() >= per_class:
                break
            labelled[i] = True
    return labelled


def per_class(accepted: np.ndarray, truth: np.ndarray, multilabel: bool, target: float) -> dict:
    """Classes with pre-labels, and those whose pre-labels reach the target precision on the unlabelled items."""
    right = accepted & (truth > 0) if multilabel else accepted & (truth[:, None] == np.arange(accepted.shape[1]))
    made = accepted.sum(axis=0)
    precision = np.where(made > 0, right.sum(axis=0) / np.maximum(made, 1), np.nan)
    return {"classes_prelabelled": int((made > 0).sum()), "classes_at_target": int(np.sum(precision >= target)),
            "class_precision_min": round(float(np.nanmin(precision)), 4) if (made > 0).any() else None}


def figures(accepted: np.ndarray, truth: np.ndarray, multilabel: bool, target: float = 0.95) -> dict:
    """Precision, coverage of the pre-labels (N×K accepted) against the truth of the unlabelled items."""
    items = accepted.any(axis=1)
    classes = per_class(accepted, truth, multilabel, target)
    if multilabel:
        right = accepted & (truth > 0)
        labels = int(accepted.sum())
        return {**classes, "prelabels": labels,
                "precision": round(float(right.sum() / labels), 4) if labels else None,
                "coverage": round(float(items.mean()), 4),
                "label_coverage": round(float(right.sum() / max(truth.sum(), 1)), 4)}
    chosen = accepted.argmax(axis=1)
    correct = (chosen == truth)[items]
    return {**classes, "prelabels": int(items.sum()),
            "precision": round(float(correct.mean()), 4) if items.any() else None,
            "coverage": round(float(items.mean()), 4)}


def run_chain(Z, y, labelled, names, multilabel, target, min_examples, seed) -> dict:
    from labelloop.ml.micro import ChainScorer, MicroModel, merge_multiclass, merge_multilabel

    Y = y if multilabel else np.eye(len(names), dtype=np.int64)[y]
    L, U = Z[labelled], Z[~labelled]
    started = time.perf_counter()
    models = {}
    for k, name in enumerate(names):
        positives = int(Y[labelled, k].sum())
        if positives < min_examples or positives == labelled.sum():
            continue
        models[k] = MicroModel(name, target_precision=target, random_state=seed).fit(L, Y[labelled, k], U)
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    # As the chain job scores: every micro-model in one matrix product, chances only where a class passes.
    scorer = ChainScorer(list(models.values()))
    columns = list(models)
    scores, chances = np.zeros((len(U), len(names))), np.full((len(U), len(names)), np.nan)
    thresholds = np.full(len(names), np.inf)
    thresholds[columns] = scorer.thresholds()
    scores[:, columns] = scorer.scores(U)
    passing = merge_multilabel(scores, thresholds)
    chances[:, columns] = scorer.chances(scores[:, columns], passing[:, columns])
    if multilabel:
        accepted = merge_multilabel(scores, thresholds)
    else:
        winner = merge_multiclass(scores, thresholds, chances)
        accepted = np.zeros_like(scores, bool)
        accepted[np.flatnonzero(winner >= 0), winner[winner >= 0]] = True
    predict_seconds = time.perf_counter() - started
    return {"micro_models": len(models), "classes_ready": int(np.isfinite(thresholds).sum()),
            **figures(accepted, y[~labelled], multilabel, target),
            "train_seconds": round(train_seconds, 3), "predict_seconds": round(predict_seconds, 4)}


def run_single(Z, y, labelled, names, multilabel, target, seed) -> dict:
    from labelloop.ml.classifier import EmbeddingClassifier, PreLabeller

    L, U = Z[labelled], Z[~labelled]
    started = time.perf_counter()
    model = PreLabeller(EmbeddingClassifier(multilabel=multilabel, random_state=seed), tuple(names), multilabel,
                        target_precision=target, random_state=seed).fit(L, y[labelled], U)
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    _, accepted = model.prelabel(U)
    predict_seconds = time.perf_counter() - started
    return {"classes_ready": int(np.isfinite(model.thresholds_).sum()),
            **figures(accepted, y[~labelled], multilabel, target),
            "train_seconds": round(train_seconds, 3), "predict_seconds": round(predict_seconds, 4)}


def main() -> list[dict]:
    if sys.argv[1:3] == ["--dataset", "coco128-boxes"]:  # the detection comparison: its own options
        from micro_boxes import main as boxes

        return [boxes(sys.argv[3:])]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", nargs="+", default=["clothing10", "coco128"])
    parser.add_argument("--per-class", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--seeds", type=int, nargs=2, default=[0, 3], metavar=("FIRST", "STOP"))
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--min-examples", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/labelloop-embeddings"))
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from labelloop.ml.embeddings import imagenet_logits

    results = []
    for name in args.dataset:
        files, y_all, names_all, multilabel = load(name)
        X, seconds = embeddings(name, files, ENCODER, args.cache)
        Z = imagenet_logits(X, ENCODER)
        for per_class in args.per_class:
            y, names = y_all, names_all
            if multilabel:
                taking = np.flatnonzero(y_all.sum(axis=0) >= per_class + 5)
                y, names = y_all[:, taking], [names_all[k] for k in taking]
            for seed in range(*args.seeds):
                labelled = labelled_subset(y, per_class, seed)
                row = {"dataset": name, "per_class": per_class, "seed": seed, "labelled": int(labelled.sum()),
                       "unlabelled": int((~labelled).sum()), "classes": len(names),
                       "chain": run_chain(Z, y, labelled, names, multilabel, args.target, args.min_examples, seed),
                       "single": run_single(Z, y, labelled, names, multilabel, args.target, seed)}
                results.append(row)
                print(json.dumps(row), flush=True)
    print(f"\n| dataset | labels/class | seed | labelled / unlabelled | classes with pre-labels (at >= {args.target:g}) "
          f"chain; single | precision chain / single | coverage chain / single | scoring ms chain / single |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        c, s = r["chain"], r["single"]
        cover = f"{c['coverage']:.1%} / {s['coverage']:.1%}"
        if r["dataset"] == "coco128":
            cover += f" (labels {c['label_coverage']:.1%} / {s['label_coverage']:.1%})"
        print(f"| {r['dataset']} | {r['per_class']} | {r['seed']} | {r['labelled']} / {r['unlabelled']} | "
              f"{c['classes_prelabelled']} ({c['classes_at_target']}); {s['classes_prelabelled']} "
              f"({s['classes_at_target']}) of {r['classes']} | {c['precision']} / {s['precision']} | {cover} | "
              f"{1000 * c['predict_seconds']:.1f} / {1000 * s['predict_seconds']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    sys.exit(main() and 0)
