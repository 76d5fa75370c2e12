"""Benchmark: Lucchi as a stack. Label 3 of its 33 slices, train the pixel classifier on them, predict the other 30.

    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/micro_stack.py                      # seeds 0,1,2, both variants
    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/micro_stack.py --seeds 0 --variants scribbles   # a quick look
    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/micro_stack.py --queue-items 100000   # the order's cost

The training split of /work/shared/data/lucchi_mito is every 5th slice (0, 5, ..., 160) of a 165-slice FIB-SEM
volume, so neighbouring files are 5 slices (25 nm) apart. A seed picks 3 evenly spaced labelled slices (file
positions o, o+11, o+22 with o = 5, 4, 6 for seeds 0, 1, 2) and the forest's random state. Variants of what the
labelled slices give the forest:
- scribbles: 1,000 random truth pixels per class per labelled slice (the protocol of benchmarks/pixel_classifier.py);
- dense: the labelled slices' whole truth masks (a person who drew every mitochondrion), of which the forest
  trains on a uniform random sample of --dense-pixels pixels per slice (true class proportions, ~7 % mitochondria;
  the forest's balanced class weights even them out);
- copy (no model): each slice gets the truth mask of its nearest labelled slice, which measures how fast the volume
  changes from slice to slice (what a propagating model starts from);
- micro-unet, micro-rf: the product's path end to end: the 33 slices imported into a semantic project of a fresh
  SQLite workspace (a folder of numbered slices: one stack), the 3 labelled slices' truth masks saved as a person's
  masks, `train --model micro --class mitochondrion --base unet|pixel-rf` (held-out pixels calibrate its threshold
  for the project's target precision), `chain` and `predict --chain` on the other 30; scored on the chain's
  pre-labels as they are written. U-Net settings: --unet-epochs x --unet-steps (fixed, so not load-dependent).

Foreground (mitochondrion) IoU pooled over the pixels of the 30 other slices, and per distance to the nearest
labelled slice (in volume slices): does quality fall with distance? That is the reason for the queue order
`nearest-labelled` (services/labelling/stack_order.py), which serves those neighbours first.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lucchi_mito" / "train"
SPACING = 5  # volume slices between neighbouring files
OFFSETS = {0: 5, 1: 4, 2: 6}  # seed -> file position of the first labelled slice
GATE_PX_PER_SLICE = 2  # --gate: search radius (px) per volume slice of distance; fixed before any run, not tuned


def _slices() -> list[int]:
    return sorted(int(p.stem.split("_")[1]) for p in (DATA / "images").glob("slice_*.png"))


def _load(index: int) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    image = np.asarray(Image.open(DATA / "images" / f"slice_{index:03d}.png"))
    mask = np.asarray(Image.open(DATA / "masks" / f"slice_{index:03d}.png")) > 127
    return image, mask


def labelled_slices(slices: list[int], seed: int) -> list[int]:
    offset = OFFSETS.get(seed, seed % 11)
    return [slices[p] for p in (offset, offset + 11, offset + 22)]


def _labels(mask: np.ndarray, variant: str, rng: np.random.Generator, dense_pixels: int) -> np.ndarray:
    """Class map for the forest: 1 = background, 2 = mitochondrion, 0 = unlabelled."""
    labels = np.zeros(mask.shape, np.uint8)
    if variant == "dense":  # the whole truth mask, of which the forest trains on a uniform random sample
        idx = rng.choice(mask.size, min(dense_pixels, mask.size), replace=False)
        labels.flat[idx] = np.where(mask.flat[idx], 2, 1)
        return labels
    for value, region in ((1, ~mask), (2, mask)):
        idx = np.flatnonzero(region)
        labels.flat[rng.choice(idx, min(1000, idx.size), replace=False)] = value
    return labels


class _CopyNearest:
    """No model: each slice gets the truth mask of its nearest labelled slice (how fast does the volume change?)."""

    training_seconds_ = 0.0
    intensity = "-"

    def __init__(self, seeds_of: list[int]):
        self.masks = {index: _load(index)[1] for index in seeds_of}

    def foreground(self, index: int, image: np.ndarray) -> np.ndarray:
        return self.masks[min(self.masks, key=lambda s: (abs(s - index), s))]


def _gate(foreground: np.ndarray, nearest: np.ndarray, distance: int) -> np.ndarray:
    """Keep the predicted pixels within GATE_PX_PER_SLICE x distance pixels of the nearest labelled slice's
    mitochondria (they persist from slice to slice; most false positives lie elsewhere)."""
    import cv2

    radius = max(1, int(GATE_PX_PER_SLICE * distance))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return foreground & cv2.dilate(nearest.astype(np.uint8), kernel).astype(bool)


def _summary(name: str, seed: int, seeds_of: list[int], per_slice: list[dict], extra: dict) -> dict:
    by_distance: dict[int, list[int]] = {}
    for row in per_slice:
        pooled = by_distance.setdefault(row["distance"], [0, 0, 0])
        pooled[0] += row["inter"]
        pooled[1] += row["union"]
        pooled[2] += 1
    inter = sum(r["inter"] for r in per_slice)
    union = sum(r["union"] for r in per_slice)
    return {"variant": name, "seed": seed, "labelled": seeds_of, "iou": inter / union,
            "mean_slice_iou": float(np.mean([r["inter"] / r["union"] for r in per_slice])),
            "by_distance": {d: {"iou": v[0] / v[1], "slices": v[2]} for d, v in sorted(by_distance.items())},
            **extra}


def run(variant: str, seed: int, args) -> list[dict]:
    """One variant and seed; with --gate also the same predictions gated by the nearest labelled mask."""
    from labelloop.ml.pixel_classifier import PixelClassifier
    from labelloop.services.labelling.stack_order import distances

    slices = _slices()
    seeds_of = labelled_slices(slices, seed)
    copy = _CopyNearest(seeds_of)
    if variant == "copy":
        clf = copy
        predict = copy.foreground
    else:
        rng = np.random.default_rng(seed)
        images, labels = [], []
        for index in seeds_of:
            image, mask = _load(index)
            images.append(image)
            labels.append(_labels(mask, variant, rng, args.dense_pixels))
        clf = PixelClassifier(n_estimators=args.n_estimators, autocontext=args.autocontext, random_state=seed,
                              n_jobs=args.jobs).fit(images, labels)

        def predict(index: int, image: np.ndarray) -> np.ndarray:
            return clf.predict(image) == 2
    gated = args.gate and variant != "copy"
    distance = dict(zip(slices, distances(slices, seeds_of)))
    per_slice: dict[str, list[dict]] = {variant: [], f"{variant}+gate": []}
    seconds = 0.0
    for index in slices:
        if index in seeds_of:
            continue
        image, mask = _load(index)
        start = time.perf_counter()
        found = {variant: predict(index, image)}
        seconds += time.perf_counter() - start
        if gated:
            found[f"{variant}+gate"] = _gate(found[variant], copy.foreground(index, image), int(distance[index]))
        for name, foreground in found.items():
            per_slice[name].append({"slice": index, "distance": int(distance[index]),
                                    "inter": int(np.count_nonzero(foreground & mask)),
                                    "union": int(np.count_nonzero(foreground | mask))})
    extra = {"train_s": clf.training_seconds_, "predict_s_per_slice": seconds / len(per_slice[variant]),
             "intensity": getattr(clf, "intensity_", clf.intensity)}
    return [_summary(name, seed, seeds_of, rows, extra) for name, rows in per_slice.items() if rows]


def queue_timing(items: int, pages: int, labelled: int, root: Path) -> dict:
    """The order's cost on a big SQLite project: items/pages multi-page files of `pages` pages each (rows written
    directly, no pixels), `labelled` pages labelled through annotations.save, then `next` claims."""
    import dataclasses
    import hashlib
    import statistics

    from sqlalchemy import insert

    from labelloop.domain import ClassLabel
    from labelloop.services.labelling import annotations, queue, stack_order, users
    from labelloop.services.projects import create_project, get_project, get_row, update_settings
    from labelloop.services.workspace import Workspace
    from labelloop.store.tables import BlobRow, ItemRow

    ws = Workspace.init(root / "workspace")
    with ws.session() as session:
        project_id = create_project(session, "big", "classification", ["mito", "none"]).id
        update_settings(session, get_row(session, "big"), {"sampling": stack_order.NAME})
    stacks = items // pages
    shas = [hashlib.sha256(str(n).encode()).hexdigest() for n in range(stacks)]
    with ws.session() as session:
        session.execute(insert(BlobRow), [{"sha256": sha, "size": 1000} for sha in shas])
        session.execute(insert(ItemRow), [
            {"project_id": project_id, "blob_sha256": sha, "source": f"vol{k:05d}.tif", "page": p, "format": "tiff",
             "width": 64, "height": 48, "dtype": "uint8", "channels": 1, "meta": {}, "split": "none",
             "position": int.from_bytes(hashlib.sha256(f"{sha}:{p}".encode()).digest()[:8], "big") >> 1}
            for k, sha in enumerate(shas) for p in range(pages)])
    with ws.session() as session:
        project = get_project(session, "big")
        ann = users.create_user(session, "ann").id
        bob = users.create_user(session, "bob").id
        ids = [row[0] for row in session.execute(ItemRow.__table__.select().with_only_columns(ItemRow.id)
                                                  .order_by(ItemRow.id))]
    result = {"items": items, "pages_per_stack": pages}
    start = time.perf_counter()
    with ws.session() as session:
        stack_order.refresh(session.connection(), project.id)
    result["first_refresh_s"] = time.perf_counter() - start  # works out every item's stack too
    rng = np.random.default_rng(0)
    # Saves alternate between the project as it is and the same project seen as `shuffled` (no re-ranking): the
    # difference of the medians is what the order adds to a save.
    plain = dataclasses.replace(project, settings={**project.settings, "sampling": "shuffled"})
    saves: dict[str, list[float]] = {"nearest-labelled": [], "shuffled": []}
    for n, item_id in enumerate(rng.choice(ids, 2 * labelled, replace=False)):
        seen_as = project if n % 2 == 0 else plain
        start = time.perf_counter()
        with ws.session() as session:
            annotations.save(session, seen_as, int(item_id), [ClassLabel("mito")], author="ann", base_version=None)
            queue.mark_done(session, seen_as, int(item_id), ann)
        saves[seen_as.settings["sampling"]].append(time.perf_counter() - start)
    result["save_ms_median"] = {name: 1000 * statistics.median(v) for name, v in saves.items()}
    start = time.perf_counter()
    with ws.session() as session:
        stack_order.refresh(session.connection(), project.id)
    result["refresh_s"] = time.perf_counter() - start
    claims = []
    for _ in range(30):
        start = time.perf_counter()
        lease = queue.next_item(ws, project, bob)
        claims.append(time.perf_counter() - start)
        queue.skip(ws, project, lease.item_id, bob)
    result["next_ms_median"] = 1000 * statistics.median(claims)
    ws.close()
    return result


def run_micro(base: str, seed: int, args) -> list[dict]:
    """The product's micro-model path on the stack (see the module's doc): IoU of the chain's pre-labels."""
    import shutil
    import tempfile

    from PIL import Image

    from labelloop.domain import Mask
    from labelloop.geometry import rle
    from labelloop.services.assist.micro import set_chain
    from labelloop.services.data.importing import import_path
    from labelloop.services.jobs import create_job, run_job
    from labelloop.services.labelling import annotations
    from labelloop.services.labelling.stack_order import distances
    from labelloop.services.projects import create_project, get_project
    from labelloop.services.workspace import Workspace
    from labelloop.store.tables import ItemRow, PredictionRow
    from sqlalchemy import select

    slices = _slices()
    seeds_of = labelled_slices(slices, seed)
    root = Path(tempfile.mkdtemp(prefix="micro_stack_"))
    try:
        folder = root / "slices"
        folder.mkdir()
        for index in slices:
            shutil.copy(DATA / "images" / f"slice_{index:03d}.png", folder / f"slice_{index:03d}.png")
        workspace = Workspace.init(root / "ws")
        with workspace.session() as session:
            create_project(session, "stack", "semantic", ["mitochondrion"])
        import_path(workspace, "stack", folder, format="images")
        with workspace.session() as session:
            project = get_project(session, "stack")
            by_slice = {int(Path(r.source).stem.split("_")[1]): r.id
                        for r in session.scalars(select(ItemRow).where(ItemRow.project_id == project.id))}
            for index in seeds_of:
                size, counts = rle.encode(_load(index)[1])
                annotations.save(session, project, by_slice[index], [Mask("mitochondrion", size, counts)],
                                 author="expert", base_version=None)
        params = {"project": "stack", "class": "mitochondrion", "base": base, "seed": seed,
                  "min_examples": len(seeds_of)}
        if base == "unet":
            params.update(epochs=args.unet_epochs, steps_per_epoch=args.unet_steps, threads=args.jobs)
        started = time.perf_counter()
        job = run_job(workspace, create_job(workspace, "micro-train", params))
        train_s = time.perf_counter() - started
        if job.state != "done":
            raise SystemExit(f"micro-train failed: {job.error}")
        line = job.result["lines"][0]
        print(line, flush=True)
        from labelloop.services.assist.model_kinds.micro import in_use

        with workspace.session() as session:
            trained = in_use(workspace, get_project(session, "stack"), "mitochondrion")
        model_figures = {k: trained.metrics.get(k) for k in ("epochs", "steps", "best_epoch", "unet_stopped",
                                                             "measured_on", "held_out_iou", "threshold")} \
            if trained else {}
        print(json.dumps(model_figures), flush=True)
        set_chain(workspace, "stack", ["micro:mitochondrion"])
        others = [by_slice[i] for i in slices if i not in seeds_of]
        started = time.perf_counter()
        job = run_job(workspace, create_job(workspace, "chain-predict", {"project": "stack", "items": others}))
        predict_s = time.perf_counter() - started
        if job.state != "done":
            raise SystemExit(f"chain-predict failed: {job.error}")
        distance = dict(zip(slices, distances(slices, seeds_of)))
        with workspace.session() as session:
            shapes = dict(session.execute(select(PredictionRow.item_id, PredictionRow.shapes)).all())
        per_slice = []
        for index in slices:
            if index in seeds_of:
                continue
            mask = _load(index)[1]
            found = np.zeros(mask.shape, bool)
            for shape in shapes[by_slice[index]]:
                found |= rle.decode(Mask(shape["label"], tuple(shape["size"]), shape["counts"]))
            per_slice.append({"slice": index, "distance": int(distance[index]),
                              "inter": int(np.count_nonzero(found & mask)), "union": int(np.count_nonzero(found | mask))})
        metrics = job.result
        workspace.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    extra = {"train_s": train_s, "predict_s_per_slice": predict_s / len(per_slice), "intensity": "-",
             "micro": line, "threshold": metrics["thresholds"].get("mitochondrion"), "model": model_figures}
    return [_summary(f"micro-{'rf' if base == 'pixel-rf' else base}", seed, seeds_of, per_slice, extra)]


