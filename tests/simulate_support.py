"""A tiny classification project with synthetic embeddings and its truth as a CSV (no network, no real images)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from labelloop.services.assist.model_kinds.classifier import DEFAULT_ENCODER
from labelloop.services.data.importing import import_path
from labelloop.services.projects import create_project
from labelloop.store.tables import EmbeddingRow, ItemRow


def synthetic_project(workspace, root: Path, per_class: int = 30, classes=("ant", "bee"), spread: float = 0.6,
                      name: str = "syn", seed: int = 0) -> Path:
    """Images (tiny, distinct) imported without labels, embeddings as Gaussian blobs per class under the
    classifier's encoder; returns the truth CSV (image,labels)."""
    rng = np.random.default_rng(seed)
    images = root / "images"
    images.mkdir(parents=True)
    truth_rows = []
    for label in classes:
        for n in range(per_class):
            file = images / f"{label}-{n:03d}.png"
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(file)
            truth_rows.append((file.name, label))
    with workspace.session() as session:
        create_project(session, name, "classification", list(classes),
                       settings={"classifier_features": "pooled"})  # synthetic vectors do not fit the ImageNet head
    import_path(workspace, name, images, format="images")
    centres = {label: rng.normal(0, 1, 32) for label in classes}
    truth_of = dict(truth_rows)
    with workspace.session() as session:
        for item in session.scalars(select(ItemRow).order_by(ItemRow.id)):
            vector = (centres[truth_of[Path(item.source).name]] + rng.normal(0, spread, 32)).astype("<f4")
            session.add(EmbeddingRow(item_id=item.id, encoder=DEFAULT_ENCODER, dim=32, vector=vector.tobytes()))
    truth = root / "truth.csv"
    with truth.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "labels"])
        writer.writerows(truth_rows)
    return truth


@pytest.fixture
def ws(tmp_path):
    """A SQLite workspace (simulations' scratch copies are SQLite whatever the real workspace uses; running the
    same code paths on PostgreSQL too would only double the time)."""
    from labelloop.services.workspace import Workspace

    root = tmp_path / "workspace"
    workspace = Workspace.init(root, database_url=f"sqlite:///{root / 'labelloop.db'}", blob_url=str(root / "blobs"))
    yield workspace
    workspace.close()
