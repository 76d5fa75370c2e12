"""Benchmark: the embedding network with its batch norms folded into its convolutions (the product since
2026-12-07) against the network as built, side by side (interleaved rounds, one process), and how far apart their
embeddings are.

    .venv/bin/python benchmarks/embedding_speed.py --images 16 --rounds 7 --threads 2

hymenoptera photos (ants), centre-cropped as the product embeds them; the default encoder (EfficientNet-Lite2).
Prints one JSON object: median seconds per variant, the ratio, the largest difference relative to the embeddings'
scale, the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hymenoptera" / "train" / "ants"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"hymenoptera not found at {DATA}")
    import torch

    from labelloop import media
    from labelloop.ml import inference
    from labelloop.ml.embeddings import Embedder

    torch.set_num_threads(args.threads)
    images = [media.read(path, name=path.name) for path in sorted(DATA.glob("*.jpg"))[:args.images]]
    folded = Embedder().load()
    fold = inference.fold_batch_norms
    inference.fold_batch_norms = lambda module: (module, 0)  # the network as built
    try:
        plain = Embedder().load()
    finally:
        inference.fold_batch_norms = fold
    variants = {"as built (before)": plain, "batch norms folded (now)": folded}
    outputs = {name: embedder.embed(images) for name, embedder in variants.items()}  # warm-up, compared below
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, embedder in variants.items():
            started = time.perf_counter()
            embedder.embed(images)
            times[name].append(time.perf_counter() - started)
    before, after = outputs.values()
    first = statistics.median(next(iter(times.values())))
    print(json.dumps({"cpu": platform.processor() or platform.machine(), "threads": args.threads,
                      "images": len(images), "load_average_1min": round(os.getloadavg()[0], 1),
                      "largest_difference_relative": float(np.abs(before - after).max() / np.abs(before).max()),
                      "variants": {name: {"median_s": round(statistics.median(t), 3),
                                          "ratio": round(statistics.median(t) / first, 3)}
                                   for name, t in times.items()}}, indent=1))


if __name__ == "__main__":
    main()
