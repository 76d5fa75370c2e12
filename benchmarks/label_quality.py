"""Benchmark: label errors, duplicates and scale of the quality checks (issue 21).

    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/label_quality.py labels --seeds 0 1 2
    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/label_quality.py duplicates
    OMP_NUM_THREADS=2 nice .venv/bin/python benchmarks/label_quality.py scale --items 100000 --threads 2
    OMP_NUM_THREADS=2 nice .venv/bin/python benchmarks/label_quality.py product --items 100000 --threads 2

labels: hymenoptera (398 photos, 2 classes) and clothing10 (1,501 photos, 10 classes) with 10 % of labels flipped
(seeded, uniformly to another class). Every item is scored by a classifier that never trained on it (5 cross-fitted
folds of the logistic regression on lite2 pooled embeddings) and cleanlab; the default cut (cleanlab's flag and a
majority of the 8 nearest labelled neighbours disagreeing) was chosen on hymenoptera, clothing10 only reports it.
Precision and recall at the default cut, at cleanlab's flag alone, and the precision-recall curve of the score.

duplicates: copies injected into a set (exact bytes, JPEG quality 60, half size, 5 % crop of each side; 25 of each,
seeded) plus the clean set's own pairs (SAME_PHOTO: found by eye among what the rule flags). Recall per kind (a copy
grouped with its original), the clean set's own pairs found, and false pairs: pairs that join two different
photographs. pHash (Hamming <= 8) and embeddings (cosine >= 0.9) nominate pairs, the pixel check of ml.same_picture
confirms them (--no-pixel-check: the nominated pairs as they are). All cuts were chosen on hymenoptera; clothing10
reports them.

scale: N synthetic embeddings (1280-d, 10 Gaussian classes, 10 % flipped labels): wall time and the process's peak
RSS during each stage: the SVD (compact), the neighbours (hnswlib above 50,000 items, with its recall against exact
search on 1,000 queries), outliers, semantic duplicates, label errors (cross-fitted), and pHash pairs over N random
hashes. --threads: hnswlib's threads and the label-error folds fitted at once. The same script times an older
checkout: PYTHONPATH=<old checkout>/src.

product: the embedding work of a full quality run (label errors, semantic duplicates, outliers as the services
call them, on the same synthetic embeddings; no database, no image measures), with the compaction and neighbours
shared between the checks and, in the same process, searched once per check as before: wall time, peak RSS, the
load average, and how far the two agree (Jaccard of what each check flags: hnswlib inserts in two threads, so two
builds of one graph differ, and with them the outliers near the cut).

Embeddings come from the cache of benchmarks/classifier_clothing10.py (/tmp/labelloop-embeddings), computed there
if missing. Figures in docs/quality.md came from a shared, loaded 2-core machine.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import classifier_clothing10 as datasets  # noqa: E402

from labelloop.ml.duplicates import MAX_HAMMING, MIN_COSINE  # noqa: E402

ENCODER = "tf_efficientnet_lite2"
CACHE = Path(os.environ.get("LABELLOOP_BENCH_CACHE", "/tmp/labelloop-embeddings"))
# The same photograph twice in a clean set (paths under the set's folder), each checked by eye (docs/quality.md).
SAME_PHOTO = {
    # one photo of black denim shorts, re-encoded: pHash distance 0, cosine 0.996, pixel correlation 1.000
    "clothing10": [("images/shorts/6075b4a5-5b1a-4ce0-aea0-9dbfbca7c35c.jpg",
                    "images/skirt/637a56e4-7fa6-4f75-8859-0f8902461554.jpg")],
}


def flipped_labels(y: np.ndarray, k: int, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    flip = rng.choice(len(y), round(share * len(y)), replace=False)
    noisy = y.copy()
    noisy[flip] = (y[flip] + rng.integers(1, k, len(flip))) % k
    truth = np.zeros(len(y), bool)
    truth[flip] = True
    return noisy, truth


def pr(selected: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    hits = int((selected & truth).sum())
    return hits / max(int(selected.sum()), 1), hits / max(int(truth.sum()), 1)


def curve(score: np.ndarray, truth: np.ndarray, points: int = 50) -> list[tuple[float, float, float]]:
    """(cut, precision, recall) over score cuts."""
    cuts = np.quantile(score, np.linspace(0.5, 0.999, points))
    return [(float(c), *pr(score >= c, truth)) for c in cuts]


def labels(args) -> dict:
    from labelloop.ml.label_errors import cross_fitted_proba, disagreement, label_issues, neighbour_votes, VOTE_CUT

    out = {}
    for name in args.datasets:
        files, y, _, classes = datasets.dataset(name)
        X, _ = datasets.embeddings(name, files, ENCODER, CACHE)
        k = len(classes)
        runs = []
        for seed in args.seeds:
            noisy, truth = flipped_labels(y, k, 0.1, seed)
            started = time.perf_counter()
            if args.head == "laststage":  # Lite2's last stage fine-tuned on trunk maps (classifier --head finetune)
                from labelloop.ml.finetune import LastStageClassifier

                maps, _ = datasets.trunk_maps(name, files, CACHE)
                proba = cross_fitted_proba(maps, noisy, k, estimator=LastStageClassifier(random_state=seed), seed=seed,
                                           threads=args.threads)
            else:
                proba = cross_fitted_proba(X, noisy, k, seed=seed)
            flagged, score = label_issues(proba, noisy)
            against = disagreement(neighbour_votes(X, noisy, k), noisy)
            seconds = time.perf_counter() - started
            default = flagged & (against >= VOTE_CUT)
            runs.append({"seed": seed, "default": pr(default, truth), "cleanlab_only": pr(flagged, truth),
                         "flagged": int(default.sum()), "flipped": int(truth.sum()), "seconds": round(seconds, 2),
                         "curve": curve(score, truth),
                         "curve_with_votes": curve(np.where(against >= VOTE_CUT, score, 0.0), truth)})
            print(f"{name} seed {seed}: default P {runs[-1]['default'][0]:.3f} R {runs[-1]['default'][1]:.3f} "
                  f"({runs[-1]['flagged']} flagged of {len(y)}, {runs[-1]['flipped']} flipped); cleanlab alone "
                  f"P {runs[-1]['cleanlab_only'][0]:.3f} R {runs[-1]['cleanlab_only'][1]:.3f}; {seconds:.1f} s",
                  flush=True)
        p = np.array([r["default"] for r in runs])
        out[name] = {"runs": runs, "precision_mean": round(float(p[:, 0].mean()), 4),
                     "recall_mean": round(float(p[:, 1].mean()), 4),
                     "precision_range": [round(float(p[:, 0].min()), 3), round(float(p[:, 0].max()), 3)],
                     "recall_range": [round(float(p[:, 1].min()), 3), round(float(p[:, 1].max()), 3)]}
        print(f"{name}: default cut precision {out[name]['precision_mean']} {out[name]['precision_range']}, "
              f"recall {out[name]['recall_mean']} {out[name]['recall_range']}", flush=True)
    if args.png:
        _pr_png(out, args.png)
    return out


def _pr_png(out: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(out), figsize=(5 * len(out), 4), squeeze=False)
    for ax, (name, result) in zip(axes[0], out.items()):
        for run in result["runs"]:
            c = np.array(run["curve"])
            ax.plot(c[:, 2], c[:, 1], color="tab:blue", alpha=0.5, label="score" if run is result["runs"][0] else None)
            c = np.array(run["curve_with_votes"])
            ax.plot(c[:, 2], c[:, 1], color="tab:orange", alpha=0.5,
                    label="score, neighbours disagree" if run is result["runs"][0] else None)
            ax.scatter([run["default"][1]], [run["default"][0]], color="black", zorder=3, s=12,
                       label="default cut" if run is result["runs"][0] else None)
        ax.set(title=f"{name}: 10 % flipped", xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02))
        ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def _copies(files: list[Path], per_kind: int, seed: int) -> list[tuple[int, str, bytes]]:
    """(index of the original, kind, encoded copy) for per_kind originals of each kind (distinct originals)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(files), 4 * per_kind, replace=False)
    copies = []
    for n, index in enumerate(chosen):
        kind = ("exact", "jpeg60", "half", "crop5")[n // per_kind]
        raw = files[index].read_bytes()
        if kind == "exact":
            copies.append((int(index), kind, raw))
            continue
        image = Image.open(io.BytesIO(raw)).convert("RGB")
        if kind == "half":
            image = image.resize((image.width // 2, image.height // 2), Image.Resampling.LANCZOS)
        elif kind == "crop5":
            dx, dy = round(image.width * 0.05), round(image.height * 0.05)
            image = image.crop((dx, dy, image.width - dx, image.height - dy))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=60 if kind == "jpeg60" else 95)
        copies.append((int(index), kind, buffer.getvalue()))
    return copies


def duplicates(args) -> dict:
    import hashlib

    from PIL import Image

    from labelloop.ml.duplicates import exact_pairs, group_pairs, perceptual_pairs, phash, semantic_pairs
    from labelloop.ml.embeddings import Embedder, centre_crop
    from labelloop.ml.same_picture import same_picture_pairs

    embedder = None
    out = {}
    for name in args.datasets:
        files, _, _, _ = datasets.dataset(name)
        X, _ = datasets.embeddings(name, files, ENCODER, CACHE)
        copies = _copies(files, args.per_kind, args.seed)
        cache = CACHE / f"{name}-copies-{args.seed}-{args.per_kind}.npz"
        if cache.is_file():
            stored = np.load(cache)
            copy_X, hashes = stored["X"], stored["hashes"]
        else:
            embedder = embedder or Embedder(ENCODER).load()
            pictures = [np.asarray(Image.open(io.BytesIO(raw)).convert("RGB")) for _, _, raw in copies]
            copy_X = np.concatenate([embedder.embed_crops([centre_crop(p, embedder.image_size) for p in pictures[i:i + 16]])
                                     for i in range(0, len(pictures), 16)])
            hashes = np.array([phash(np.asarray(Image.open(f).convert("RGB"))) for f in files] +
                              [phash(p) for p in pictures], np.int64)
            np.savez(cache, X=copy_X, hashes=hashes)
        content = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files] + \
                  [hashlib.sha256(raw).hexdigest() for _, _, raw in copies]
        all_X = np.concatenate([X, copy_X])
        n_clean = len(files)

        def picture(i: int) -> np.ndarray:
            source = files[i].read_bytes() if i < n_clean else copies[i - n_clean][2]
            return np.asarray(Image.open(io.BytesIO(source)).convert("RGB"))

        index_of = {f.relative_to(datasets.DATA / name).as_posix(): i for i, f in enumerate(files)}
        same_photo = [(index_of[a], index_of[b]) for a, b in SAME_PHOTO.get(name, [])]
        result = {}
        for hamming in args.hamming:
            for cosine in args.cosine:
                started = time.perf_counter()
                nominated = perceptual_pairs(hashes, hamming) + semantic_pairs(all_X, cosine)
                if not args.no_pixel_check:
                    nominated = same_picture_pairs(nominated, picture)
                pairs = exact_pairs(content) + nominated
                groups = group_pairs(pairs, len(content))
                seconds = time.perf_counter() - started
                group_of = {m: g for g, grp in enumerate(groups) for m in grp.members}
                recall = {}
                for kind in ("exact", "jpeg60", "half", "crop5"):
                    found = [group_of.get(n_clean + n) is not None and group_of.get(n_clean + n) == group_of.get(orig)
                             for n, (orig, k, _) in enumerate(copies) if k == kind]
                    recall[kind] = round(sum(found) / len(found), 3)
                own = [group_of.get(a) is not None and group_of.get(a) == group_of.get(b) for a, b in same_photo]
                copy_of = {n_clean + n: orig for n, (orig, _, _) in enumerate(copies)}
                photo_of = {b: a for a, b in same_photo}

                def source(i: int) -> int:
                    """The photograph an item shows."""
                    original = copy_of.get(i, i)
                    return photo_of.get(original, original)

                false_by: dict[tuple[int, int], str] = {}
                for i, j, test, _ in pairs:
                    if source(i) != source(j):
                        key = (min(source(i), source(j)), max(source(i), source(j)))
                        false_by[key] = min(false_by.get(key, test), test,
                                            key=("exact", "perceptual", "semantic").index)
                false_pairs = sorted(false_by)
                result[f"hamming<={hamming},cosine>={cosine}"] = {
                    "pixel_check": not args.no_pixel_check, "recall": recall,
                    "same_photo_found": f"{sum(own)} of {len(own)}", "false_pairs": len(false_pairs),
                    "false_pairs_per_1000": round(1000 * len(false_pairs) / n_clean, 2),
                    "false_pairs_by_test": {t: sum(v == t for v in false_by.values())
                                            for t in ("exact", "perceptual", "semantic")},
                    "false_pair_examples": [(files[a].name, files[b].name) for a, b in false_pairs[:8]],
                    "seconds": round(seconds, 2)}
                print(f"{name} hamming<={hamming} cosine>={cosine} pixel check {not args.no_pixel_check}: recall "
                      f"{recall}; the set's own same-photo pairs found {sum(own)} of {len(own)}; false pairs "
                      f"{len(false_pairs)} ({1000 * len(false_pairs) / n_clean:.2f} per 1,000 images; by test "
                      f"{result[f'hamming<={hamming},cosine>={cosine}']['false_pairs_by_test']})", flush=True)
        out[name] = result
    return out


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _peak(fn):
    """(value, seconds, peak RSS in MB of the whole process during fn). Linux: the high-water mark is reset first
    (/proc/self/clear_refs). tracemalloc, used before, slowed the stages that allocate many small arrays and missed
    what hnswlib and BLAS allocate."""
    Path("/proc/self/clear_refs").write_text("5")
    started = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - started
    return value, round(seconds, 2), round(_rss_mb("VmHWM"), 1)


def _exact_top(Z: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """The k most similar other rows of each query row by exact search, in blocks (bounded memory)."""
    from labelloop.ml.neighbours import unit_rows

    Zu = unit_rows(Z)
    out = np.empty((len(queries), k), np.int64)
    for start in range(0, len(queries), 100):
        q = queries[start:start + 100]
        sims = Zu[q] @ Zu.T
        sims[np.arange(len(q)), q] = -np.inf
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        out[start:start + len(q)] = np.take_along_axis(top, np.argsort(-np.take_along_axis(sims, top, 1), 1), 1)
    return out


def scale(args) -> dict:
    import inspect

    from labelloop.ml.duplicates import hamming_pairs, semantic_pairs
    from labelloop.ml.label_errors import find_suspects
    from labelloop.ml.neighbours import compact, neighbours, recall_at_k
    from labelloop.ml.outliers import knn_distance

    rng = np.random.default_rng(0)
    n, dim, k = args.items, 1280, 10
    centres = rng.normal(0, 1, (k, dim)).astype(np.float32)
    y = rng.integers(0, k, n)
    X = centres[y]
    for start in range(0, n, 10_000):  # in blocks: the benchmark's own data should not set the peak
        X[start:start + 10_000] += rng.normal(0, 1.5, (min(10_000, n - start), dim)).astype(np.float32)
    noisy, truth = flipped_labels(y, k, 0.1, 0)
    out = {"items": n, "dim": dim, "threads": args.threads}
    # An older checkout (PYTHONPATH=<old>/src) takes no `threads` in find_suspects: the same script times both.
    fold_threads = {"threads": args.threads} if "threads" in inspect.signature(find_suspects).parameters else {}
    total_started = time.perf_counter()
    del centres
    Z, out["compact_s"], out["compact_mb"] = _peak(lambda: compact(X))
    print(f"compact {out['compact_s']} s", flush=True)
    found, out["neighbours_s"], out["neighbours_mb"] = _peak(lambda: neighbours(Z, 10, threads=args.threads))
    print(f"neighbours {out['neighbours_s']} s", flush=True)
    queries = rng.choice(n, 1000, replace=False)
    out["hnsw_recall_at_10"] = round(recall_at_k(found[0][queries], _exact_top(Z, queries, 10)), 4)
    # the neighbours are computed once and shared by the three checks that read them
    _, out["outliers_s"], out["outliers_mb"] = _peak(lambda: knn_distance(Z, 5, found=found))
    _, out["semantic_duplicates_s"], out["semantic_duplicates_mb"] = _peak(lambda: semantic_pairs(Z, found=found))
    print(f"outliers {out['outliers_s']} s, semantic duplicates {out['semantic_duplicates_s']} s", flush=True)
    (suspects, _, _), out["label_errors_s"], out["label_errors_mb"] = _peak(
        lambda: find_suspects(Z, noisy, [str(c) for c in range(k)], found=found, **fold_threads))
    print(f"label errors {out['label_errors_s']} s", flush=True)
    flagged = np.zeros(n, bool)
    flagged[[s.index for s in suspects]] = True
    out["label_errors_pr"] = [round(v, 4) for v in pr(flagged, truth)]
    hashes = rng.integers(-(1 << 62), 1 << 62, n, dtype=np.int64)
    pairs, out["phash_pairs_s"], out["phash_pairs_mb"] = _peak(lambda: hamming_pairs(hashes))
    out["phash_pairs_found"] = len(pairs)
    out["total_s"] = round(time.perf_counter() - total_started, 1)
    stages = ("compact", "neighbours", "outliers", "semantic_duplicates", "label_errors", "phash_pairs")
    out["stages_s"] = round(sum(out[f"{stage}_s"] for stage in stages), 1)
    out["max_rss_mb"] = max(out[f"{stage}_mb"] for stage in stages)  # the process's peak over the stages
    out["exact_check"] = "exact kNN on 1,000 queries against all items (numpy)"
    print(json.dumps(out, indent=1), flush=True)
    return out


def _checks(X: np.ndarray, vectors: np.ndarray, noisy: np.ndarray, names: list[str], shared: bool,
            threads: int) -> dict:
    """The embedding work of a full quality run as services.quality.runs.run_checks makes it: label errors on the
    labelled set's embeddings (X), then semantic duplicates and outliers on every embedded item's (`vectors`, a
    separate array of the same content, as the services load it). `shared`: one NeighbourCache for the three
    (now); otherwise one each (before issue 21's sharing: three SVDs and three hnswlib graphs)."""
    from labelloop.ml.duplicates import NEIGHBOURS as SEMANTIC_NEIGHBOURS
    from labelloop.ml.duplicates import semantic_pairs
    from labelloop.ml.label_errors import VOTERS, find_suspects
    from labelloop.ml.neighbours import NeighbourCache
    from labelloop.ml.outliers import NEIGHBOURS as OUTLIER_NEIGHBOURS
    from labelloop.ml.outliers import OUTLIER_Z, knn_distance, robust_z

    cache = NeighbourCache(max(VOTERS, SEMANTIC_NEIGHBOURS, OUTLIER_NEIGHBOURS), threads=threads)
    fresh = (lambda: cache) if shared else (lambda: NeighbourCache(threads=threads))
    suspects, _, _ = find_suspects(X, noisy, names, seed=0, cache=fresh(), threads=threads)
    pairs = semantic_pairs(vectors, found=fresh().neighbours(vectors, SEMANTIC_NEIGHBOURS))
    z = robust_z(knn_distance(vectors, OUTLIER_NEIGHBOURS, found=fresh().neighbours(vectors, OUTLIER_NEIGHBOURS)))
    return {"label": {s.index for s in suspects}, "duplicate": {(i, j) for i, j, *_ in pairs},
            "outlier": set(np.flatnonzero(z >= OUTLIER_Z).tolist())}


def product(args) -> dict:
    """A full quality run's embedding work (the three checks as the services call them) on N synthetic 1280-d
    embeddings, with the neighbours shared and, in the same process, searched once per check as before."""
    import os

    rng = np.random.default_rng(0)
    n, dim, k = args.items, 1280, 10
    centres = rng.normal(0, 1, (k, dim)).astype(np.float32)
    y = rng.integers(0, k, n)
    X = centres[y]
    for start in range(0, n, 10_000):
        X[start:start + 10_000] += rng.normal(0, 1.5, (min(10_000, n - start), dim)).astype(np.float32)
    # something for the other two checks to find: 50 near-copies of other items and 50 unlike any class
    copies, strays = np.arange(n - 100, n - 50), np.arange(n - 50, n)
    X[copies] = X[copies - n // 2] + rng.normal(0, 0.1, (50, dim)).astype(np.float32)
    X[strays] = rng.normal(0, 1.5, (50, dim)).astype(np.float32)
    noisy, _ = flipped_labels(y, k, 0.1, 0)
    vectors = X.copy()
    names = [str(c) for c in range(k)]
    out = {"items": n, "dim": dim, "threads": args.threads, "data_mb": round(_rss_mb("VmRSS"), 1)}
    found = {}
    _checks(X[:300], vectors[:300], noisy[:300], names, True, 1)  # imports (sklearn, cleanlab) outside the timing
    for mode in args.modes:
        load = os.getloadavg()[0]
        found[mode], seconds, peak = _peak(lambda: _checks(X, vectors, noisy, names, mode == "shared", args.threads))
        out[mode] = {"seconds": seconds, "peak_rss_mb": peak, "load_before": round(load, 2),
                     "load_after": round(os.getloadavg()[0], 2), **{c: len(v) for c, v in found[mode].items()}}
        print(f"{mode}: {seconds} s, peak RSS {peak} MB, load {load:.2f} -> {out[mode]['load_after']}", flush=True)
    if len(found) == 2:
        out["ratio_separate_over_shared"] = round(out["separate"]["seconds"] / out["shared"]["seconds"], 2)
        # hnswlib inserts in threads: two graphs of the same vectors differ, hence agreement, not ==
        out["agreement"] = {c: round(len(found["shared"][c] & found["separate"][c]) /
                                     len(found["shared"][c] | found["separate"][c]), 4)
                            if found["shared"][c] | found["separate"][c] else 1.0 for c in found["shared"]}
    print(json.dumps(out, indent=1), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="part", required=True)
    p = sub.add_parser("labels")
    p.add_argument("--datasets", nargs="+", default=["hymenoptera", "clothing10"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--png", default=None, help="write the precision-recall curves here")
    p.add_argument("--head", choices=["logreg", "laststage"], default="logreg",
                   help="the cross-fitted classifier: logistic regression on embeddings (the product's), or Lite2's "
                        "last stage fine-tuned on trunk maps")
    p.add_argument("--threads", type=int, default=1, help="folds fitted at once (laststage)")
    p = sub.add_parser("duplicates")
    p.add_argument("--datasets", nargs="+", default=["hymenoptera", "clothing10"])
    p.add_argument("--per-kind", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hamming", nargs="+", type=int, default=[MAX_HAMMING])
    p.add_argument("--cosine", nargs="+", type=float, default=[MIN_COSINE])
    p.add_argument("--no-pixel-check", action="store_true", help="count the pairs pHash and embeddings nominate")
    p = sub.add_parser("scale")
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--threads", type=int, default=2, help="hnswlib threads and label-error folds fitted at once")
    p = sub.add_parser("product")
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--threads", type=int, default=2, help="hnswlib threads and label-error folds fitted at once")
    p.add_argument("--modes", nargs="+", choices=["separate", "shared"], default=["separate", "shared"],
                   help="separate: each check searches its own neighbours (as before); shared: once per run")
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args()
    result = {"labels": labels, "duplicates": duplicates, "scale": scale, "product": product}[args.part](args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
