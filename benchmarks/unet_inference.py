"""Benchmark: whole-image U-Net inference on CPU, the plain network against the same network with its batch norms
folded into the convolutions (what `UNetSegmenter.predict` runs), side by side in one process.

    .venv/bin/python benchmarks/unet_inference.py --checkpoint /tmp/unet_all/unet_lucchi_all_seed0.ckpt
    .venv/bin/python benchmarks/unet_inference.py                  # no checkpoint: ImageNet encoder, untrained decoder

Each round times every variant over the same Lucchi test slices (1024×768, one tile each by default, no TTA), in
turn, so machine noise hits them alike; the table gives each variant's median megapixels per second over the rounds
(image scaling and blending included, PNG decoding excluded) and the folded/plain ratio. It also reports how far the
two variants' probabilities differ and how many pixels change class.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "lucchi_mito"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a saved UNetSegmenter (benchmarks/unet_lucchi.py --save-checkpoint)")
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="fp32", choices=("auto", "bf16", "fp32"))
    parser.add_argument("--max-tile", type=int, default=1024)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "unet_inference.json")
    args = parser.parse_args(argv)

    import torch
    from PIL import Image

    from labelloop.ml.unet import UNetSegmenter, build_network
    from labelloop.ml.unet.network import InputNormaliser, fold_batch_norms, scale_image
    from labelloop.ml.unet.training import autocast_dtype, cpu_threads, image_logits

    paths = sorted((args.data / "test" / "images").glob("slice_*.png"))[:args.slices]
    if not paths:
        raise SystemExit(f"no Lucchi test slices under {args.data}/test/images (see ../shared/data/lucchi_mito)")
    images = [scale_image(np.asarray(Image.open(p))) for p in paths]
    if args.checkpoint:
        segmenter = UNetSegmenter.from_checkpoint(args.checkpoint, device="cpu")
        plain, encoder, outputs = segmenter.network_, segmenter.encoder, segmenter.n_outputs_
    else:
        plain, _ = build_network(n_outputs=1)
        encoder, outputs = "tu-tf_efficientnet_lite0", 1
    plain = plain.eval().to(memory_format=torch.channels_last)
    variants = {"plain": plain, "folded": fold_batch_norms(plain).to(memory_format=torch.channels_last)}
    device = torch.device("cpu")
    normaliser = InputNormaliser(encoder)
    autocast = autocast_dtype(device, args.precision)
    megapixels = sum(image.size for image in images) / 1e6

    def run(network) -> list[torch.Tensor]:
        return [image_logits(network, normaliser, device, image, outputs, max_tile=args.max_tile, overlap=64,
                             autocast=autocast) for image in images]

    speeds: dict[str, list[float]] = {name: [] for name in variants}
    with cpu_threads(device, args.threads):
        threads = torch.get_num_threads()
        logits = {name: run(network) for name, network in variants.items()}  # warm-up: oneDNN picks its kernels
        for _ in range(args.rounds):
            for name, network in variants.items():
                start = time.perf_counter()
                run(network)
                speeds[name].append(megapixels / (time.perf_counter() - start))
    plain_p = torch.cat([torch.sigmoid(t).flatten() for t in logits["plain"]])
    folded_p = torch.cat([torch.sigmoid(t).flatten() for t in logits["folded"]])
    median = {name: round(statistics.median(values), 2) for name, values in speeds.items()}
    report = {"checkpoint": str(args.checkpoint) if args.checkpoint else None, "threads": threads,
              "precision": "bf16 autocast" if autocast else "float32", "slices": len(images), "rounds": args.rounds,
              "mp_per_s_median": median, "mp_per_s_all": {k: [round(v, 2) for v in vs] for k, vs in speeds.items()},
              "ratio_folded_over_plain": round(median["folded"] / median["plain"], 3),
              "max_probability_difference": float((plain_p - folded_p).abs().max()),
              "pixels_changing_class": int(((plain_p > 0.5) != (folded_p > 0.5)).sum()), "pixels": plain_p.numel()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"{len(images)} slices of 1024×768, {threads} threads, {report['precision']}, "
          f"median of {args.rounds} rounds:")
    for name in variants:
        print(f"  {name:>6}: {median[name]} MP/s   (rounds: {report['mp_per_s_all'][name]})")
    print(f"  folded / plain: {report['ratio_folded_over_plain']}×; probabilities differ by at most "
          f"{report['max_probability_difference']:.1e}; {report['pixels_changing_class']} of {report['pixels']} "
          f"pixels change class")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
