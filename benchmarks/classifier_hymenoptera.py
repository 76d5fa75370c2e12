"""Benchmark: calibrated pre-labels on hymenoptera (ants/bees) and multi-label coco128.

    .venv/bin/python benchmarks/classifier_hymenoptera.py                 # both datasets, targets 0.95 and 0.98
    .venv/bin/python benchmarks/classifier_hymenoptera.py --skip-coco --labelled 0.5

hymenoptera: a seeded --labelled share of train (stratified by class) is imported with its labels, the rest of
train and all of val without. `labelloop embed`, `train --model classifier`, then `predict --target-precision T`
over every unlabelled item. Reported per target: the precision actually achieved on the items that got a
pre-label (against the folder labels), coverage (share of unlabelled items pre-labelled), and the same on val
alone. coco128: the same with multilabel_from_detection.csv (precision over pre-label shapes, coverage = items
with at least one pre-label). Everything goes through the services a CLI call uses, on a fresh workspace.
A sweep then repeats the hymenoptera calibration on 20 seeded labelled subsets (20%, 50%, 80% of train) for each
setting (features: ImageNet logits or pooled embeddings; method: estimate or bound) on the cached embeddings, at
the ml level, and prints a markdown table.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _job(workspace, kind: str, **params):
    from labelloop.services.jobs import create_job, run_job

    job = run_job(workspace, create_job(workspace, kind, params))
    if job.state != "done":
        raise SystemExit(f"{kind} failed: {job.error}")
    return job.result


def _labelled_subset(truth: dict[str, list[str]], share: float, seed: int, pool: list[str]) -> set[str]:
    """A seeded share of `pool`, stratified by first label."""
    rng = np.random.default_rng(seed)
    chosen: set[str] = set()
    groups: dict[str, list[str]] = {}
    for name in pool:
        groups.setdefault((truth[name] or [""])[0], []).append(name)
    for members in groups.values():
        members = sorted(members)
        rng.shuffle(members)
        chosen.update(members[: round(len(members) * share)])
    return chosen


def _write_csv(folder: Path, link: Path, truth: dict[str, list[str]], labelled: set[str], splits: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").symlink_to(link)
    with (folder / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "labels", "split"])
        for name in sorted(truth):
            writer.writerow([f"data/{name}", ";".join(truth[name]) if name in labelled else "", splits[name]])
    return folder / "labels.csv"


def _achieved(workspace, project_name: str, truth: dict[str, list[str]], only_split: str | None = None) -> dict:
    """Precision of the pre-labels against the truth, and coverage, over the unlabelled items."""
    from sqlalchemy import select

    from labelloop.services.labelling.annotations import latest_for_items
    from labelloop.services.assist.predictions import latest_predictions_for_items
    from labelloop.services.projects import get_project
    from labelloop.store.tables import ItemRow

    with workspace.session() as session:
        project = get_project(session, project_name)
        items = session.scalars(select(ItemRow).where(ItemRow.project_id == project.id)).all()
        annotated = latest_for_items(session, [i.id for i in items])
        predicted = latest_predictions_for_items(session, [i.id for i in items])
    unlabelled = [i for i in items if i.id not in annotated and (only_split is None or i.split == only_split)]
    labels = correct = covered = 0
    for item in unlabelled:
        shapes = predicted[item.id].shapes if item.id in predicted else []
        true = set(truth[item.source.removeprefix("data/")])
        covered += bool(shapes)
        labels += len(shapes)
        correct += sum(s["label"] in true for s in shapes)
    return {"unlabelled": len(unlabelled), "prelabelled_items": covered, "prelabels": labels,
            "precision": round(correct / labels, 4) if labels else None,
            "coverage": round(covered / len(unlabelled), 4) if unlabelled else None}


def run(name: str, kind: str, truth: dict[str, list[str]], splits: dict[str, str], link: Path, classes: list[str],
        share: float, seed: int, targets: list[float], root: Path, eval_split: str, sweep: int = 0) -> dict:
    """One run through the services; `sweep` > 0 adds the ml-level sweep with that many seeds per row."""
    from labelloop.services.data.importing import import_path
    from labelloop.services.projects import create_project
    from labelloop.services.workspace import Workspace

    workspace = Workspace.init(root / name)
    with workspace.session() as session:
        create_project(session, name, kind, classes)
    train_names = [n for n in truth if splits[n] == "train"]
    labelled = _labelled_subset(truth, share, seed, train_names)
    import_path(workspace, name, _write_csv(root / f"{name}-csv", link, truth, labelled, splits), format="csv")
    started = time.perf_counter()
    embedded = _job(workspace, "embed", project=name)
    embed_wall = time.perf_counter() - started
    started = time.perf_counter()
    model = _job(workspace, "train", project=name, model="classifier", seed=seed)
    train_wall = time.perf_counter() - started
    result = {"dataset": name, "labelled": len(labelled), "items": len(truth),
              "embedding": {"images": embedded["computed"], "seconds": round(embed_wall, 2),
                            "images_per_second": embedded["images_per_second"]},
              "train_wall_seconds": round(train_wall, 2),
              "training_seconds": model["metrics"]["training_seconds"],
              "calibration_seconds": model["metrics"]["calibration_seconds"],
              "held_out_accuracy": model["metrics"]["held_out_accuracy"],
              "reliability_plot": model["metrics"]["reliability_plot"], "targets": {}}
    for target in targets:
        started = time.perf_counter()
        summary = _job(workspace, "predict", project=name, model="classifier", target_precision=target)
        result["targets"][str(target)] = {
            "predict_seconds": round(time.perf_counter() - started, 2),
            "thresholds": summary["thresholds"] if kind == "classification" else
            {k: v for k, v in summary["thresholds"].items() if v is not None},
            "classes_without_prelabels": len(summary["no_prelabels"]),
            "all_unlabelled": _achieved(workspace, name, truth),
            eval_split: _achieved(workspace, name, truth, eval_split)}
    if kind == "classification" and sweep:
        started = time.perf_counter()
        result["sweep"] = _sweep(workspace, name, truth, splits, classes, targets, sweep)
        result["sweep_seconds"] = round(time.perf_counter() - started, 1)
    workspace.close()
    return result


def _sweep(workspace, name: str, truth, splits, classes: list[str], targets: list[float], seeds: int = 20) -> list:
    """The same calibration over many seeded labelled subsets, on the cached embeddings (ml level, no database
    writes): how often the achieved precision reaches the target, and the coverage it costs."""
    from sqlalchemy import select

    from labelloop.services.assist.embeddings import load_embeddings
    from labelloop.store.tables import ItemRow

    with workspace.session() as session:
        items = session.scalars(select(ItemRow).order_by(ItemRow.id)).all()
    X = load_embeddings(workspace, [i.id for i in items], "tf_efficientnet_lite0")
    sources = [i.source.removeprefix("data/") for i in items]
    y = np.array([classes.index(truth[s][0]) for s in sources])
    train = np.array([splits[s] == "train" for s in sources])
    return sweep_subsets(X, y, train, classes, targets, seeds)


# (features, calibration method, confidence): the default first; pooled + bound was the default before.
SETTINGS = (("imagenet", "estimate", 0.8), ("imagenet", "auto", 0.8), ("pooled", "estimate", 0.8),
            ("imagenet", "bound", 0.8), ("pooled", "bound", 0.8))


def sweep_subsets(X: np.ndarray, y: np.ndarray, train: np.ndarray, classes: list[str], targets: list[float],
          seeds: int = 20, shares=(0.2, 0.5, 0.8), settings=SETTINGS) -> list[dict]:
    """Per labelled share and setting (features, calibration method, confidence): `seeds` seeded stratified
    labelled subsets of train; the rest of train and all of val are pre-labelled and scored against the truth.
    Nothing about the unlabelled items' labels reaches the calibration."""
    from labelloop.ml.classifier import EmbeddingClassifier, PreLabeller
    from labelloop.ml.embeddings import imagenet_logits

    inputs = {"pooled": X, "imagenet": imagenet_logits(X)}
    rows = []
    for share in shares:
        for features, method, confidence in settings:
            runs: dict[float, list[tuple[float, float]]] = {t: [] for t in targets}
            accuracy = []
            for seed in range(seeds):
                rng = np.random.default_rng(seed)
                labelled = np.zeros(len(y), bool)
                for k in range(len(classes)):
                    members = np.flatnonzero(train & (y == k))
                    rng.shuffle(members)
                    labelled[members[: round(len(members) * share)]] = True
                Z = inputs[features]
                model = PreLabeller(EmbeddingClassifier(), class_names=tuple(classes), confidence=confidence,
                                    method=method, random_state=seed)
                model.fit(Z[labelled], y[labelled], Z[~labelled])
                proba = model.pool_proba_
                right = proba.argmax(axis=1) == y[~labelled]
                accuracy.append(right.mean())
                for target in targets:
                    chosen = model.set_target(target).accept(proba).any(axis=1)
                    runs[target].append((float(right[chosen].mean()) if chosen.any() else float("nan"),
                                         float(chosen.mean())))
            for target, values in runs.items():
                precision, coverage = np.array(values).T
                some = (coverage > 0).any()
                rows.append({"labelled_share": share, "labelled": int(labelled.sum()), "features": features,
                             "method": method, "confidence": confidence, "target": target,
                             "accuracy_mean": round(float(np.mean(accuracy)), 4),
                             "runs_reaching_target": round(float(np.mean(precision >= target)), 2),
                             "runs_reaching_target_and_85pct_coverage":
                                 round(float(np.mean((precision >= target) & (coverage >= 0.85))), 2),
                             "runs_with_prelabels": round(float(np.mean(coverage > 0)), 2),
                             "precision_mean": round(float(np.nanmean(precision)), 4) if some else None,
                             "precision_min": round(float(np.nanmin(precision)), 4) if some else None,
                             "coverage_mean": round(float(coverage.mean()), 4),
                             "coverage_min": round(float(coverage.min()), 4)})
    return rows


