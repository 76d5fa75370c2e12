"""Benchmark: where the detector's pre-label threshold comes from when few labelled images are held out.

    .venv/bin/python benchmarks/detector_calibration.py                  # raccoon, 50 labelled, 3 folds
    .venv/bin/python benchmarks/detector_calibration.py --steps 120 --fold-shares 0.33,0.66

With 50 labelled images the product holds 10 out; ~12 raccoons cannot show precision 0.9 with 0.8 confidence
(16 correct boxes in a row are needed), so no threshold is chosen and no pre-label is shown. Cross-validation adds
evidence: K fold models, each trained on the labelled images less one fold, predict that fold. This run trains the
main model on the 40 (a fixed number of steps, so the figure does not depend on the machine's load), then K fold
models over the 40 training images (each also trains on the 10 held-out ones, so it sees as many images as the main
model), evaluated after each share of the main model's steps in `--fold-shares`. For each evidence set (held-out
only; held-out + out-of-fold at each share) it reports the threshold chosen for target 0.9 and what that threshold
gives the main model on the 60 test images that no choice saw: precision, recall, images whose pre-labels would be
accepted unedited. Raw predictions go to benchmarks/out/detector_calibration.pkl for other rules.
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
from detector_raccoon import DATA, ROOT, held_out, load, prelabel_figures  # noqa: E402


def evidence_threshold(preds, truths, target: float):
    from labelloop.ml.detection.evaluation import choose_threshold, scored_boxes

    scores, correct, _ = scored_boxes(preds, truths)
    return choose_threshold(scores, correct, sum(len(t["boxes"]) for t in truths), target)


def on_test(preds, truths, threshold) -> dict:
    shown = prelabel_figures(preds, truths, threshold)
    return {"precision": round(shown["precision"], 4) if shown["precision"] is not None else None,
            "recall": round(shown["recall"], 4), "accepted_unedited": round(shown["accepted_unedited"], 4),
            "boxes_shown": shown["boxes_shown"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=330, help="the main model's steps (batch 4); 330 is what 15 "
                        "idle minutes gave on the 2-core benchmark machine")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--fold-shares", default="0.33,0.5", help="evaluate the fold models after these shares of "
                        "the main model's steps")
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 on a machine other work shares)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "detector_calibration.json")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"raccoon not found at {DATA}")
    import torch

    from labelloop.ml.detection import BoxDetector

    paths = sorted((DATA / "images").glob("*.jpg"), key=lambda p: int(p.stem.split("-")[1]))
    order = np.random.default_rng(args.seed).permutation(len(paths))
    test_images, test_targets = load([paths[i] for i in order[:60]])
    images, targets = load([paths[i] for i in order[60:110]])
    hold = sorted(set(held_out(len(images), args.seed).tolist()))
    fit_i = [i for i in range(len(images)) if i not in hold]
    progress = lambda d, t, m: print(f"\r  {m} step {d}", end="", file=sys.stderr, flush=True)  # noqa: E731
    report = {"cpu": platform.processor() or platform.machine(), "torch_threads": args.threads or torch.get_num_threads(),
              "seed": args.seed, "steps": args.steps, "folds": args.folds, "target": args.target}

    per_epoch = -(-len(fit_i) // 4)
    main_model = BoxDetector(1, epochs=max(1, round(args.steps / per_epoch)), eval_period=10_000,
                             target_precision=args.target, seed=args.seed, threads=args.threads, calibration_folds=0)
    started = time.perf_counter()
    main_model.fit([images[i] for i in fit_i], [targets[i] for i in fit_i], [images[i] for i in hold],
                   [targets[i] for i in hold], on_progress=progress)
    report["main_wall_s"] = round(time.perf_counter() - started, 1)
    report["main"] = main_model.summary_
    held_preds, held_truths = main_model.held_out_
    test_preds = main_model.predict(test_images)
    from labelloop.ml.detection.evaluation import coco_map

    report["test_map"] = coco_map(test_preds, test_targets, 1)
    raw = {"held": (held_preds, held_truths), "test": (test_preds, test_targets), "oof": {}}

    rng = np.random.default_rng(args.seed + 1)
    folds = np.array_split(rng.permutation(fit_i), args.folds)
    shares = sorted(float(s) for s in args.fold_shares.split(","))
    oof: dict[float, tuple[list, list]] = {s: ([], []) for s in shares}
    fold_steps = [max(1, round(s * args.steps)) for s in shares]
    for k, fold in enumerate(folds):
        train_k = [i for i in fit_i if i not in set(fold.tolist())] + hold
        model = BoxDetector(1, epochs=-(-fold_steps[-1] // -(-len(train_k) // 4)), eval_period=10_000,
                            target_precision=args.target, seed=args.seed + 10 + k, threads=args.threads,
                            calibration_folds=0)
        seen: dict[float, list] = {}

        def snapshot(step_done, total, message, model=model, fold=fold, seen=seen):
            progress(step_done, total, f"fold {k + 1}/{args.folds} {message}")
            for share, steps in zip(shares, fold_steps):
                if step_done >= steps and share not in seen:
                    model.network_.eval()
                    seen[share] = model.predict([images[i] for i in fold])
                    model.network_.train()

        model.fit([images[i] for i in train_k], [targets[i] for i in train_k], on_progress=snapshot)
        for share in shares:
            preds = seen.get(share) or model.predict([images[i] for i in fold])
            oof[share][0].extend(preds)
            oof[share][1].extend(targets[i] for i in fold)
    report["wall_s"] = round(time.perf_counter() - started, 1)
    raw["oof"] = oof

    rows = {"held-out only (10 images)": (held_preds, held_truths)}
    for share in shares:
        rows[f"held-out + {args.folds}-fold out-of-fold at {share:g} of the steps (50 images)"] = (
            list(held_preds) + oof[share][0], list(held_truths) + oof[share][1])
        rows[f"out-of-fold only at {share:g} (40 images)"] = oof[share]
    report["rules"] = {}
    for name, (preds, truths) in rows.items():
        found = evidence_threshold(preds, truths, args.target)
        report["rules"][name] = {"threshold": found.to_dict(), "test": on_test(test_preds, test_targets,
                                                                               found.threshold),
                                 "evidence_map": coco_map(preds, truths, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=float))
    args.out.with_suffix(".pkl").write_bytes(pickle.dumps(raw))
    print(file=sys.stderr)
    print(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
