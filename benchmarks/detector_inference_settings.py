"""Benchmark: the detector's inference-time settings, accuracy and time side by side on one trained network.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/detector_inference_settings.py --threads 1 --rounds 3
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/detector_inference_settings.py --threads 1 --which sizes --rounds 7
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/detector_inference_settings.py --threads 1 --which sizes --rounds 7 \
        --dataset coco128-person

Settings that apply only at prediction (RPN proposals before and after its NMS, the input size, boxes kept per image,
images per call) need no retraining, so one network is trained once and each setting is measured on it. The network:
raccoon's round-1 split of `detector_calibration.py` (seeded permutation, seed 0: 60 test images, 50 labelled, 10 of
them held out), trained for `--steps` steps of batch 4 on the 40 (330: what 15 idle minutes gave on the 2-core
benchmark machine), no calibration folds. It is saved to `--model` and read from there on the next run, so it is
trained only once. For every setting: test mAP@0.5, mAP@0.5:0.95, AP@0.75 (pycocotools) on the 60 test images, and
the seconds per image of prediction (decoding excluded), the settings run interleaved round after round in one
process; ratios are to the first setting (the defaults before this benchmark). A JSON summary goes to
benchmarks/out/detector_inference_settings.json.

`--which sizes`: the input size at prediction (`--set predict_size`) with the proposal counts. Each setting's
accuracy is measured once on the 60 test images; its time on the same 8 photos as `detector_inference.py` (the
Label Studio backend's batch, one at a time), the settings interleaved over `--rounds` rounds, each round starting
one setting later. The 352 px row is measured a second time through `BoxDetector(predict_size=352).predict`, the
product's own path, which must give the same mAP. `--dataset coco128-person` confirms on a second dataset:
coco128's person boxes (many small), 80 labelled images (16 held out), 48 test images, timed on 8 of them.
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
from detector_raccoon import DATA, ROOT, held_out, load  # noqa: E402

COCO128 = ROOT.parent / "shared" / "data" / "coco128"

# name -> (RPN proposals before NMS, after NMS, short side, long side cap, boxes kept per image, images per call)
SETTINGS = {
    "before: 500/300 proposals, 416/704 px": (500, 300, 416, 704, 100, 1),
    "300/150 proposals": (300, 150, 416, 704, 100, 1),
    "500/100 proposals": (500, 100, 416, 704, 100, 1),
    "300/100 proposals": (300, 100, 416, 704, 100, 1),
    "200/50 proposals": (200, 50, 416, 704, 100, 1),
    "352/596 px": (500, 300, 352, 596, 100, 1),
    "300/100 proposals, 352/596 px": (300, 100, 352, 596, 100, 1),
    "300/100 proposals, 320/544 px": (300, 100, 320, 544, 100, 1),
    "300/100 proposals, 20 boxes kept": (300, 100, 416, 704, 20, 1),
    "300/100 proposals, 8 images a call": (300, 100, 416, 704, 100, 8),
}
# the input's short side / long cap at prediction (predict_size; the cap is max_size × predict_size / min_size)
SIZES = {
    "before: 500/300 proposals, 416/704 px": (500, 300, 416, 704, 100, 1),
    "300/100 proposals (default), 416/704 px": (300, 100, 416, 704, 100, 1),
    "500/300 proposals, 352/596 px": (500, 300, 352, 596, 100, 1),
    "300/100 proposals, 384/650 px": (300, 100, 384, 650, 100, 1),
    "300/100 proposals, 352/596 px": (300, 100, 352, 596, 100, 1),
    "300/100 proposals, 320/542 px": (300, 100, 320, 542, 100, 1),
    "300/100 proposals, 288/487 px": (300, 100, 288, 487, 100, 1),
}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def coco128_person(seed: int) -> tuple[list, list, list, list]:
    """The confirmation set: coco128's person boxes only (259 in 61 of the 128 images, many small; the other
    images are kept, without boxes), dealt by a seeded permutation: 48 test images, 80 labelled (16 of them held
    out, as in the product). Returns labelled images and targets, then test images and targets."""
    from labelloop import media
    from labelloop.domain import ProjectKind
    from labelloop.formats.registry import get_format

    bundle = get_format("coco").read(COCO128 / "annotations" / "instances_train2017.json", ProjectKind.detection)
    images, targets = [], []
    for entry in sorted(bundle.entries, key=lambda e: e.name):
        people = [s for s in entry.shapes if s.label == "person"]
        images.append(media.read(entry.path, 0, name=entry.name))
        targets.append({"boxes": np.array([[s.x0, s.y0, s.x1, s.y1] for s in people], float).reshape(-1, 4),
                        "labels": np.ones(len(people), int)})
    order = np.random.default_rng(seed).permutation(len(images))
    return ([images[i] for i in order[48:]], [targets[i] for i in order[48:]], [images[i] for i in order[:48]],
            [targets[i] for i in order[:48]])


def raccoon(seed: int) -> tuple[list, list, list, list]:
    """Round 1 of `detector_calibration.py`: 50 labelled images (10 of them held out), 60 test images."""
    paths = sorted((DATA / "images").glob("*.jpg"), key=lambda p: int(p.stem.split("-")[1]))
    order = np.random.default_rng(seed).permutation(len(paths))
    return (*load([paths[i] for i in order[60:110]]), *load([paths[i] for i in order[:60]]))


DATASETS = {"raccoon": raccoon, "coco128-person": coco128_person}


def trained_detector(path: Path, steps: int, seed: int, threads: int | None, dataset: str = "raccoon"):
    """The network: read from `path`, or trained as `detector_calibration.py`'s main network and saved."""
    from labelloop.ml.detection import BoxDetector

    if path.exists():
        return BoxDetector.from_checkpoint(path.read_bytes()), None
    images, targets, _, _ = DATASETS[dataset](seed)
    hold = sorted(set(held_out(len(images), seed).tolist()))
    fit_i = [i for i in range(len(images)) if i not in hold]
    per_epoch = -(-len(fit_i) // 4)
    detector = BoxDetector(1, epochs=max(1, round(steps / per_epoch)), eval_period=10_000, target_precision=0.9,
                           seed=seed, threads=threads, calibration_folds=0)
    progress = lambda d, t, m: print(f"\r  training: {m}, step {d} of {t}", end="", file=sys.stderr,  # noqa: E731
                                     flush=True)
    started = time.perf_counter()
    detector.fit([images[i] for i in fit_i], [targets[i] for i in fit_i], [images[i] for i in hold],
                 [targets[i] for i in hold], on_progress=progress)
    print(file=sys.stderr)
    path.write_bytes(detector.checkpoint())
    return detector, round(time.perf_counter() - started, 1)


def apply(network, setting: tuple) -> None:
    """Put one setting on the network (prediction only: the training sizes and proposals are not used here)."""
    pre, post, short, cap, kept, _ = setting
    network.rpn._pre_nms_top_n["testing"] = pre
    network.rpn._post_nms_top_n["testing"] = post
    network.transform.min_size = (short,)  # in eval mode torchvision resizes to min_size[-1]
    network.transform.max_size = cap
    network.roi_heads.detections_per_img = kept


def predict(network, tensors, per_call: int) -> list[dict]:
    found = []
    for start in range(0, len(tensors), per_call):
        for out in network(tensors[start:start + per_call]):
            found.append({"boxes": out["boxes"].numpy().astype(float), "labels": out["labels"].numpy().astype(int),
                          "scores": out["scores"].numpy().astype(float)})
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="the trained network: read when it exists, else "
                        "trained and written here (default /tmp/labelloop_raccoon_detector_<steps>.pt)")
    parser.add_argument("--steps", type=int, default=330)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 on a machine other work shares)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dataset", choices=tuple(DATASETS), default="raccoon",
                        help="coco128-person: the second dataset, with --which sizes")
    parser.add_argument("--which", choices=("proposals", "sizes"), default="proposals",
                        help="proposals: the first study (time on the 60 test images); sizes: input sizes at "
                             "prediction (time on 8 photos)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "detector_inference_settings.json")
    args = parser.parse_args()
    if not (DATA if args.dataset == "raccoon" else COCO128).is_dir():
        sys.exit(f"{args.dataset} not found in {DATA.parent}")
    if args.dataset != "raccoon" and args.which != "sizes":
        sys.exit("--dataset coco128-person goes with --which sizes")
    import torch

    from labelloop.ml.detection.detector import _tensor
    from labelloop.ml.detection.evaluation import coco_map

    if args.threads:
        torch.set_num_threads(args.threads)
    args.model = args.model or Path(f"/tmp/labelloop_{args.dataset}_detector_{args.steps}.pt")
    detector, train_s = trained_detector(args.model, args.steps, args.seed, args.threads, args.dataset)
    _, _, test_images, test_targets = DATASETS[args.dataset](args.seed)
    tensors = [_tensor(image) for image in test_images]
    if args.which == "sizes":
        return sizes_study(args, detector, train_s, test_images, test_targets)
    network = detector.network_.eval()
    times: dict[str, list[float]] = {name: [] for name in SETTINGS}
    accuracy: dict[str, dict] = {}
    with torch.inference_mode():
        apply(network, next(iter(SETTINGS.values())))
        predict(network, tensors[:2], 1)  # warm-up
        for _ in range(args.rounds):
            for name, setting in SETTINGS.items():
                apply(network, setting)
                started = time.perf_counter()
                preds = predict(network, tensors, setting[-1])
                times[name].append((time.perf_counter() - started) / len(tensors))
                if name not in accuracy:
                    accuracy[name] = {k: round(v, 4) for k, v in coco_map(preds, test_targets, 1).items()}
                    accuracy[name]["boxes_per_image"] = round(float(np.mean([len(p["scores"]) for p in preds])), 1)
                print(f"  {name}: {times[name][-1]:.3f} s/image, {accuracy[name]}", file=sys.stderr, flush=True)
    first_name = next(iter(SETTINGS))
    first_time = statistics.median(times[first_name])
    first_acc = accuracy[first_name]
    report = {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
              "torch": torch.__version__, "seed": args.seed, "steps": detector._state["step"],
              "training_wall_s": train_s, "model": str(args.model), "test_images": len(tensors),
              "rounds": args.rounds, "settings": {}}
    for name, setting in SETTINGS.items():
        median = statistics.median(times[name])
        report["settings"][name] = {
            "pre_nms": setting[0], "post_nms": setting[1], "min_size": setting[2], "max_size": setting[3],
            "detections_per_img": setting[4], "images_per_call": setting[5], **accuracy[name],
            "d_map50": round(accuracy[name]["map50"] - first_acc["map50"], 4),
            "d_map": round(accuracy[name]["map"] - first_acc["map"], 4),
            "s_per_image_median": round(median, 4), "s_per_image_best": round(min(times[name]), 4),
            "ratio": round(median / first_time, 3)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def sizes_study(args, detector, train_s, test_images, test_targets) -> None:
    """Accuracy of each SIZES setting on the 60 test images, then its time on 8 photos, interleaved over rounds."""
    import torch

    from labelloop.ml.detection.detector import _tensor
    from labelloop.ml.detection.evaluation import coco_map

    network = detector.network_.eval()
    tensors = [_tensor(image) for image in test_images]
    photos = load(sorted((DATA / "images").glob("*.jpg"))[:8])[0] if args.dataset == "raccoon" else test_images[:8]
    photo_tensors = [_tensor(image) for image in photos]
    names = list(SIZES)
    accuracy: dict[str, dict] = {}
    loads = {"start": load_average()}
    with torch.inference_mode():
        for name in names:
            apply(network, SIZES[name])
            started = time.perf_counter()
            preds = predict(network, tensors, 1)
            seconds = (time.perf_counter() - started) / len(tensors)
            accuracy[name] = {k: round(v, 4) for k, v in coco_map(preds, test_targets, 1).items()}
            accuracy[name]["boxes_per_image"] = round(float(np.mean([len(p["scores"]) for p in preds])), 1)
            accuracy[name]["s_per_test_image"] = round(seconds, 4)
            print(f"  {name}: {accuracy[name]}", file=sys.stderr, flush=True)
    # the product's path: BoxDetector.predict with predict_size (its own proposals, 300/100)
    detector.predict_size = 352
    product = {k: round(v, 4) for k, v in coco_map(detector.predict(test_images), test_targets, 1).items()}
    detector.predict_size = None
    loads["after_accuracy"] = load_average()
    times: dict[str, list[float]] = {name: [] for name in names}
    with torch.inference_mode():
        apply(network, SIZES[names[0]])
        predict(network, photo_tensors[:2], 1)  # warm-up
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                apply(network, SIZES[name])
                started = time.perf_counter()
                predict(network, photo_tensors, 1)
                times[name].append(time.perf_counter() - started)
            print(f"  round {r + 1}: " + ", ".join(f"{times[n][-1]:.2f}" for n in names), file=sys.stderr, flush=True)
    loads["end"] = load_average()
    first = statistics.median(times[names[0]])
    default = statistics.median(times[names[1]])
    report = {"dataset": args.dataset, "cpu": cpu_name(), "cores": os.cpu_count(),
              "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "seed": args.seed,
              "steps": detector._state["step"], "training_wall_s": train_s, "model": str(args.model),
              "test_images": len(tensors), "test_boxes": int(sum(len(t["labels"]) for t in test_targets)),
              "timed_photos": len(photo_tensors), "rounds": args.rounds, "load_average_1_5_15": loads,
              "product_predict_size_352": product, "settings": {}}
    for name in names:
        median = statistics.median(times[name])
        pre, post, short, cap, kept, per_call = SIZES[name]
        report["settings"][name] = {
            "pre_nms": pre, "post_nms": post, "short_side": short, "long_cap": cap, **accuracy[name],
            "d_map50_vs_default": round(accuracy[name]["map50"] - accuracy[names[1]]["map50"], 4),
            "d_map_vs_default": round(accuracy[name]["map"] - accuracy[names[1]]["map"], 4),
            "s_8_photos_median": round(median, 3), "s_8_photos_best": round(min(times[name]), 3),
            "ratio_to_before": round(median / first, 3), "ratio_to_default": round(median / default, 3)}
    out = args.out.with_name(f"{args.out.stem}_sizes_{args.dataset}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