def print_sweep(rows: list[dict]) -> None:
    print("| labelled | features | method | target | runs reaching target | and coverage >= 85% | "
          "mean / min precision | mean / min coverage | accuracy |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        precision = (f"{r['precision_mean']:.3f} / {r['precision_min']:.3f}" if r["precision_mean"] is not None
                     else "–")
        print(f"| {r['labelled_share']:.0%} ({r['labelled']}) | {r['features']} | {r['method']} "
              f"{r['confidence']:g} | {r['target']:g} | {r['runs_reaching_target']:.0%} | "
              f"{r['runs_reaching_target_and_85pct_coverage']:.0%} | {precision} | {r['coverage_mean']:.0%} / "
              f"{r['coverage_min']:.0%} | {r['accuracy_mean']:.3f} |", flush=True)


def hymenoptera(args, root: Path) -> dict:
    base = DATA / "hymenoptera"
    truth, splits = {}, {}
    for file in sorted(base.glob("*/*/*")):
        split, label = file.parts[-3], file.parts[-2]
        name = file.relative_to(base).as_posix()
        truth[name], splits[name] = [label], split
    return run("hymenoptera", "classification", truth, splits, base, ["ants", "bees"], args.labelled, args.seed,
               args.targets, root, "val", sweep=0 if args.no_sweep else args.sweep_seeds)


