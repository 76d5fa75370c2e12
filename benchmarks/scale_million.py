"""A million items on PostgreSQL (issue 22, item 3): how long the pages a user waits on take.

    .venv/bin/python benchmarks/scale_million.py [--items 1000000] [--annotators 16] [--url postgresql://...]

Builds, in a fresh schema of the PostgreSQL server (LABELLOOP_TEST_DATABASE_URL, else postgres@127.0.0.1/test),
a detection project of --items items (rows written with COPY; the items are references to blob rows without
files: the pages measured here never read pixels) with one box annotation on every second item. Then times,
through the same services the API calls:
- the projects list, the project's stats and its dashboard (goal <= 1 s each; best of 3, and the first call);
- a page of 100 items by cursor, in the middle of the project (goal <= 50 ms);
- `next` at --annotators concurrent annotators, each taking an item and passing on it at once, as threads of this
  process (goal p99 <= 50 ms), after one annotator alone; with --processes also as one process per annotator;
- a streamed COCO export (annotations only) of the annotated items, in a child process: its peak RSS (goal
  <= 500 MB) and its time.
The schema is dropped at the end (--keep to keep it). Figures depend on the machine; docs/benchmarks.md says which.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

DEFAULT_URL = os.environ.get("LABELLOOP_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def timed(function, repeat: int = 3) -> tuple[float, float]:
    """Best of `repeat` wall times in seconds, and the first one (which also warms the caches and imports)."""
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - started)
    return min(seconds), seconds[0]


def copy_rows(connection, statement: str, lines) -> None:
    """COPY text lines in blocks of ~8 MB."""
    with connection.cursor() as cursor, cursor.copy(statement) as copy:
        buffer = io.StringIO()
        for line in lines:
            buffer.write(line)
            if buffer.tell() > 8 << 20:
                copy.write(buffer.getvalue())
                buffer = io.StringIO()
        copy.write(buffer.getvalue())


def build(workspace, items: int, project_id: int) -> tuple[float, float]:
    """Blobs, items and annotations with COPY; returns (items seconds, annotations seconds)."""
    import random

    raw = workspace.engine.raw_connection()
    connection = raw.driver_connection
    rng = random.Random(0)
    now = "2026-01-01 00:00:00+00"
    started = time.perf_counter()
    shas = [hashlib.sha256(str(n).encode()).hexdigest() for n in range(items)]
    copy_rows(connection, "COPY blobs (sha256, size, created_at) FROM STDIN",
              (f"{sha}\t1000\t{now}\n" for sha in shas))
    copy_rows(connection, "COPY items (project_id, blob_sha256, source, page, format, width, height, dtype, channels, "
                          "metadata, split, position, created_at) FROM STDIN",
              (f"{project_id}\t{sha}\timg{n:07d}.png\t0\tpng\t64\t48\tuint8\t1\t{{}}\tnone\t"
               f"{rng.getrandbits(62)}\t{now}\n" for n, sha in enumerate(shas)))
    connection.commit()
    items_seconds = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("SELECT min(id) FROM items WHERE project_id = %s", (project_id,))
        first = cursor.fetchone()[0]
    box = json.dumps([{"type": "box", "label": "thing", "x0": 4, "y0": 4, "x1": 40, "y1": 30}])
    started = time.perf_counter()
    copy_rows(connection, "COPY annotations (item_id, version, author, state, source, shapes, created_at) FROM STDIN",
              (f"{first + n}\t1\tuser{n % 16:02d}\tsubmitted\thuman\t{box}\t{now}\n" for n in range(0, items, 2)))
    connection.commit()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    connection.commit()
    raw.close()
    return items_seconds, time.perf_counter() - started


def next_latencies(workspace, project, users: list[int], rounds: int) -> list[float]:
    """Each annotator asks for the next item and passes on it, `rounds` times, all at once."""
    from labelloop.services.labelling.queue import next_item, skip

    seconds: list[float] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def annotate(user_id: int) -> None:
        mine = []
        try:
            # One untimed call first: it opens the annotator's pooled connection, which a running server has open.
            skip(workspace, project, next_item(workspace, project, user_id).item_id, user_id)
            for _ in range(rounds):
                started = time.perf_counter()
                lease = next_item(workspace, project, user_id)
                mine.append(time.perf_counter() - started)
                skip(workspace, project, lease.item_id, user_id)
        except BaseException as exc:  # reported after the threads end
            errors.append(exc)
        with lock:
            seconds.extend(mine)

    threads = [threading.Thread(target=annotate, args=(u,)) for u in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return seconds


def _annotator_process(root: str, url: str, user_id: int, rounds: int, start, out) -> None:
    """One annotator in a process of its own (a server with one worker process per annotator, no shared GIL)."""
    from labelloop.services.projects import get_project
    from labelloop.services.workspace import Workspace

    workspace = Workspace.open(root, database_url=url)
    with workspace.session() as session:
        project = get_project(session, "million")
    start.wait()  # every process imported and connected: they start at once
    out.put(next_latencies(workspace, project, [user_id], rounds))
    workspace.close()


def next_latencies_processes(root: Path, url: str, users: list[int], rounds: int) -> list[float]:
    """As next_latencies, with each annotator in its own process."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    start, out = context.Barrier(len(users) + 1), context.Queue()
    processes = [context.Process(target=_annotator_process, args=(str(root), url, u, rounds, start, out))
                 for u in users]
    for process in processes:
        process.start()
    start.wait()
    seconds = [s for _ in processes for s in out.get()]
    for process in processes:
        process.join()
    return seconds


