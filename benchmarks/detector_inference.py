"""Benchmark: the detector's inference time per image, variants side by side (interleaved rounds, one process).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/detector_inference.py --threads 1 --rounds 5

8 raccoon photos (the Label Studio backend's batch), a Faster R-CNN + FPN over EfficientNet-Lite0 as the product
builds it (ImageNet backbone; the heads' weights do not change the work: 300 proposals go through the box head
whatever they score; 300 was the default when this was measured, 100 since `detector_inference_settings.py`).
`--folded`: batch norms folded and freed memory kept, against neither. Variants: one image at a time (the product before), the 8 in one call, fewer proposals kept after the RPN's NMS,
channels-last memory. Reported: median seconds for the 8 over the rounds and the ratio
to the first variant, with the machine and its thread count.
"""

from __future__ import annotations

import argparse
import functools
import os
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detector_raccoon import DATA, load  # noqa: E402


BEFORE = {"proposals": 300, "proposals_before_nms": 500}  # the product's proposals when this was measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--train-steps", type=int, default=0, help="also time this many training steps a round")
    parser.add_argument("--at-once", action="store_true",
                        help="instead: the product's predict, one image at a time on --threads threads against "
                             "--threads images at once on one thread each (wall and CPU time, the same boxes?)")
    parser.add_argument("--folded", action="store_true",
                        help="instead: the product's predict with the batch norms folded and freed memory kept "
                             "(now) against neither (before) and each alone, interleaved rounds")
    args = parser.parse_args()
    if args.at_once:
        return at_once(args)
    if args.folded:
        return folded(args)
    import torch

    from labelloop.ml.detection.detector import _tensor
    from labelloop.ml.detection.network import build_detector

    if args.threads:
        torch.set_num_threads(args.threads)
    paths = sorted((DATA / "images").glob("*.jpg"))[:args.images]
    images, _ = load(paths)
    tensors = [_tensor(image) for image in images]
    variants = {}
    base = build_detector(1, **BEFORE).eval()
    variants["one at a time (300 proposals)"] = (base, False)
    variants["8 in one call"] = (base, True)
    fewer = build_detector(1, **BEFORE).eval()
    fewer.load_state_dict(base.state_dict())
    fewer.rpn._post_nms_top_n["testing"] = 100
    variants["one at a time, 100 proposals"] = (fewer, False)
    variants["8 in one call, 100 proposals"] = (fewer, True)
    last = build_detector(1, **BEFORE).eval().to(memory_format=torch.channels_last)
    last.load_state_dict(base.state_dict())
    variants["one at a time, channels-last"] = (last, False)
    both = build_detector(1, **BEFORE).eval().to(memory_format=torch.channels_last)
    both.load_state_dict(base.state_dict())
    both.rpn._post_nms_top_n["testing"] = 100
    variants["one at a time, channels-last, 100 proposals"] = (both, False)
    times: dict[str, list[float]] = {name: [] for name in variants}
    with torch.inference_mode():
        for network, _ in variants.values():
            network([tensors[0]])  # warm-up
        for _ in range(args.rounds):
            for name, (network, together) in variants.items():
                started = time.perf_counter()
                if together:
                    network(tensors)
                else:
                    for tensor in tensors:
                        network([tensor])
                times[name].append(time.perf_counter() - started)
    if args.train_steps:
        train_times = train_speed(tensors, args.train_steps, args.rounds)
    first = statistics.median(next(iter(times.values())))
    report = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "images": len(tensors), "sizes": [list(t.shape[1:]) for t in tensors],
              "variants": {name: {"median_s": round(statistics.median(t), 3), "best_s": round(min(t), 3),
                                  "ratio": round(statistics.median(t) / first, 3)} for name, t in times.items()}}
    if args.train_steps:
        plain = statistics.median(train_times["plain"])
        report["training_step_s"] = {name: {"median_s": round(statistics.median(t), 3),
                                            "ratio": round(statistics.median(t) / plain, 3)}
                                     for name, t in train_times.items()}
    print(json.dumps(report, indent=1, default=str))


