"""How fast the Label Studio ML backend answers /predict: a batch of 8 tasks, warm, over HTTP to a real uvicorn
server (the way Label Studio calls it), with a trained classifier on cached embeddings and with the detector.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ls_backend_latency.py --requests 50

Classifier: hymenoptera (ants/bees), `--per-class` photos of each class, 2/3 labelled, classifier trained as the
product trains it (EfficientNet-Lite2 embeddings, computed once and cached). Detector: raccoon, `--detector-images`
photos with their boxes, trained for `--epochs` (latency does not depend on how well it is trained: the network runs
on every image, the threshold only filters its boxes). Tasks name their images by Label Studio upload URLs, so each
request also matches tasks to items. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CHOICES = """<View><Image name="image" value="$image"/><Choices name="choice" toName="image">
<Choice value="ants"/><Choice value="bees"/></Choices></View>"""
BOXES = """<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">
<Label value="raccoon"/></RectangleLabels></View>"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(app):
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def measure(workspace, project: str, config: str, names: list[str], requests: int, warm: int = 3) -> dict:
    """p50/p99 of /predict for one batch of tasks, after `warm` requests (model load, first embeddings)."""
    import httpx

    from labelloop.server.ml_backend import create_ml_backend

    server, thread, url = _serve(create_ml_backend(workspace, project))
    body = {"tasks": [{"id": n + 1, "data": {"image": f"/data/upload/1/1a2b3c4d-{name}"}} for n, name in enumerate(names)],
            "project": "1.1733400000", "label_config": config,
            "params": {"login": None, "password": None, "context": None}}
    times, labelled, version = [], 0, None
    try:
        with httpx.Client(timeout=100) as client:
            assert client.post(f"{url}/setup", json={"project": "1.1733400000", "schema": config}).status_code == 200
            for n in range(warm + requests):
                started = time.perf_counter()
                response = client.post(f"{url}/predict", json=body)
                elapsed = time.perf_counter() - started
                response.raise_for_status()
                if n >= warm:
                    times.append(elapsed * 1000)
            results = response.json()["results"]
            version = response.json()["model_version"]
            labelled = sum(bool(r["result"]) for r in results)
    finally:
        server.should_exit = True
        thread.join(10)
    return {"model": version, "tasks": len(names), "requests": requests, "p50_ms": round(statistics.median(times), 1),
            "p99_ms": round(_percentile(times, 0.99), 1), "max_ms": round(max(times), 1),
            "tasks_with_prelabels": labelled, "load_average_1min": round(os.getloadavg()[0], 1)}


def network_only(workspace, project_name: str, names: list[str], repeats: int = 3) -> float:
    """Median ms of the detector's network alone on the same 8 decoded images (no HTTP, no decoding)."""
    from labelloop import media
    from labelloop.ml.detection.detector import BoxDetector
    from labelloop.services.assist.models import get_model, read_checkpoint
    from labelloop.services.projects import get_project
    from labelloop.store.tables import ItemRow
    from sqlalchemy import select

    with workspace.session() as session:
        project = get_project(session, project_name)
        rows = {r.source.rsplit("/", 1)[-1]: r for r in session.scalars(select(ItemRow))}
        images = [media.read(workspace.blobs.local_path(rows[n].blob_sha256), name=n) for n in names]
    detector = BoxDetector.from_checkpoint(read_checkpoint(workspace, get_model(workspace, project, "detector")))
    detector.predict(images[:1])
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        detector.predict(images)
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 1)


def classifier_case(root: Path, per_class: int, requests: int) -> dict:
    from labelloop.services.data.importing import import_path
    from labelloop.services.jobs import create_job, run_job
    from labelloop.services.projects import create_project
    from labelloop.services.workspace import Workspace

    workspace = Workspace.init(root / "ws-classifier")
    folder = root / "hymenoptera"
    folder.mkdir()
    rows, unlabelled = [], []
    for label in ("ants", "bees"):
        files = sorted((DATA / "hymenoptera" / "train" / label).glob("*.jpg"))[:per_class]
        for n, path in enumerate(files):
            shutil.copy(path, folder / path.name)
            keep = n < per_class * 2 // 3
            rows.append((path.name, label if keep else ""))
            if not keep:
                unlabelled.append(path.name)
    with (folder / "labels.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([("image", "labels"), *rows])
    with workspace.session() as session:
        create_project(session, "hym", "classification", ["ants", "bees"])
    import_path(workspace, "hym", folder / "labels.csv", format="csv")
    started = time.perf_counter()
    job = run_job(workspace, create_job(workspace, "train", {"project": "hym", "model": "classifier", "seed": 0}))
    if job.state != "done":
        raise SystemExit(f"training failed: {job.error}")
    trained = time.perf_counter() - started
    names = unlabelled[::max(1, len(unlabelled) // 8)][:8]
    return {**measure(workspace, "hym", CHOICES, names, requests), "items": len(rows),
            "training_seconds_with_embeddings": round(trained, 1)}


def detector_case(root: Path, images: int, epochs: int, requests: int, settings: dict | None = None) -> dict:
    from labelloop.services.data.importing import import_path
    from labelloop.services.jobs import create_job, run_job
    from labelloop.services.projects import create_project
    from labelloop.services.workspace import Workspace

    workspace = Workspace.init(root / "ws-detector")
    folder = root / "raccoon"
    (folder / "images").mkdir(parents=True)
    (folder / "annotations").mkdir()
    names = [f"raccoon-{n}.jpg" for n in range(1, images + 1)]
    for name in names:
        shutil.copy(DATA / "raccoon" / "images" / name, folder / "images")
        shutil.copy(DATA / "raccoon" / "annotations" / name.replace(".jpg", ".xml"), folder / "annotations")
    with workspace.session() as session:
        create_project(session, "rac", "detection", ["raccoon"])
    import_path(workspace, "rac", folder, format="voc")
    started = time.perf_counter()
    job = run_job(workspace, create_job(workspace, "train", {"project": "rac", "model": "detector", "epochs": epochs,
                                                              "seed": 0, **(settings or {})}))
    if job.state != "done":
        raise SystemExit(f"training failed: {job.error}")
    trained = time.perf_counter() - started
    return {**measure(workspace, "rac", BOXES, names[:8], requests), "training_seconds": round(trained, 1),
            "network_only_p50_ms": network_only(workspace, "rac", names[:8])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50, help="timed requests per case (after 3 warm-up ones)")
    parser.add_argument("--per-class", type=int, default=36, help="hymenoptera photos per class")
    parser.add_argument("--detector-images", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=2, help="detector training epochs (latency only)")
    parser.add_argument("--detector-requests", type=int, default=20)
    parser.add_argument("--skip-detector", action="store_true")
    parser.add_argument("--detector-set", action="append", default=[], metavar="KEY=VALUE",
                        help="a detector training option stored with the version, as `train --set` "
                             "(e.g. predict_size=352, proposals=100)")
    args = parser.parse_args()
    settings = dict(pair.split("=", 1) for pair in args.detector_set)
    if not DATA.is_dir():
        raise SystemExit(f"datasets not found at {DATA}")
    import torch

    report = {"torch_threads": torch.get_num_threads(), "python": sys.version.split()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        report["classifier"] = classifier_case(Path(tmp), args.per_class, args.requests)
        print(json.dumps(report), flush=True)
        if not args.skip_detector:
            report["detector"] = detector_case(Path(tmp), args.detector_images, args.epochs, args.detector_requests,
                                               settings)
            report["detector"]["settings"] = settings
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