def summarise(name: str, latencies: list[float], report: dict) -> None:
    latencies = sorted(latencies)
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    report.update({f"{name}_calls": len(latencies), f"{name}_median_ms": round(statistics.median(latencies) * 1000, 1),
                   f"{name}_p99_ms": round(p99 * 1000, 1)})
    print(f"{name}: median {report[f'{name}_median_ms']} ms, p99 {report[f'{name}_p99_ms']} ms over "
          f"{len(latencies)} calls", flush=True)


EXPORT = """
import json, resource, sys, time
from labelloop.services.workspace import Workspace
from labelloop.services.data.exporting import export_project
ws = Workspace.open(sys.argv[1], database_url=sys.argv[2])
started = time.perf_counter()
summary = export_project(ws, "million", sys.argv[3], format="coco", images=False)
print(json.dumps({"seconds": time.perf_counter() - started, "items": summary.items, "shapes": summary.shapes,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--annotators", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=20, help="next calls per annotator")
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--schema", help="reuse this schema, kept by an earlier run with --keep (and keep it)")
    parser.add_argument("--skip-export", action="store_true")
    parser.add_argument("--processes", action="store_true",
                        help="also time `next` with each annotator in a process of its own")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import psycopg

    from labelloop.services.data.items import list_items
    from labelloop.services.data.stats import project_stats
    from labelloop.services.labelling.dashboard import project_dashboard
    from labelloop.services.labelling.users import create_user
    from labelloop.services.projects import create_project, get_project, list_projects
    from labelloop.services.workspace import Workspace

    schema = args.schema or f"million_{uuid.uuid4().hex[:8]}"
    if not args.schema:
        with psycopg.connect(args.url, autocommit=True) as connection:
            connection.execute(f'CREATE SCHEMA "{schema}"')
    url = f"{args.url}{'&' if '?' in args.url else '?'}options=-csearch_path%3D{schema}"
    root = Path(tempfile.mkdtemp(prefix="scale-million-"))
    report: dict = {"items": args.items, "annotated": (args.items + 1) // 2, "annotators": args.annotators,
                    "load_average_start": os.getloadavg()}
    try:
        workspace = Workspace.init(root / "ws", database_url=url)
        if args.schema:  # built by an earlier run with --keep (its annotators have skipped some items since)
            with workspace.session() as session:
                users = list(session.scalars(__import__("sqlalchemy").text(
                    "SELECT id FROM users ORDER BY name LIMIT :n"), {"n": args.annotators}))
        else:
            with workspace.session() as session:
                project = create_project(session, "million", "detection", ["thing"])
                users = [create_user(session, f"user{n:02d}").id for n in range(args.annotators)]
            items_s, annotations_s = build(workspace, args.items, project.id)
            report.update(copy_items_seconds=round(items_s, 1), copy_annotations_seconds=round(annotations_s, 1),
                          copy_items_per_second=round(args.items / items_s))
            print(f"COPY {args.items} items (blobs, items, queue triggers) {items_s:.1f} s, "
                  f"{report['annotated']} annotations {annotations_s:.1f} s", flush=True)

        def projects():
            with workspace.session() as session:
                return list_projects(session)

        with workspace.session() as session:
            project = get_project(session, "million")
            middle = session.execute(__import__("sqlalchemy").text(
                "SELECT id FROM items ORDER BY id OFFSET :n LIMIT 1"), {"n": args.items // 2}).scalar()

        def items_page():
            with workspace.session() as session:
                return list_items(session, project.id, after=middle, limit=100)

        for name, function, repeat in (("projects_list", projects, 3), ("items_page_by_cursor", items_page, 5),
                                       ("stats", lambda: project_stats(workspace, "million"), 3),
                                       ("dashboard", lambda: project_dashboard(workspace, project), 3)):
            seconds, first = timed(function, repeat)
            report[f"{name}_seconds"], report[f"{name}_first_seconds"] = round(seconds, 4), round(first, 4)
            print(f"{name}: {seconds * 1000:.1f} ms (best of {repeat}; first call {first * 1000:.1f} ms)", flush=True)

        summarise("next_alone", next_latencies(workspace, project, users[:1], args.rounds * 4), report)
        summarise("next", next_latencies(workspace, project, users, args.rounds), report)
        if args.processes:
            summarise("next_processes", next_latencies_processes(root / "ws", url, users, args.rounds), report)

        if not args.skip_export:
            done = subprocess.run([sys.executable, "-c", EXPORT, str(root / "ws"), url, str(root / "export")],
                                  capture_output=True, text=True)
            if done.returncode:
                report["export_error"] = done.stderr.strip().splitlines()[-1]
                print(f"export failed: {report['export_error']}", flush=True)
            else:
                exported = json.loads(done.stdout.strip().splitlines()[-1])
                report.update(export_seconds=round(exported["seconds"], 1), export_items=exported["items"],
                              export_peak_rss_mb=round(exported["peak_rss_mb"]))
                print(f"COCO export of {exported['items']} items: {exported['seconds']:.1f} s, peak RSS "
                      f"{exported['peak_rss_mb']:.0f} MB", flush=True)
        report["load_average_end"] = os.getloadavg()
        workspace.close()
    finally:
        if not args.keep and not args.schema:
            with psycopg.connect(args.url, autocommit=True) as connection:
                connection.execute(f'DROP SCHEMA "{schema}" CASCADE')
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
