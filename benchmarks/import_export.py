"""Benchmark: import N generated 256×256 PNGs (with COCO boxes), then export COCO; the same boxes as Label Studio
JSON tasks imported and exported; wall time and peak RSS.

    .venv/bin/python benchmarks/import_export.py                # 10,000 images, 100,000 boxes (the issue's goal)
    .venv/bin/python benchmarks/import_export.py --images 1000  # a quick look
    .venv/bin/python benchmarks/import_export.py --phases import-images,import-coco,import-labelstudio,export-coco-labels-only,export-labelstudio-labels-only

Each phase runs in its own process so its peak RSS (ru_maxrss) is its own. Figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path


def _png_bytes(index: int, size: int = 256) -> bytes:
    """A distinct smooth image per index, written with zlib directly (fast, small files)."""
    import numpy as np

    y, x = np.mgrid[0:size, 0:size]
    image = ((x * (1 + index % 7) + y * (1 + index % 11) + index) % 256).astype(np.uint8)
    image[0, :8] = np.frombuffer(index.to_bytes(8, "little"), np.uint8)  # guarantees distinct content
    raw = b"".join(b"\0" + row.tobytes() for row in image)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = size.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


PHASES = ("baseline-file-work", "import-images", "import-coco", "baseline-json-dump", "export-coco-labels-only",
          "export-coco", "import-labelstudio", "export-labelstudio-labels-only", "export-labelstudio")
LS_VERSUS_COCO = (("import-labelstudio", "import-coco"), ("export-labelstudio-labels-only", "export-coco-labels-only"),
                  ("export-labelstudio", "export-coco"))


def generate(folder: Path, images: int, boxes_per_image: int) -> None:
    import random

    rng = random.Random(0)
    (folder / "images").mkdir(parents=True)
    coco_images, annotations = [], []
    for n in range(images):
        name = f"img_{n:06d}.png"
        (folder / "images" / name).write_bytes(_png_bytes(n))
        coco_images.append({"id": n + 1, "file_name": name, "width": 256, "height": 256})
        for _ in range(boxes_per_image):
            x, y = rng.uniform(0, 200), rng.uniform(0, 200)
            w, h = rng.uniform(4, 56), rng.uniform(4, 56)
            annotations.append({"id": len(annotations) + 1, "image_id": n + 1, "category_id": rng.randint(1, 5),
                                "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)], "area": round(w * h, 2), "iscrowd": 0})
    categories = [{"id": i, "name": f"class{i}"} for i in range(1, 6)]
    (folder / "annotations.json").write_text(json.dumps({"images": coco_images, "annotations": annotations, "categories": categories}))
    write_labelstudio(folder, coco_images, annotations)


def write_labelstudio(folder: Path, images: list[dict], annotations: list[dict]) -> None:
    """The same boxes as Label Studio JSON tasks (percent of the image), one task per image."""
    results: dict[int, list[dict]] = {image["id"]: [] for image in images}
    for ann in annotations:
        x, y, w, h = ann["bbox"]
        results[ann["image_id"]].append({
            "id": f"r{ann['id']}", "type": "rectanglelabels", "from_name": "label", "to_name": "image",
            "original_width": 256, "original_height": 256, "image_rotation": 0,
            "value": {"x": x / 2.56, "y": y / 2.56, "width": w / 2.56, "height": h / 2.56, "rotation": 0,
                      "rectanglelabels": [f"class{ann['category_id']}"]}})
    tasks = [{"id": image["id"], "data": {"image": f"images/{image['file_name']}"},
              "annotations": [{"id": image["id"], "result": results[image["id"]], "was_cancelled": False}]}
             for image in images]
    (folder / "labelstudio.json").write_text(json.dumps(tasks))


def phase(name: str, workdir: Path, data: Path) -> dict:
    """Runs inside a child process."""
    from labelloop.services.data.exporting import export_project
    from labelloop.services.data.importing import import_path
    from labelloop.services.projects import create_project
    from labelloop.services.workspace import Workspace

    workspace = Workspace.open(workdir / "ws", create=True)
    start = time.perf_counter()
    if name == "import-images":
        with workspace.session() as session:
            create_project(session, "plain", "classification", ["a"])
        report = import_path(workspace, "plain", data / "images", format="images")
        result = {"items": report.items_added}
    elif name == "import-coco":
        with workspace.session() as session:
            create_project(session, "boxes", "detection")
        report = import_path(workspace, "boxes", data / "annotations.json", format="coco")
        result = {"items": report.items_added, "annotations": report.annotations_added}
    elif name == "export-coco":
        summary = export_project(workspace, "boxes", workdir / "export", format="coco")
        result = {"items": summary.items, "shapes": summary.shapes}
    elif name == "export-coco-labels-only":
        summary = export_project(workspace, "boxes", workdir / "export-labels", format="coco", images=False)
        result = {"items": summary.items, "shapes": summary.shapes}
    elif name == "import-labelstudio":
        with workspace.session() as session:
            create_project(session, "ls-boxes", "detection")
        report = import_path(workspace, "ls-boxes", data / "labelstudio.json", format="labelstudio")
        result = {"items": report.items_added, "annotations": report.annotations_added}
    elif name == "export-labelstudio":
        summary = export_project(workspace, "ls-boxes", workdir / "export-ls", format="labelstudio")
        result = {"items": summary.items, "shapes": summary.shapes}
    elif name == "export-labelstudio-labels-only":
        summary = export_project(workspace, "ls-boxes", workdir / "export-ls-labels", format="labelstudio", images=False)
        result = {"items": summary.items, "shapes": summary.shapes}
    elif name == "baseline-file-work":
        # The floor under any importer: decode every image, hash it, copy it once (no database, no checks).
        import hashlib

        from PIL import Image

        target = workdir / "baseline-copies"
        target.mkdir()
        for path in sorted((data / "images").iterdir()):
            with Image.open(path) as image:
                image.load()
            hashlib.sha256(path.read_bytes()).hexdigest()
            shutil.copyfile(path, target / path.name)
        result = {"items": len(list(target.iterdir()))}
    elif name == "baseline-json-dump":
        # The naive exporter: the whole COCO document built in memory and dumped at once (labels only).
        document = json.loads((data / "annotations.json").read_text())
        start = time.perf_counter()
        with open(workdir / "naive.json", "w") as handle:
            json.dump(document, handle)
        result = {"shapes": len(document["annotations"])}
    else:
        raise SystemExit(f"unknown phase {name}")
    result["seconds"] = round(time.perf_counter() - start, 2)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--boxes-per-image", type=int, default=10)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder, removed afterwards")
    parser.add_argument("--phases", default=",".join(PHASES),
                        help="comma-separated phases, in order (import-images must come before the label imports)")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase == "generate":
        generate(args.data, args.images, args.boxes_per_image)
        return
    if args.phase:
        print(json.dumps(phase(args.phase, args.workdir, args.data)))
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="labelloop-bench-"))
    data = workdir / "data"
    try:
        start = time.perf_counter()
        # In a child process: a phase's ru_maxrss starts from its parent's RSS at the fork, so the parent stays small.
        subprocess.run([sys.executable, __file__, "--phase", "generate", "--data", str(data), "--images", str(args.images),
                        "--boxes-per-image", str(args.boxes_per_image)], check=True)
        print(f"generated {args.images} PNGs and {args.images * args.boxes_per_image} boxes in {time.perf_counter() - start:.1f} s")
        results = {}
        phases = [name for name in args.phases.split(",") if name]
        for name in phases:
            out = subprocess.run([sys.executable, __file__, "--phase", name, "--workdir", str(workdir), "--data", str(data)],
                                 check=True, capture_output=True, text=True, env={**os.environ})
            results[name] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{name:24s} {json.dumps(results[name])}")
        if {"import-images", "baseline-file-work"} <= results.keys():
            ratio = results["import-images"]["seconds"] / results["baseline-file-work"]["seconds"]
            print(f"import-images takes {ratio:.2f}× the bare decode+hash+copy of the same files")
            per_1000 = results["import-images"]["seconds"] / args.images * 1000
            print(f"import: {per_1000:.2f} s per 1,000 images (Label Studio 1.23 here: 5-16 s per 1,000)")
        for ls, coco in LS_VERSUS_COCO:
            if {ls, coco} <= results.keys():
                ratio = results[ls]["seconds"] / results[coco]["seconds"]
                rss = results[ls]["peak_rss_mb"] / results[coco]["peak_rss_mb"]
                print(f"{ls}: {ratio:.2f}× the time and {rss:.2f}× the peak RSS of {coco} (goal: within 2×)")
        print(json.dumps({"images": args.images, "boxes": args.images * args.boxes_per_image, **results}))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
