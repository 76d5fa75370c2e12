"""Benchmark: import N generated 256×256 PNGs (with COCO boxes), then export COCO; wall time and peak RSS.

    .venv/bin/python benchmarks/import_export.py                # 10,000 images, 100,000 boxes (the issue's goal)
    .venv/bin/python benchmarks/import_export.py --images 1000  # a quick look

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
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase(args.phase, args.workdir, args.data)))
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="labelloop-bench-"))
    data = workdir / "data"
    try:
        start = time.perf_counter()
        generate(data, args.images, args.boxes_per_image)
        print(f"generated {args.images} PNGs and {args.images * args.boxes_per_image} boxes in {time.perf_counter() - start:.1f} s")
        results = {}
        phases = ("baseline-file-work", "import-images", "import-coco", "baseline-json-dump", "export-coco-labels-only", "export-coco")
        for name in phases:
            out = subprocess.run([sys.executable, __file__, "--phase", name, "--workdir", str(workdir), "--data", str(data)],
                                 check=True, capture_output=True, text=True, env={**os.environ})
            results[name] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{name:24s} {json.dumps(results[name])}")
        ratio = results["import-images"]["seconds"] / results["baseline-file-work"]["seconds"]
        print(f"import-images takes {ratio:.2f}× the bare decode+hash+copy of the same files")
        per_1000 = results["import-images"]["seconds"] / args.images * 1000
        print(f"import: {per_1000:.2f} s per 1,000 images (Label Studio 1.23 here: 5-16 s per 1,000)")
        print(json.dumps({"images": args.images, "boxes": args.images * args.boxes_per_image, **results}))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