def at_once(args) -> None:
    """`BoxDetector.predict` as the product runs it (current defaults, ImageNet backbone, heads untrained: the
    proposals go through the box head whatever they score), its images one at a time on `threads` torch threads
    (before) and `threads` at a time on one thread each (now), interleaved rounds."""
    import torch

    from labelloop.ml.detection import BoxDetector

    threads = args.threads or 2
    paths = sorted((DATA / "images").glob("*.jpg"))[:args.images]
    images, _ = load(paths)
    detector = BoxDetector(1, threads=threads)
    detector.network_ = detector._network().eval()

    def before():  # the product's predict until 2026-12-06: one image at a time on `threads` threads
        from labelloop.ml.detection.detector import _tensor
        from labelloop.ml.detection.network import prediction_size

        torch.set_num_threads(threads)
        with torch.inference_mode(), prediction_size(detector.network_, *detector.prediction_sizes):
            return [detector.network_([_tensor(image)])[0] for image in images]

    variants = {f"one at a time, {threads} threads": before, f"{threads} at once, 1 thread each": lambda: detector.predict(images)}
    outputs, wall, cpu = _interleaved(variants, args.rounds)
    old, new = outputs.values()
    largest = max(float(np.abs(a["boxes"].numpy() - b["boxes"]).max(initial=0)) for a, b in zip(old, new))
    _report(threads, images, old, new, largest, wall, cpu)


def _interleaved(variants: dict, rounds: int) -> tuple[dict, dict, dict]:
    """Each variant once (warm-up; its output kept), then `rounds` interleaved rounds: (outputs, wall s, CPU s)."""
    import resource

    outputs = {name: run() for name, run in variants.items()}
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            started, used = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
            run()
            after = resource.getrusage(resource.RUSAGE_SELF)
            wall[name].append(time.perf_counter() - started)
            cpu[name].append(after.ru_utime + after.ru_stime - used.ru_utime - used.ru_stime)
    return outputs, wall, cpu


def _report(threads: int, images, old, new, largest: float, wall: dict, cpu: dict, **extra) -> None:
    """One JSON object: the machine, whether the first and last variants' boxes agree, each variant's medians and
    ratios to the first."""
    first_wall, first_cpu = statistics.median(next(iter(wall.values()))), statistics.median(next(iter(cpu.values())))
    print(json.dumps({"cpu": platform.processor() or platform.machine(), "threads": threads, "images": len(images),
                      "load_average_1min": round(os.getloadavg()[0], 1),
                      "same_box_counts": all(len(a["boxes"]) == len(b["boxes"]) for a, b in zip(old, new)),
                      "largest_box_difference_px": round(largest, 4),
                      "variants": {name: {"wall_median_s": round(statistics.median(wall[name]), 3),
                                          "wall_max_s": round(max(wall[name]), 3),
                                          "wall_ratio": round(statistics.median(wall[name]) / first_wall, 3),
                                          "cpu_median_s": round(statistics.median(cpu[name]), 3),
                                          "cpu_ratio": round(statistics.median(cpu[name]) / first_cpu, 3)}
                                   for name in wall}, **extra}, indent=1))


def _glibc(keep: bool) -> None:
    """glibc's malloc as `keep_freed_memory` leaves it (keep) or near its defaults: blocks above 128 KiB mapped
    afresh, 128 KiB trimmed (setting them also ends the dynamic threshold, as any mallopt call does)."""
    import ctypes

    from labelloop.ml import allocator

    mallopt = ctypes.CDLL("libc.so.6").mallopt
    values = ((allocator.KEEP_BLOCKS_BELOW, allocator.KEEP_FREED, 64 * 2**20) if keep else (128 * 1024, 128 * 1024, 0))
    for option, value in zip((-3, -1, -2), values):
        mallopt(option, value)


