"""Embeddings inline versus on Ray with 2 local workers on the same cores (issue 22): Ray's overhead.

    .venv/bin/python benchmarks/scale_ray.py --images 2000 [--workers 2] [--chunk 64] [--inline-threads 1]
        [--out results.json]

Images are photos of ../shared/data (clothing10, hymenoptera, coco128, in that order, up to --images), imported
once into a fresh workspace. The inline executor embeds them in this process (torch on every core, decoding on a
second thread, as `labelloop embed` does); then the embeddings are deleted and a fresh local Ray cluster
(`ray.init(num_cpus=--workers)`) embeds them as chunks of --chunk items, one task per chunk, each worker on one
thread, loading the network once. Both runs are timed from the job's start to its end (the Ray figure includes the
workers starting and loading the network; the cluster's own start is reported on its own), and by the CPU time
they used (this process for inline; this process, Ray's workers and the rest of the cluster for Ray, the cluster's
start-up included): on a shared, loaded machine wall times follow the other programs, CPU time much less. The
vectors of the two runs are compared; the load average is printed beside the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SOURCES = ("clothing10", "hymenoptera", "coco128")


def photos(limit: int) -> list[Path]:
    found: list[Path] = []
    for name in SOURCES:
        found += sorted(p for p in (DATA / name).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if len(found) < limit:
        raise SystemExit(f"only {len(found)} photos under {DATA}; ask for fewer with --images")
    return found[:limit]


def descendants_cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) of every live process below this one, by kind: Ray's workers (`ray::...`) and
    the rest of the cluster (raylet, GCS, ...). A loaded machine stretches wall times; CPU time it does not."""
    parent: dict[int, int] = {}
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                text = (entry / "stat").read_text()
                stats[int(entry.name)] = text[text.rindex(")") + 2:].split()
                parent[int(entry.name)] = int(stats[int(entry.name)][1])
            except (OSError, ValueError):
                continue
    mine, changed = {os.getpid()}, True
    while changed:
        found = {pid for pid, up in parent.items() if up in mine} - mine
        changed, mine = bool(found), mine | found
    tick = os.sysconf("SC_CLK_TCK")
    cpu = {"workers": 0.0, "cluster": 0.0}
    for pid in mine - {os.getpid()}:
        try:
            worker = Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::")
        except OSError:
            continue
        cpu["workers" if worker else "cluster"] += (int(stats[pid][11]) + int(stats[pid][12])) / tick
    return cpu


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def run_embed(workspace) -> tuple[float, dict]:
    from labelloop.services.jobs import create_job, get_job, run_job

    started = time.perf_counter()
    job = run_job(workspace, create_job(workspace, "embed", {"project": "photos"}))
    seconds = time.perf_counter() - started
    if job.state != "done":
        raise SystemExit(f"embed job {job.state}: {get_job(workspace, job.id).error}")
    return seconds, job.result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--inline-threads", type=int, default=0,
                        help="torch threads of the inline run (0: torch's default, every core); 1 matches a Ray worker")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from sqlalchemy import delete

    from labelloop.notebook import ProjectHandle
    from labelloop.services.data.importing import import_path
    from labelloop.services.projects import create_project
    from labelloop.services.workspace import Workspace
    from labelloop.store.tables import EmbeddingRow

    root = Path(tempfile.mkdtemp(prefix="scale-ray-"))
    folder = root / "photos"
    folder.mkdir()
    for n, path in enumerate(photos(args.images)):
        (folder / f"{n:05d}{path.suffix.lower()}").symlink_to(path)
    workspace = Workspace.init(root / "ws")
    with workspace.session() as session:
        create_project(session, "photos", "classification", ["a", "b"])
    started = time.perf_counter()
    import_path(workspace, "photos", folder, format="images")
    print(f"imported {args.images} photos in {time.perf_counter() - started:.1f} s; load average {load()}")
    cpus = os.cpu_count()
    report: dict = {"images": args.images, "cpus": cpus, "workers": args.workers, "chunk": args.chunk}

    os.environ.pop("LABELLOOP_EXECUTOR", None)
    if args.inline_threads:
        import torch

        torch.set_num_threads(args.inline_threads)
    report["inline_threads"] = args.inline_threads or "default"
    report["load_before_inline"] = load()
    cpu_started = time.process_time()
    inline_seconds, inline = run_embed(workspace)
    inline_cpu = time.process_time() - cpu_started
    report["load_after_inline"] = load()
    reference = ProjectHandle(workspace, "photos").embeddings()
    print(f"inline: {inline_seconds:.1f} s, {args.images / inline_seconds:.2f} images/s; load average {load()}")
    with workspace.session() as session:
        session.execute(delete(EmbeddingRow))

    import ray

    started = time.perf_counter()
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    cluster_seconds = time.perf_counter() - started
    os.environ.update(LABELLOOP_EXECUTOR="ray", LABELLOOP_CHUNK_ITEMS=str(args.chunk))
    report["load_before_ray"] = load()
    cpu_started = time.process_time()
    ray_seconds, on_ray = run_embed(workspace)
    driver_cpu = time.process_time() - cpu_started
    cluster_cpu = descendants_cpu_seconds()  # since the cluster started: its start-up is counted too
    report["load_after_ray"] = load()
    vectors = ProjectHandle(workspace, "photos").embeddings()
    ray.shutdown()
    difference = max(float(np.abs(vectors[k] - reference[k]).max()) for k in reference)
    overhead = ray_seconds / inline_seconds - 1
    ray_cpu = driver_cpu + cluster_cpu["workers"] + cluster_cpu["cluster"]
    cpu_overhead = ray_cpu / inline_cpu - 1
    print(f"ray ({args.workers} workers, {on_ray['tasks']} tasks of {args.chunk}): {ray_seconds:.1f} s, "
          f"{args.images / ray_seconds:.2f} images/s; cluster start {cluster_seconds:.1f} s; load average {load()}")
    print(f"CPU seconds: inline {inline_cpu:.1f}; Ray {ray_cpu:.1f} (driver {driver_cpu:.1f}, workers "
          f"{cluster_cpu['workers']:.1f}, raylet/GCS/other {cluster_cpu['cluster']:.1f})")
    print(f"Ray overhead: wall {overhead:+.1%}, CPU {cpu_overhead:+.1%} (goal <= +15 %); largest difference between "
          f"the vectors {difference:.2e}")
    report.update(inline_seconds=round(inline_seconds, 2), ray_seconds=round(ray_seconds, 2),
                  ray_cluster_start_seconds=round(cluster_seconds, 2), ray_overhead=round(overhead, 4),
                  inline_cpu_seconds=round(inline_cpu, 1), ray_cpu_seconds=round(ray_cpu, 1),
                  ray_driver_cpu_seconds=round(driver_cpu, 1), ray_worker_cpu_seconds=round(cluster_cpu["workers"], 1),
                  ray_cluster_cpu_seconds=round(cluster_cpu["cluster"], 1), ray_cpu_overhead=round(cpu_overhead, 4),
                  max_abs_difference=difference, tasks=on_ray["tasks"])
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
