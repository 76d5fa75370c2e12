"""Benchmark: virtual annotators against a real server (uvicorn subprocess) on SQLite and PostgreSQL.

Each annotator loops: GET /api/projects/{id}/next, then POST a 3-box annotation for that item. 1, 8 and 32
annotators at once, each on its own HTTP connection (httpx + asyncio in one client process). Reports annotations/s,
p50/p95/p99 latency per request, and counts items handed to two annotators (from the clients' view and from the
database: items with more than one annotation). It also reports the CPU the server processes and the client used
(in cores: 1.0 is one core busy all the time), and the local PostgreSQL server's, which shows which one limits a
run on a small machine.

Each level runs a warm-up first (`--warmup-seconds`, 2 s: the annotators connect, the server's pool and caches fill)
that is not counted; its p99 is reported on its own ("warm-up p99"), since a freshly started server or a crowd of new
connections is slower for a second or two.

    .venv/bin/python benchmarks/annotators.py                       # the full set (~3 min): both databases,
                                                                    # 1/8/32 flat out + 32 paced at 100/s, 10 s each
    .venv/bin/python benchmarks/annotators.py --db sqlite --seconds 5 --workers 1
    .venv/bin/python benchmarks/annotators.py --annotators 32 --rate 120   # every level paced: 120/s offered
    .venv/bin/python benchmarks/annotators.py --cpu-per-cycle       # server CPU per next+submit, in-process

`--cpu-per-cycle` calls the app in this process through a bare ASGI caller (no HTTP, no client, no profiler) and
reports `time.process_time` per next + submit cycle (all threads) and the SQL statements per cycle: a figure that a
busy machine disturbs far less than wall-clock latency, for judging a change to the hot path.

PostgreSQL: postgresql://postgres@127.0.0.1:5432/test (or --pg-url), on a fresh schema dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare(data_dir: Path, database_url: str | None, items: int, annotators: int) -> tuple[int, list[str]]:
    """A detection project with `items` 64×64 images and `annotators` users with tokens."""
    from labelloop import media
    from labelloop.services.labelling import users
    from labelloop.services.data.importing import import_path
    from labelloop.services.projects import create_project
    from labelloop.services.workspace import Workspace

    workspace = Workspace.init(data_dir, database_url=database_url)
    images = data_dir.parent / "images"
    images.mkdir(parents=True, exist_ok=True)
    for n in range(items):
        pixels = ((np.arange(64 * 64).reshape(64, 64) + n) % 251).astype(np.uint8)
        pixels[0, :4] = np.frombuffer(n.to_bytes(4, "little"), np.uint8)
        (images / f"{n:06d}.png").write_bytes(media.encode_png(pixels))
    tokens = []
    with workspace.session() as session:
        project = create_project(session, "bench", "detection", ["cell", "debris", "other"])
        for n in range(annotators):
            user = users.create_user(session, f"annotator{n}")
            users.set_role(session, project.id, user.name, "annotator")
            tokens.append(users.create_token(session, user.id, "bench")[1])
    import_path(workspace, "bench", images, format="images")
    workspace.close()
    return project.id, tokens


def start_server(data_dir: Path, port: int, workers: int, env: dict, threads: int | None = None) -> subprocess.Popen:
    import httpx

    process = subprocess.Popen([sys.executable, "-m", "labelloop.cli.main", "serve", "--data-dir", str(data_dir),
                                "--port", str(port), "--workers", str(workers),
                                *(["--threads", str(threads)] if threads else [])],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(process.stderr.read().decode()[-3000:])
        try:
            if httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=1).status_code == 200:
                time.sleep(0.5 * workers)  # let every worker finish starting
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("server did not start")


BOXES = [{"type": "box", "label": label, "x0": x, "y0": x, "x1": x + 10.5, "y1": x + 12.25}
         for label, x in (("cell", 3.0), ("debris", 20.0), ("other", 40.0))]


async def annotator(port: int, token: str, project_id: int, record_from: float, stop_at: float,
                    interval: float | None, results: dict, phase: float = 0.0) -> None:
    """One annotator's loop; only the cycles that start after `record_from` (the end of the warm-up) count."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers, limits=limits,
                                 timeout=60) as http:
        next_due = time.perf_counter() + phase
        while time.perf_counter() < stop_at:
            if interval:
                await asyncio.sleep(max(0.0, next_due - time.perf_counter()))
                next_due += interval
            t0 = time.perf_counter()
            got = await http.get(f"/api/projects/{project_id}/next")
            t1 = time.perf_counter()
            item = got.json().get("item") if got.status_code == 200 else None
            if item is None:
                results["errors"].append(f"next: {got.status_code} {got.text[:200]}")
                return
            results["handed"][item["id"]].add(token)  # warm-up included: a double hand-out counts whenever it is
            saved = await http.post(f"/api/items/{item['id']}/annotations",
                                    json={"shapes": BOXES, "base_version": item["version"]})
            t2 = time.perf_counter()
            if saved.status_code != 201:
                results["errors"].append(f"submit: {saved.status_code} {saved.text[:200]}")
            elif t0 >= record_from:
                results["next"].append(t1 - t0)
                results["submit"].append(t2 - t1)
                results["done"] += 1
            else:
                results["warmup"] += [t1 - t0, t2 - t1]