def _report(result: dict) -> None:
    steps = ", ".join(f"{d}: {v['iou']:.3f} ({v['slices']})" for d, v in result["by_distance"].items())
    print(f"{result['variant']} seed {result['seed']} labelled {result['labelled']}: IoU {result['iou']:.3f} "
          f"(mean per slice {result['mean_slice_iou']:.3f}); by distance in slices (n): {steps}; "
          f"train {result['train_s']:.1f} s, predict {result['predict_s_per_slice']:.2f} s/slice, "
          f"intensity {result['intensity']}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default="scribbles,dense")
    parser.add_argument("--n-estimators", type=int, default=20)
    parser.add_argument("--dense-pixels", type=int, default=50_000,
                        help="dense: pixels per labelled slice the forest trains on (all 786,432 take ~30x longer)")
    parser.add_argument("--autocontext", action="store_true")
    parser.add_argument("--gate", action="store_true",
                        help="also score each forest's predictions gated by the nearest labelled slice's mask")
    parser.add_argument("--jobs", type=int, default=2, help="forest threads (the benchmark machine has 2 cores)")
    parser.add_argument("--unet-epochs", type=int, default=80, help="micro-unet: epochs (x --unet-steps steps)")
    parser.add_argument("--unet-steps", type=int, default=9, help="micro-unet: steps per epoch")
    parser.add_argument("--json", type=Path, help="also write every run here")
    parser.add_argument("--queue-items", type=int, default=0,
                        help="instead: time the nearest-labelled order on this many items (SQLite, no pixels)")
    parser.add_argument("--queue-pages", type=int, default=100, help="pages per stack for --queue-items")
    parser.add_argument("--queue-labelled", type=int, default=50, help="pages labelled for --queue-items")
    args = parser.parse_args(argv)
    if args.queue_items:
        import tempfile

        with tempfile.TemporaryDirectory() as root:
            print(json.dumps(queue_timing(args.queue_items, args.queue_pages, args.queue_labelled, Path(root))))
        return 0
    if not (DATA / "images").is_dir():
        print(f"dataset not found at {DATA}", file=sys.stderr)
        return 2
    print(f"CPU threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, forest n_jobs={args.jobs}, "
          f"{os.cpu_count()} cores visible; autocontext={args.autocontext}")
    runs = []
    for variant in args.variants.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            micro = {"micro-unet": "unet", "micro-rf": "pixel-rf"}.get(variant)
            for result in (run_micro(micro, seed, args) if micro else run(variant, seed, args)):
                runs.append(result)
                _report(result)
    for variant in dict.fromkeys(r["variant"] for r in runs):
        mine = [r for r in runs if r["variant"] == variant]
        ious = [r["iou"] for r in mine]
        pooled: dict[int, list[float]] = {}
        for r in mine:
            for d, v in r["by_distance"].items():
                pooled.setdefault(d, []).append(v["iou"])
        steps = ", ".join(f"{d}: {np.mean(v):.3f}" for d, v in sorted(pooled.items()))
        print(f"{variant}: IoU {np.mean(ious):.3f} ± {np.std(ious):.3f} over {len(mine)} seeds; "
              f"mean by distance: {steps}")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
