"""Import 100,000 small image files into PostgreSQL through the real import path (issue 22, item 3).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scale_import.py [--count 100000] [--images DIR] [--profile FILE]
        [--url postgresql://...] [--sqlite]

Writes --count distinct 32×32 grey PNGs (a gradient with the file's number in its first pixels) into --images (a
temporary folder unless given; an existing folder with the right count is reused), then, in a child process,
imports the folder into a fresh workspace whose database is a fresh schema of the PostgreSQL server
(LABELLOOP_TEST_DATABASE_URL, else postgres@127.0.0.1/test; --sqlite for the default SQLite instead) with
`import_path`, as `labelloop import` does: every file decoded, hashed, copied into the blob store, then the rows
written in one transaction. Prints one JSON line: seconds, items/s (goal >= 2,000), the child's peak RSS, and the
time per stage read from the import's progress messages. --profile writes the child's cProfile stats.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

DEFAULT_URL = os.environ.get("LABELLOOP_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
PER_FOLDER = 1000


def _write_block(folder: str, start: int, stop: int) -> None:
    import numpy as np
    from PIL import Image

    base = np.add.outer(np.arange(32), np.arange(32)).astype(np.uint8) * 4
    for n in range(start, stop):
        pixels = base.copy()
        pixels[0, :8] = np.frombuffer(n.to_bytes(8, "big"), dtype=np.uint8)
        target = Path(folder) / f"{n // PER_FOLDER:04d}"
        target.mkdir(exist_ok=True)
        Image.fromarray(pixels).save(target / f"img{n:07d}.png")


def generate(folder: Path, count: int) -> float:
    """Distinct small PNGs in sub-folders of PER_FOLDER; returns seconds (0 when the folder was already there)."""
    marker = folder / f".count-{count}"
    if marker.exists():
        return 0.0
    started = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_write_block, [str(folder)] * (count // PER_FOLDER + 1),
                      range(0, count, PER_FOLDER), [min(s + PER_FOLDER, count) for s in range(0, count, PER_FOLDER)]))
    marker.write_text("")
    return time.perf_counter() - started


IMPORT = """
import cProfile, json, resource, sys, time
from labelloop.services.workspace import Workspace
from labelloop.services.projects import create_project
from labelloop.services.data.importing import import_path
root, url, images, profile = sys.argv[1], sys.argv[2] or None, sys.argv[3], sys.argv[4]
ws = Workspace.init(root, database_url=url)
with ws.session() as session:
    create_project(session, "imported", "classification", ["a", "b"])
stages, last = {}, [None, time.perf_counter()]
def progress(done, total, message):
    now = time.perf_counter()
    if last[0] is not None:
        stages[last[0]] = stages.get(last[0], 0.0) + now - last[1]
    last[:] = [message, now]
profiler = cProfile.Profile() if profile else None
started = time.perf_counter()
if profiler:
    profiler.enable()
report = import_path(ws, "imported", images, format="images", progress=progress)
seconds = time.perf_counter() - started
if profiler:
    profiler.disable()
    profiler.dump_stats(profile)
stages[last[0]] = stages.get(last[0], 0.0) + time.perf_counter() - last[1]
print(json.dumps({"seconds": seconds, "items": report.items_added,
                  "stages": {k: round(v, 2) for k, v in stages.items()},
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--images", type=Path, help="folder for the generated PNGs (kept; reused when complete)")
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--sqlite", action="store_true", help="import into the workspace's SQLite database")
    parser.add_argument("--profile", type=Path, help="write the import's cProfile stats here")
    args = parser.parse_args()

    import psycopg

    scratch = Path(tempfile.mkdtemp(prefix="scale-import-"))
    images = args.images or scratch / "images"
    report: dict = {"count": args.count, "load_average_start": os.getloadavg()}
    report["generate_seconds"] = round(generate(images, args.count), 1)
    schema = f"import_{uuid.uuid4().hex[:8]}"
    url = ""
    if not args.sqlite:
        with psycopg.connect(args.url, autocommit=True) as connection:
            connection.execute(f'CREATE SCHEMA "{schema}"')
        url = f"{args.url}{'&' if '?' in args.url else '?'}options=-csearch_path%3D{schema}"
    try:
        done = subprocess.run([sys.executable, "-c", IMPORT, str(scratch / "ws"), url, str(images),
                               str(args.profile or "")], capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(done.stderr)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        report.update(database="sqlite" if args.sqlite else "postgresql", seconds=round(result["seconds"], 1),
                      items=result["items"], items_per_second=round(result["items"] / result["seconds"]),
                      peak_rss_mb=round(result["peak_rss_mb"]), stages=result["stages"],
                      load_average_end=os.getloadavg())
        print(json.dumps(report), flush=True)  # before the clean-up: removing 100,000 blobs takes minutes here
    finally:
        if not args.sqlite:
            with psycopg.connect(args.url, autocommit=True) as connection:
                connection.execute(f'DROP SCHEMA "{schema}" CASCADE')
        shutil.rmtree(scratch / "ws", ignore_errors=True)
        if args.images is None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