def folded(args) -> None:
    """`BoxDetector.predict` (T images at once, one thread each) with the backbone's batch norms folded into its
    convolutions and glibc keeping freed memory (now), against neither (the product until 2026-12-07) and each
    alone; the allocator is switched before each variant runs. Heads untrained, as in `at_once`."""
    from labelloop.ml import inference
    from labelloop.ml.detection import BoxDetector
    from labelloop.ml.detection import detector as detector_module

    threads = args.threads or 2
    paths = sorted((DATA / "images").glob("*.jpg"))[:args.images]
    images, _ = load(paths)
    detector_module.keep_freed_memory = lambda: None  # the variants below set the allocator themselves
    plain = BoxDetector(1, threads=threads)
    plain.network_ = plain._network().eval()
    plain._inference_network = lambda: plain.network_  # not folded
    folded_ = BoxDetector(1, threads=threads)
    folded_.network_ = plain.network_
    print(f"batch norms folded: {inference.fold_batch_norms(plain.network_.backbone.body)[1]}", file=sys.stderr)
    pairs = {"unfolded, glibc defaults (before)": (plain, False), "unfolded, freed memory kept": (plain, True),
             "folded, glibc defaults": (folded_, False), "folded, freed memory kept (now)": (folded_, True)}

    def run(detector, keep: bool):  # the allocator switched first, then the prediction timed with it
        _glibc(keep)
        return detector.predict(images)

    variants = {name: functools.partial(run, *pair) for name, pair in pairs.items()}
    outputs, wall, cpu = _interleaved(variants, args.rounds)
    training = _training_allocator(images, args.train_steps, args.rounds, threads) if args.train_steps else None
    old, new = outputs[next(iter(variants))], outputs[list(variants)[-1]]
    largest = max(float(np.abs(a["boxes"] - b["boxes"]).max(initial=0)) for a, b in zip(old, new)
                  if len(a["boxes"]) == len(b["boxes"]))
    _report(threads, images, old, new, largest, wall, cpu, training_step_s=training)


def _training_allocator(images, steps: int, rounds: int, threads: int) -> dict[str, float]:
    """Median seconds per training step (batch 4, sizes 312-416) with glibc's defaults and with freed memory kept,
    interleaved rounds on one network."""
    import torch

    from labelloop.ml.detection.detector import _tensor
    from labelloop.ml.detection.network import build_detector

    torch.set_num_threads(threads)
    tensors = [_tensor(image) for image in images[:4]]
    network = build_detector(1, min_size=(312, 352, 416)).train()
    optimizer = torch.optim.SGD([p for p in network.parameters() if p.requires_grad], lr=0.001, momentum=0.9)
    targets = [{"boxes": torch.tensor([[40.0, 50.0, 200.0, 220.0]]), "labels": torch.tensor([1])}] * len(tensors)

    def run(n: int) -> float:
        torch.manual_seed(0)
        started = time.perf_counter()
        for _ in range(n):
            loss = sum(network(list(tensors), targets).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return (time.perf_counter() - started) / n

    run(1)
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(rounds):
        for keep in times:
            _glibc(keep)
            times[keep].append(run(steps))
    before, after = statistics.median(times[False]), statistics.median(times[True])
    return {"glibc_defaults": round(before, 3), "freed_memory_kept": round(after, 3), "ratio": round(after / before, 3)}


def train_speed(tensors, steps: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per training step (batch 4, the product's augmentation-free path), plain against channels-last."""
    import torch

    from labelloop.ml.detection.network import build_detector

    networks = {"plain": build_detector(1, min_size=(312, 352, 416)),
                "channels-last": build_detector(1, min_size=(312, 352, 416)).to(memory_format=torch.channels_last)}
    networks["channels-last"].load_state_dict(networks["plain"].state_dict())
    targets = [{"boxes": torch.tensor([[40.0, 50.0, 200.0, 220.0]]), "labels": torch.tensor([1])}] * 4
    out: dict[str, list[float]] = {name: [] for name in networks}
    for name, network in networks.items():
        network.train()
        optimizer = torch.optim.SGD([p for p in network.parameters() if p.requires_grad], lr=0.001, momentum=0.9)
        networks[name] = (network, optimizer)
    for _ in range(rounds):
        for name, (network, optimizer) in networks.items():
            torch.manual_seed(0)
            started = time.perf_counter()
            for step in range(steps):
                loss = sum(network(list(tensors[:4]), targets).values())
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            out[name].append((time.perf_counter() - started) / steps)
    return out


if __name__ == "__main__":
    main()
