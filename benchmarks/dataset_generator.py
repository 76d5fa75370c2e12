"""Benchmark: the dataset generator writing augmented patch pairs from Lucchi slices, one process vs workers.

    .venv/bin/python benchmarks/dataset_generator.py                 # 5,000 pairs, workers 1 and 2
    .venv/bin/python benchmarks/dataset_generator.py --count 1000 --workers 1,2,4

Each setting writes the same --count 256×256 pairs (default augmentation, PNG, seed 0) from the first --slices
training slices into a fresh folder; the runs go back to back so their ratio sees the same machine load. Reports
seconds, pairs per second, the speed-up over one process, peak RSS of the parent and of the largest worker,
and whether every file's bytes equal the one-process run's.
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lucchi_mito" / "train"


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--slices", type=int, default=10)
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--workers", default="1,2")
    args = parser.parse_args(argv)
    if not (DATA / "images").is_dir():
        print(f"dataset not found at {DATA}", file=sys.stderr)
        return 2
    from labelloop.ml.dataset_generator import PatchSpec, folder_sources, generate

    sources = folder_sources(DATA / "images", DATA / "masks")[: args.slices]
    settings = [int(w) for w in args.workers.split(",")]
    rows, reference = [], None
    scratch = Path(tempfile.mkdtemp(prefix="labelloop-dataset-bench-"))
    try:
        for workers in settings:
            out = scratch / f"w{workers}"
            start = time.perf_counter()
            generate(sources, out, count=args.count, patch=PatchSpec(size=args.patch), seed=0, workers=workers)
            seconds = time.perf_counter() - start
            digest = _digest(out)
            reference = reference or digest
            rows.append((workers, seconds, digest == reference))
            shutil.rmtree(out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    parent_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"{args.count} pairs of {args.patch}x{args.patch} from {len(sources)} Lucchi slices, default augmentation, PNG")
    print(f"{'workers':>8}{'seconds':>10}{'pairs/s':>10}{'speed-up':>10}{'same bytes':>12}")
    for workers, seconds, same in rows:
        print(f"{workers:>8}{seconds:>10.1f}{args.count / seconds:>10.0f}{rows[0][1] / seconds:>10.2f}{str(same):>12}")
    print(f"peak RSS: parent {parent_mb:.0f} MB, largest worker {child_mb:.0f} MB")
    return 0 if all(same for _, _, same in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
