"""Benchmark: do the pixel classifier's defaults hold on data they were not chosen on? (issue 17)

    .venv/bin/python benchmarks/pixel_generalisation.py                     # every set, every variant
    .venv/bin/python benchmarks/pixel_generalisation.py --sets nuclei --variants default,smooth2 --rounds 5

Protocol. Three semantic sets; a setting is *chosen* on the first and only *confirmed* on the others:
- ``lucchi-train`` (choose): Lucchi's training volume. Scribbles on slices 0 and 80, tested on 8 other
  slices of the same volume.
- ``lucchi-test`` (confirm): the same scribbles, tested on 8 slices of Lucchi's test volume (another block of the
  brain, which differs in contrast and texture).
- ``nuclei`` (confirm): DSB2018 fluorescence nuclei as a semantic task (nucleus vs background): scribbles on 2
  seeded images, tested on 8 others of other sizes and stainings.
Scribbles: a seeded sample of --per-class ground-truth pixels per class on each training image (issue 17's 1,000).
Score: foreground IoU pooled over the test pixels. Reference: scikit-image's "trainable segmentation" pipeline
(multiscale_basic_features + RandomForestClassifier(100 trees, max_depth 10, max_samples 0.05)), the same one as
benchmarks/pixel_classifier.py, on the same scribbles.

Corrective rounds (``--rounds N``): after the first fit, each round adds on each training image, for each class,
one stroke of <= 200 ground-truth pixels inside the largest connected region the current prediction gets wrong
(``labelloop.ml.corrective``), retrains and re-predicts; test IoU is reported after every round. This is how
people use the classifier, and the simulated annotator (``labelloop simulate``) reuses the protocol.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from pixel_classifier import scribbles  # the same seeded truth-pixel scribbles (benchmarks/ is on the path)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LUCCHI = DATA / "lucchi_mito"
NUCLEI = DATA / "nuclei_dsb2018"

VARIANTS: dict[str, dict] = {
    "default": {},  # PixelClassifier's defaults: what `labelloop train --model pixel-rf` and the live view use
    "train-default": {"autocontext": True},  # the defaults + `--autocontext` (the same as "default" since 2026-12-07)
    "no-autocontext": {"autocontext": False},  # the defaults of 2026-12-06/07: one forest
    "plain": {"smoothing": 0.0, "autocontext": False, "intensity": "dtype"},  # the defaults before issue 17
    "dtype": {"intensity": "dtype"},  # the defaults of 2026-12-05 (smoothing 3, dtype scaling)
    "smooth1": {"smoothing": 1.0},
    "smooth2": {"smoothing": 2.0},
    "smooth3": {"smoothing": 3.0},
    "autocontext": {"autocontext": True, "smoothing": 0.0},
    "ac-smooth1": {"autocontext": True, "smoothing": 1.0},
    "ac-smooth2": {"autocontext": True, "smoothing": 2.0},
    "ac-smooth3": {"autocontext": True, "smoothing": 3.0},
    "pct": {"intensity": "percentile", "smoothing": 0.0},
    "pct-smooth2": {"intensity": "percentile", "smoothing": 2.0},
    "pct-smooth3": {"intensity": "percentile", "smoothing": 3.0},
    "pct-ac": {"intensity": "percentile", "autocontext": True, "smoothing": 0.0},
    "pct-ac-smooth2": {"intensity": "percentile", "autocontext": True, "smoothing": 2.0},
    # coarse to fine: which pixels the forest predicts again exactly (default margin 0.4); "exact" predicts all
    "exact": {"cascade": 1},
    "margin0.2": {"cascade_margin": 0.2},
    "margin0.1": {"cascade_margin": 0.1},
    "margin0": {"cascade_margin": 0.0},
    "norefine": {"refine": False},  # the coarse grid interpolated, nothing predicted again
    "refine": {"refine": True},  # the second pass forced (the default before refine="auto")
    "train-default-refine": {"autocontext": True, "refine": True},
}


def _png(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path))


def _lucchi(split: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    name = f"slice_{index:03d}.png"
    return _png(LUCCHI / split / "images" / name), _png(LUCCHI / split / "masks" / name) > 127


def _lucchi_indices(split: str) -> list[int]:
    return sorted(int(p.stem.split("_")[1]) for p in (LUCCHI / split / "images").glob("slice_*.png"))


def _spread(values: list, n: int) -> list:
    """n values spread evenly over the list (first and last included)."""
    if len(values) <= n:
        return list(values)
    return [values[round(i * (len(values) - 1) / (n - 1))] for i in range(n)]


def load_set(name: str, n_test: int, seed: int):
    """(train images, train masks, test images, test masks) of one set; masks are boolean foreground."""
    if name in ("lucchi-train", "lucchi-test"):
        train = [_lucchi("train", i) for i in (0, 80)]
        if name == "lucchi-train":
            others = [i for i in _lucchi_indices("train") if i not in (0, 80)]
            test = [_lucchi("train", i) for i in _spread(others, n_test)]
        else:
            test = [_lucchi("test", i) for i in _spread(_lucchi_indices("test"), n_test)]
    elif name == "nuclei":
        ids = sorted(p.stem for p in (NUCLEI / "images").glob("*.png"))
        rng = np.random.default_rng(1000 + seed)
        chosen = [ids[i] for i in rng.permutation(len(ids))[: 2 + n_test]]

        def one(stem):
            image = _png(NUCLEI / "images" / f"{stem}.png")
            image = image[..., 0] if image.ndim == 3 else image
            return image, _png(NUCLEI / "labels" / f"{stem}.png") > 0

        pairs = [one(s) for s in chosen]
        train, test = pairs[:2], pairs[2:]
    else:
        raise SystemExit(f"unknown set {name!r}; known: lucchi-train, lucchi-test, nuclei")
    return [p[0] for p in train], [p[1] for p in train], [p[0] for p in test], [p[1] for p in test]


def iou(predicted: list[np.ndarray], truth: list[np.ndarray]) -> float:
    inter = sum(int(np.count_nonzero(p & t)) for p, t in zip(predicted, truth))
    union = sum(int(np.count_nonzero(p | t)) for p, t in zip(predicted, truth))
    return inter / union if union else 1.0


def reference_iou(train_x, labels, test_x, test_y, seed: int) -> tuple[float, float]:
    from skimage.feature import multiscale_basic_features
    from sklearn.ensemble import RandomForestClassifier

    def features(image):
        return multiscale_basic_features(image, intensity=True, edges=True, texture=True, sigma_min=1, sigma_max=16)

    start = time.perf_counter()
    clf = RandomForestClassifier(n_estimators=100, n_jobs=-1, max_depth=10, max_samples=0.05, random_state=seed)
    clf.fit(np.concatenate([features(x)[lab > 0] for x, lab in zip(train_x, labels)]),
            np.concatenate([lab[lab > 0] for lab in labels]))
    predicted = []
    for x in test_x:
        f = features(x)
        predicted.append(clf.predict(f.reshape(-1, f.shape[-1])).reshape(x.shape) == 2)
    return iou(predicted, test_y), time.perf_counter() - start


def ours(variant: dict, train_x, train_y, test_x, test_y, per_class: int, rounds: int, seed: int) -> dict:
    from labelloop.ml.features import bright_level, choose_intensity
    from labelloop.ml.pixel_classifier import DEFAULT_INTENSITY, PixelClassifier

    rng = np.random.default_rng(seed)
    labels = [scribbles(m, per_class, rng) for m in train_y]
    params = {"random_state": seed, **variant}
    if params.get("intensity", DEFAULT_INTENSITY) == "auto":  # as `labelloop train` does: the project's images decide
        params["intensity"] = choose_intensity([bright_level(x) for x in [*train_x, *test_x]])
    out: dict = {"rounds": []}
    start = time.perf_counter()
    for r in range(rounds + 1):
        clf = PixelClassifier(**params).fit(train_x, labels)
        score = iou([clf.predict(x) == 2 for x in test_x], test_y)
        out["rounds"].append(round(score, 4))
        if r == rounds:
            break
        from labelloop.ml.corrective import corrective_strokes

        for i, (x, mask) in enumerate(zip(train_x, train_y)):
            truth = np.where(mask, 2, 1).astype(np.uint8)
            strokes = corrective_strokes(truth, clf.predict(x).astype(np.uint8), max_pixels=200, classes=(1, 2))
            new = (strokes > 0) & (labels[i] == 0)
            labels[i][new] = strokes[new]
    out["iou"] = out["rounds"][0]
    out["intensity"] = clf.intensity_
    out["seconds"] = round(time.perf_counter() - start, 1)
    out["scribbled_px"] = int(sum(int(np.count_nonzero(lab)) for lab in labels))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default="lucchi-train,lucchi-test,nuclei")
    parser.add_argument("--variants", default="plain,default,train-default")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--test-images", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=0, help="corrective rounds after the first fit")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args(argv)
    if not LUCCHI.is_dir() or not NUCLEI.is_dir():
        print(f"datasets not found under {DATA}", file=sys.stderr)
        return 2
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    table: dict = {}
    for set_name in args.sets.split(","):
        for seed in seeds:
            train_x, train_y, test_x, test_y = load_set(set_name, args.test_images, seed)
            rng = np.random.default_rng(seed)
            ref, ref_s = reference_iou(train_x, [scribbles(m, args.per_class, rng) for m in train_y], test_x, test_y,
                                       seed)
            table.setdefault(set_name, {}).setdefault("reference", []).append({"iou": round(ref, 4)})
            print(f"{set_name} seed {seed}: reference {ref:.3f} ({ref_s:.0f} s)", flush=True)
            for name in names:
                result = ours(VARIANTS[name], train_x, train_y, test_x, test_y, args.per_class, args.rounds, seed)
                table[set_name].setdefault(name, []).append(result)
                print(f"  {name:12} {result['iou']:.3f} ({result['iou'] - ref:+.3f})  rounds {result['rounds']}  {result['intensity']}  "
                      f"{result['seconds']:.0f} s", flush=True)
    print("\nmean foreground IoU over seeds (gain over the reference); rounds: after 0, 1, 3, 5 corrective rounds")
    for set_name, rows in table.items():
        ref = float(np.mean([r["iou"] for r in rows["reference"]]))
        print(f"{set_name}: reference {ref:.3f}")
        for name in names:
            runs = rows[name]
            mean = float(np.mean([r["iou"] for r in runs]))
            curve = np.mean([r["rounds"] for r in runs], axis=0)
            marks = ", ".join(f"r{k} {curve[k]:.3f}" for k in (1, 3, 5) if k < len(curve))
            print(f"  {name:12} {mean:.3f} ({mean - ref:+.3f}){'  ' + marks if marks else ''}")
    if args.json:
        args.json.write_text(json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
