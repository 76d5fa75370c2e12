"""Import N small images from an S3 server, by reference and by copy (issue 22).

Starts moto's S3 server on 127.0.0.1 (a free port), uploads N distinct small PNGs (seeded noise, 64x64 grey by
default) under s3://BUCKET/raw, then imports them into fresh workspaces: once with --by-reference (objects read and
hashed, nothing copied) and once by copy (into the workspace's local blob store, or --copy-to-s3 into a blob store in
the same bucket). Prints one JSON line per run: seconds, items/s, peak RSS of this process.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scale_s3_import.py --count 10000 [--threads 8]
        [--database-url postgresql://postgres@127.0.0.1:5432/test] [--copy-to-s3]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_moto(port: int) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("moto's S3 server did not start")
            time.sleep(0.1)


def png(index: int, size: int) -> bytes:
    pixels = np.random.default_rng(index).integers(0, 256, (size, size), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def upload(client, bucket: str, count: int, size: int, threads: int) -> float:
    started = time.perf_counter()

    def one(i: int) -> None:
        client.put_object(Bucket=bucket, Key=f"raw/{i // 1000:03d}/img{i:06d}.png", Body=png(i, size))

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(one, range(count)))
    return time.perf_counter() - started


def run_import(root: Path, database_url: str | None, blob_url: str | None, url: str, by_reference: bool) -> dict:
    from sqlalchemy import text

    from labelloop.services.jobs import create_job, get_job, run_job
    from labelloop.services.projects import create_project
    from labelloop.services.workspace import Workspace

    schema = None
    if database_url:  # a fresh schema per run, dropped afterwards
        import psycopg

        schema = f"bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(database_url, autocommit=True) as connection:
            connection.execute(f'CREATE SCHEMA "{schema}"')
        database_url = f"{database_url}{'&' if '?' in database_url else '?'}options=-csearch_path%3D{schema}"
    workspace = Workspace.init(root, database_url=database_url, blob_url=blob_url)
    try:
        with workspace.session() as session:
            project = create_project(session, "bench", "classification", ["a", "b"])
        job_id = create_job(workspace, "import", {"project": "bench", "path": url, "by_reference": by_reference},
                            project.id)
        started = time.perf_counter()
        run_job(workspace, job_id)
        seconds = time.perf_counter() - started
        job = get_job(workspace, job_id)
        if job.state != "done":
            raise SystemExit(f"import failed: {job.error}")
        with workspace.session() as session:
            referenced = session.execute(text("SELECT count(*) FROM blobs WHERE url IS NOT NULL")).scalar()
        return {"seconds": round(seconds, 2), "items": job.result["items_added"],
                "items_per_s": round(job.result["items_added"] / seconds, 1), "referenced_blobs": referenced,
                "stored_blobs": sum(1 for _ in workspace.blobs)}
    finally:
        workspace.close()
        if schema:
            import psycopg

            with psycopg.connect(database_url.split("?")[0], autocommit=True) as connection:
                connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--threads", type=int, default=8, help="LABELLOOP_IMPORT_THREADS (reading and hashing)")
    parser.add_argument("--database-url", default=None, help="PostgreSQL URL (default: SQLite in the workspace)")
    parser.add_argument("--copy-to-s3", action="store_true", help="by copy into an s3:// blob store, not local files")
    args = parser.parse_args()

    os.environ["LABELLOOP_IMPORT_THREADS"] = str(args.threads)
    port = free_port()
    server = start_moto(port)
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update({"LABELLOOP_S3_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench",
                       "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1", "NO_PROXY": "127.0.0.1"})
    try:
        import boto3
        from botocore.config import Config

        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              config=Config(max_pool_connections=args.threads * 2))
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        client.create_bucket(Bucket=bucket)
        uploaded = upload(client, bucket, args.count, args.size, args.threads)
        print(json.dumps({"phase": "upload (boto3, not labelloop)", "count": args.count, "size": args.size,
                          "seconds": round(uploaded, 2)}), flush=True)
        url = f"s3://{bucket}/raw"
        with tempfile.TemporaryDirectory() as scratch:
            for by_reference in (True, False):
                blob_url = f"s3://{bucket}/blobs" if (args.copy_to_s3 and not by_reference) else None
                result = run_import(Path(scratch) / ("ref" if by_reference else "copy"), args.database_url, blob_url,
                                    url, by_reference)
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                print(json.dumps({"phase": "by reference" if by_reference else "by copy", "count": args.count,
                                  "database": "postgresql" if args.database_url else "sqlite",
                                  "blob_store": blob_url or "local files", "threads": args.threads, **result,
                                  "peak_rss_mb_so_far": round(peak)}), flush=True)
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
