"""Benchmark: the time to claim a grid page of the classifier's suggestions (GET /similar?suggest=true) as the
project grows — it should not grow past CANDIDATES open items (services/assist/grid_pages.py).

    .venv/bin/python benchmarks/grid_pages.py                     # 1,000 / 4,000 / 16,000 items, 20 pages each
    .venv/bin/python benchmarks/grid_pages.py --items 1000,64000 --pages 50

Per size: a SQLite workspace with a classification project of that many tiny images (3 classes), synthetic 1280-d
embeddings under the classifier's encoder (Gaussian blobs, as tests/simulate_support.py makes them), 30 labelled
per class, the project's classifier trained (`train --model classifier`); then `--pages` pages of 9 are claimed
one after another by one user (each page's items labelled before the next, as a person would), and the median and
slowest claim are printed with the open items at the start (the blobs are separable: this times the claim,
not the suggestions' accuracy).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CLASSES = ("ant", "bee", "wasp")
DIM = 1280


def build(root: Path, items: int):
    """A workspace with `items` images, their embeddings, 30 labels per class and a trained classifier."""
    from PIL import Image
    from sqlalchemy import select

    from labelloop.domain import ClassLabel
    from labelloop.services.assist.model_kinds.classifier import DEFAULT_ENCODER
    from labelloop.services.data.importing import import_path
    from labelloop.services.jobs import create_job, run_job
    from labelloop.services.labelling import annotations, queue
    from labelloop.services.labelling.users import create_user
    from labelloop.services.projects import create_project, get_project
    from labelloop.services.transactions import write_transaction
    from labelloop.services.workspace import Workspace
    from labelloop.store.tables import EmbeddingRow, ItemRow

    rng = np.random.default_rng(0)
    folder = root / "images"
    folder.mkdir(parents=True)
    for n in range(items):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(folder / f"{CLASSES[n % 3]}-{n:06d}.png")
    workspace = Workspace.init(root / "ws", database_url=f"sqlite:///{root / 'ws.db'}", blob_url=str(root / "blobs"))
    with workspace.session() as session:
        create_project(session, "grid", "classification", list(CLASSES), settings={"classifier_features": "pooled"})
    import_path(workspace, "grid", folder, format="images")
    centres = {c: rng.normal(0, 1, DIM) for c in CLASSES}
    truth = {}
    with workspace.session() as session:
        for item in session.scalars(select(ItemRow)):
            label = Path(item.source).name.split("-")[0]
            truth[item.id] = label
            vector = (centres[label] + rng.normal(0, 2.0, DIM)).astype("<f4")
            session.add(EmbeddingRow(item_id=item.id, encoder=DEFAULT_ENCODER, dim=DIM, vector=vector.tobytes()))
    with workspace.session() as session:
        project = get_project(session, "grid")
        user = create_user(session, "person").id
    first = [i for c in CLASSES for i in sorted(k for k, v in truth.items() if v == c)[:30]]
    with write_transaction(workspace) as session:
        for item_id in first:
            annotations.save(session, project, item_id, [ClassLabel(truth[item_id])], author="person",
                             base_version=None)
            queue.mark_done(session, project, item_id, user)
    job = run_job(workspace, create_job(workspace, "train", {"project": "grid", "model": "classifier", "seed": 0}))
    if job.state != "done":
        sys.exit(f"training failed: {job.error}")
    return workspace, project, user, truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", default="1000,4000,16000")
    parser.add_argument("--pages", type=int, default=20)
    args = parser.parse_args()
    from labelloop.domain import ClassLabel
    from labelloop.services.assist.grid_pages import suggested_page
    from labelloop.services.labelling import annotations, queue
    from labelloop.services.transactions import write_transaction

    print("| items | open at start | median claim ms | slowest ms | items per page |")
    print("| --- | --- | --- | --- | --- |")
    for items in (int(n) for n in args.items.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            workspace, project, user, truth = build(Path(tmp), items)
            setup = time.perf_counter() - started
            times, sizes, first = [], [], None
            for _ in range(args.pages):
                started = time.perf_counter()
                page = suggested_page(workspace, project, user, 9)
                times.append(time.perf_counter() - started)
                if page is None:
                    break
                first = first if first is not None else page.remaining_unlabelled
                sizes.append(len(page.item_ids))
                with write_transaction(workspace) as session:
                    for item_id in page.item_ids:
                        annotations.save(session, project, item_id, [ClassLabel(truth[item_id])], author="person",
                                         base_version=None)
                        queue.mark_done(session, project, item_id, user)
            workspace.close()
        print(f"| {items:,} | {first:,} | {statistics.median(times) * 1000:.0f} | {max(times) * 1000:.0f} | "
              f"{statistics.mean(sizes):.1f} |", flush=True)
        print(f"  (set-up {setup:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