def group_cpu_seconds(group: int) -> float:
    """CPU time (user + system) used so far by the processes of one process group: the server and its workers."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[2]) == group:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    """CPU time used so far by the local PostgreSQL server: its live processes, plus the backends that have ended
    (counted on the postmaster). NaN where no local `postgres` process can be read (a remote database)."""
    processes = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, tail = stat.read_text().rsplit(")", 1)
        except OSError:  # the process ended meanwhile
            continue
        if head.endswith("(postgres"):
            fields = tail.split()
            processes[int(stat.parent.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]),
                                               int(fields[13]) + int(fields[14]))
    if not processes:
        return float("nan")
    ticks = sum(own + (reaped if parent not in processes else 0) for parent, own, reaped in processes.values())
    return ticks / os.sysconf("SC_CLK_TCK")


def run_level(port: int, tokens: list[str], project_id: int, seconds: float, rate: float | None,
              server_group: int | None = None, postgres: bool = False, warmup: float = 2.0) -> dict:
    """Run the annotators for `warmup` + `seconds`; report the last `seconds` (connections made, server caches
    and the database pool filled: what a day of labelling looks like, not its first second)."""
    results = {"next": [], "submit": [], "warmup": [], "done": 0, "errors": [], "handed": defaultdict(set)}
    interval = len(tokens) / rate if rate else None
    cpu: dict[str, float] = {}

    def snapshot(key: str) -> None:
        cpu[f"server_{key}"] = group_cpu_seconds(server_group) if server_group else float("nan")
        cpu[f"database_{key}"] = postgres_cpu_seconds() if postgres else float("nan")
        cpu[f"client_{key}"] = time.process_time()
        cpu[f"wall_{key}"] = time.perf_counter()

    async def main():
        record_from = time.perf_counter() + warmup
        stop_at = record_from + seconds

        async def measure() -> None:
            await asyncio.sleep(max(0.0, record_from - time.perf_counter()))
            snapshot("start")
            await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))

        # Paced annotators start spread over one interval, as people do, not all in the same instant.
        await asyncio.gather(measure(), *(
            annotator(port, t, project_id, record_from, stop_at, interval, results,
                      interval * n / len(tokens) if interval else 0.0) for n, t in enumerate(tokens)))
        snapshot("end")  # after the last cycle that started in time has finished

    asyncio.run(main())
    elapsed = cpu["wall_end"] - cpu["wall_start"]
    server_cpu, database_cpu, client_cpu = (cpu[f"{k}_end"] - cpu[f"{k}_start"]
                                            for k in ("server", "database", "client"))
    both = np.array(results["next"] + results["submit"]) * 1000
    pct = lambda a, q: float(np.percentile(a, q)) if len(a) else float("nan")  # noqa: E731
    nxt, sub = np.array(results["next"]) * 1000, np.array(results["submit"]) * 1000
    return {
        "annotators": len(tokens), "annotations": results["done"], "seconds": round(elapsed, 2),
        "annotations_per_s": round(results["done"] / elapsed, 1),
        "p50_ms": round(pct(both, 50), 1), "p95_ms": round(pct(both, 95), 1), "p99_ms": round(pct(both, 99), 1),
        "next_p99_ms": round(pct(nxt, 99), 1), "submit_p99_ms": round(pct(sub, 99), 1),
        "warmup_p99_ms": round(pct(np.array(results["warmup"]) * 1000, 99), 1),
        "handed_twice": sum(1 for holders in results["handed"].values() if len(holders) > 1),
        # Cores busy on average (1.0 = one core all the time): is the client, not the server, the limit?
        "client_cores": round(client_cpu / elapsed, 2), "server_cores": round(server_cpu / elapsed, 2),
        "database_cores": round(database_cpu / elapsed, 2),
        "server_cpu_ms_per_annotation": round(server_cpu / max(results["done"], 1) * 1000, 2),
        "errors": len(results["errors"]), "first_error": results["errors"][0] if results["errors"] else None,
        "handed": {k: list(v) for k, v in results["handed"].items()},
    }


async def _asgi_call(app, method: str, path: str, headers: list, body: bytes = b"") -> tuple[int, bytes]:
    """One request straight into the ASGI app: what uvicorn would hand it, minus the socket."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": headers + [(b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    sent = False
    status, chunks = 0, []

    async def receive():
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


def cpu_per_cycle(db: str, args) -> dict:
    """Server CPU (all threads of this process) and SQL statements per next + submit cycle, in-process."""
    from sqlalchemy import event

    from labelloop.server.app import create_app
    from labelloop.services.workspace import Workspace

    work = Path(tempfile.mkdtemp(prefix=f"bench-cpu-{db}-"))
    database_url, schema = _fresh_database(db, args)
    try:
        project_id, tokens = prepare(work / "ws", database_url, args.cycles * 2 + args.warmup * 2 + 100, 1)
        workspace = Workspace.open(work / "ws", database_url=database_url)
        app = create_app(workspace, resume_jobs=False)
        headers = [(b"authorization", f"Bearer {tokens[0]}".encode()), (b"content-type", b"application/json"),
                   (b"host", b"bench")]
        statements = 0

        def count(*_):
            nonlocal statements
            statements += 1

        event.listen(workspace.engine, "before_cursor_execute", count)

        async def cycles(n: int) -> None:
            for _ in range(n):
                status, body = await _asgi_call(app, "GET", f"/api/projects/{project_id}/next", headers)
                item = json.loads(body)["item"]
                assert status == 200 and item, body[:300]
                payload = json.dumps({"shapes": BOXES, "base_version": item["version"]}).encode()
                status, body = await _asgi_call(app, "POST", f"/api/items/{item['id']}/annotations", headers, payload)
                assert status == 201, body[:300]

        async def measure() -> tuple[float, float, int]:
            nonlocal statements
            await cycles(args.warmup)
            statements = 0
            cpu, wall = time.process_time(), time.perf_counter()
            await cycles(args.cycles)
            return time.process_time() - cpu, time.perf_counter() - wall, statements

        cpu, wall, sql = asyncio.run(measure())
        workspace.close()
        return {"db": db, "cycles": args.cycles, "cpu_ms_per_cycle": round(cpu / args.cycles * 1000, 2),
                "wall_ms_per_cycle": round(wall / args.cycles * 1000, 2),
                "sql_statements_per_cycle": round(sql / args.cycles, 1), "load_average": os.getloadavg()[0]}
    finally:
        shutil.rmtree(work, ignore_errors=True)
        _drop_schema(schema, args)


def _fresh_database(db: str, args) -> tuple[str | None, str | None]:
    """(database URL, PostgreSQL schema to drop afterwards); SQLite: the workspace's own file."""
    if db != "postgresql":
        return None, None
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.pg_url, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    return f"{args.pg_url}?options=-csearch_path%3D{schema}", schema


def _drop_schema(schema: str | None, args) -> None:
    if schema:
        import psycopg

        with psycopg.connect(args.pg_url, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


def duplicates_in_db(data_dir: Path, database_url: str | None) -> int:
    from sqlalchemy import func, select

    from labelloop.services.workspace import Workspace
    from labelloop.store.tables import AnnotationRow

    workspace = Workspace.open(data_dir, database_url=database_url)
    with workspace.session() as session:
        counts = session.execute(select(AnnotationRow.item_id, func.count()).group_by(AnnotationRow.item_id)).all()
    workspace.close()
    return sum(1 for _, n in counts if n > 1)


def bench(db: str, args) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix=f"bench-annotators-{db}-"))
    env = dict(os.environ)
    database_url, schema = _fresh_database(db, args)
    if database_url:
        env["LABELLOOP_DATABASE_URL"] = database_url
    levels = [(int(c), args.rate) for c in args.annotators.split(",")]
    if args.rate is None and args.paced_rate:  # the goal's own case: 32 people at a steady 100 annotations/s
        levels.append((max(count for count, _ in levels), args.paced_rate))
    rows = []
    try:
        project_id, tokens = prepare(work / "ws", database_url, args.items, max(count for count, _ in levels))
        port = _free_port()
        server = start_server(work / "ws", port, args.workers, env, args.threads)
        try:
            for count, rate in levels:
                row = run_level(port, tokens[:count], project_id, args.seconds, rate, server.pid, db == "postgresql",
                                args.warmup_seconds)
                row.pop("handed")
                row.update(db=db, workers=args.workers, rate=rate, load_average=round(os.getloadavg()[0], 1))
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait()
        dup = duplicates_in_db(work / "ws", database_url)
        for row in rows:
            row["items_with_two_annotations_in_db"] = dup
    finally:
        shutil.rmtree(work, ignore_errors=True)
        _drop_schema(schema, args)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--annotators", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=10, help="measured seconds per level")
    parser.add_argument("--warmup-seconds", type=float, default=2.0,
                        help="seconds each level runs first, not measured (connections, caches, pool)")
    parser.add_argument("--items", type=int, default=16000, help="enough for every level at ~400 annotations/s")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--threads", type=int, default=None, help="request threads per server process")
    parser.add_argument("--rate", type=float, default=None,
                        help="offered annotations/s in total at every level (default: flat out)")
    parser.add_argument("--paced-rate", type=float, default=100,
                        help="without --rate: one more level, the most annotators paced at this rate (0: none)")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--cpu-per-cycle", action="store_true",
                        help="measure server CPU per next+submit cycle in-process instead of running annotators")
    parser.add_argument("--cycles", type=int, default=300, help="--cpu-per-cycle: cycles measured")
    parser.add_argument("--warmup", type=int, default=30, help="--cpu-per-cycle: cycles run first, not measured")
    args = parser.parse_args()
    databases = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    if args.cpu_per_cycle:
        for db in databases:
            print(json.dumps(cpu_per_cycle(db, args)), flush=True)
        return
    rows = []
    started = time.perf_counter()
    for db in databases:
        rows += bench(db, args)
    print(f"\n{os.cpu_count()} cores, load average {' / '.join(f'{x:.1f}' for x in os.getloadavg())} at the end, "
          f"{args.workers} server process(es), {time.perf_counter() - started:.0f} s in all")
    print("\n| db | annotators | offered | annotations/s | p50 ms | p95 ms | p99 ms | next p99 | submit p99 "
          "| warm-up p99 | handed twice | twice in db | errors | server cores | server CPU ms/annotation | database cores "
          "| client cores | load |")
    print("|" + " --- |" * 19)
    for r in rows:
        offered = f"{r['rate']:g}/s" if r["rate"] else "flat out"
        print(f"| {r['db']} | {r['annotators']} | {offered} | {r['annotations_per_s']} | {r['p50_ms']} | "
              f"{r['p95_ms']} | {r['p99_ms']} | {r['next_p99_ms']} | {r['submit_p99_ms']} | {r['warmup_p99_ms']} | "
              f"{r['handed_twice']} | "
              f"{r['items_with_two_annotations_in_db']} | {r['errors']} | {r['server_cores']} | "
              f"{r['server_cpu_ms_per_annotation']} | {r['database_cores']} | {r['client_cores']} | "
              f"{r['load_average']} |")


if __name__ == "__main__":
    main()