def coco128(args, root: Path) -> dict:
    base = DATA / "coco128"
    truth, splits = {}, {}
    with (base / "multilabel_from_detection.csv").open() as handle:
        for row in csv.DictReader(handle):
            truth[row["image"]] = [c for c in row["labels"].split(";") if c]
            splits[row["image"]] = "train" if row["split"].startswith("train") else "val"
    classes = sorted({c for labels in truth.values() for c in labels})
    return run("coco128", "multilabel", truth, splits, base, classes, args.labelled, args.seed, args.targets, root,
               "val")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labelled", type=float, default=0.2, help="share of train labelled (default 0.2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--targets", type=float, nargs="+", default=[0.95, 0.98])
    parser.add_argument("--skip-coco", action="store_true")
    parser.add_argument("--skip-hymenoptera", action="store_true")
    parser.add_argument("--no-sweep", action="store_true", help="skip the seeded sweep over labelled shares")
    parser.add_argument("--sweep-seeds", type=int, default=20, help="labelled subsets per sweep row (default 20)")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as folder:
        if not args.skip_hymenoptera:
            results.append(hymenoptera(args, Path(folder)))
            table = results[-1].pop("sweep", None)
            print(json.dumps(results[-1], indent=2), flush=True)
            if table:
                print_sweep(table)
        if not args.skip_coco:
            results.append(coco128(args, Path(folder)))
            print(json.dumps(results[-1], indent=2), flush=True)
    return results


if __name__ == "__main__":
    sys.exit(main() and 0)
