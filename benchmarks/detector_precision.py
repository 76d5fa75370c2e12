"""Benchmark: the detector's training step and prediction in float32 against bfloat16 autocast, side by side.

    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/detector_precision.py --threads 1 --rounds 3 --steps 2

The product's network (`BoxDetector._network()`: Faster R-CNN + FPN over EfficientNet-Lite0, ImageNet backbone,
channels-last), one copy per precision with the same starting weights and its own SGD optimiser. Training: batches of
4 raccoon photos of the round-1 split with their true boxes, the same batches and seeds for both, `--steps` steps of
each variant a round, the variants interleaved over `--rounds` rounds (the first round is a warm-up and not timed).
Prediction: `--images` photos, one at a time, through each copy's weights as they are after training, interleaved.
Reported: median seconds per step and per prediction, the ratios bf16 / fp32, every loss (are they finite?), and
whether the two precisions find the same number of boxes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detector_raccoon import DATA, load  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (one more, untimed, warms up)")
    parser.add_argument("--steps", type=int, default=2, help="training steps of each variant a round")
    parser.add_argument("--images", type=int, default=8, help="photos predicted a round")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import torch

    from labelloop.ml.detection import BoxDetector
    from labelloop.ml.detection.detector import _tensor
    from labelloop.ml.detection.network import Float32Conv2d, Float32Linear, TrainingFloat32Conv2d
    from labelloop.ml.unet.training import cpu_has_native_bf16

    torch.set_num_threads(args.threads)
    paths = sorted((DATA / "images").glob("*.jpg"), key=lambda p: int(p.stem.split("-")[1]))
    order = np.random.default_rng(args.seed).permutation(len(paths))
    images, targets = load([paths[i] for i in order[60:110]])  # the round-1 labelled images
    tensors = [_tensor(image) for image in images]
    boxes = [{"boxes": torch.as_tensor(t["boxes"], dtype=torch.float32),
              "labels": torch.as_tensor(t["labels"], dtype=torch.int64)} for t in targets]
    torch.manual_seed(args.seed)
    base = BoxDetector(1, seed=args.seed)
    variants = {}
    for name, dtype in (("fp32", None), ("bf16, every layer", torch.bfloat16), ("bf16", torch.bfloat16)):
        network = base._network()
        if name == "bf16, every layer":  # the float32 exceptions undone (`network.keep_float32_where_needed`)
            for layer in network.modules():
                if isinstance(layer, (Float32Conv2d, TrainingFloat32Conv2d)):
                    layer.__class__ = torch.nn.Conv2d
                elif isinstance(layer, Float32Linear):
                    layer.__class__ = torch.nn.Linear
        if variants:
            network.load_state_dict(next(iter(variants.values()))[0].state_dict())
        optimizer = torch.optim.SGD([p for p in network.parameters() if p.requires_grad], lr=0.002, momentum=0.9,
                                    weight_decay=1e-4)
        variants[name] = (network, optimizer, dtype)

    def autocast(dtype):
        return torch.autocast("cpu", dtype=dtype, enabled=dtype is not None)

    step_times: dict[str, list[float]] = {name: [] for name in variants}
    step_cpu: dict[str, list[float]] = {name: [] for name in variants}
    losses: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    batch_at = 0
    for round_ in range(args.rounds + 1):
        batches = []
        for _ in range(args.steps):
            picked = [(batch_at + k) % len(tensors) for k in range(4)]
            batch_at += 4
            batches.append(picked)
        for name, (network, optimizer, dtype) in variants.items():
            network.train()
            for step, picked in enumerate(batches):
                torch.manual_seed(1000 * round_ + step)  # the same sampled anchors and RoIs for both
                started, used = time.perf_counter(), time.process_time()
                with autocast(dtype):
                    parts = network([tensors[i] for i in picked], [boxes[i] for i in picked])
                loss = sum(parts.values())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(network.parameters(), 10.0)
                optimizer.step()
                seconds, cpu = time.perf_counter() - started, time.process_time() - used
                losses[name].append({k: round(float(v.detach()), 4) for k, v in parts.items()})
                if round_:
                    step_times[name].append(seconds)
                    step_cpu[name].append(cpu)
            print(f"round {round_} {name}: last loss {float(loss):.4f}", file=sys.stderr, flush=True)
    predict_paths = sorted((DATA / "images").glob("*.jpg"))[:args.images]
    predict_images, _ = load(predict_paths)
    predictors = {}
    for name in ("fp32", "bf16"):  # the product's predict, one photo at a time, on the float32 run's weights
        predictor = BoxDetector(1, threads=1, precision=name)
        predictor.network_ = variants["fp32"][0]
        predictors[name] = predictor
    predict_times: dict[str, list[float]] = {name: [] for name in predictors}
    found = {}
    for round_ in range(args.rounds + 1):
        for name, predictor in predictors.items():
            started = time.perf_counter()
            out = predictor.predict(predict_images)
            if round_:
                predict_times[name].append(time.perf_counter() - started)
            else:
                found[name] = out
    same_counts = all(len(a["boxes"]) == len(b["boxes"]) for a, b in zip(found["fp32"], found["bf16"]))
    largest = max((float(np.abs(a["boxes"] - b["boxes"]).max(initial=0)) for a, b in zip(found["fp32"], found["bf16"])
                   if len(a["boxes"]) == len(b["boxes"])), default=None)
    fp32_step, fp32_cpu = statistics.median(step_times["fp32"]), statistics.median(step_cpu["fp32"])
    fp32_pred, bf16_pred = (statistics.median(predict_times[n]) for n in ("fp32", "bf16"))
    finite = {name: all(np.isfinite(list(d.values())).all() for d in ls) for name, ls in losses.items()}
    print(json.dumps({
        "cpu": platform.processor() or platform.machine(), "native_bf16": cpu_has_native_bf16(),
        "threads": torch.get_num_threads(), "load_average_1min": round(os.getloadavg()[0], 1),
        "training_step": {name: {
            "wall_median_s": round(statistics.median(step_times[name]), 3),
            "wall_ratio": round(statistics.median(step_times[name]) / fp32_step, 3),
            "wall_ratio_median_of_pairs": round(statistics.median(
                [t / f for f, t in zip(step_times["fp32"], step_times[name])]), 3),
            "cpu_median_s": round(statistics.median(step_cpu[name]), 3),
            "cpu_ratio": round(statistics.median(step_cpu[name]) / fp32_cpu, 3),
            "every_step_s": [round(t, 3) for t in step_times[name]]} for name in variants},
        "predict_s": {"images": len(predict_images), "fp32": round(fp32_pred, 3), "bf16": round(bf16_pred, 3),
                      "bf16_ratio": round(bf16_pred / fp32_pred, 3), "same_box_counts": same_counts,
                      "largest_box_difference_px": largest},
        "losses_finite": finite, "losses": losses}, indent=1))


if __name__ == "__main__":
    main()
