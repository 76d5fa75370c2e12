"""Training sets for deep learning: a project's masks cut into augmented patch pairs (the `dataset` job)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labelloop import media
from labelloop.domain import Mask, Polygon
from labelloop.errors import InvalidInput
from labelloop.geometry import rle
from labelloop.jobs.registry import JobContext, job_kind
from labelloop.services.data.project_data import background_index, labelled_items
from labelloop.services.projects import get_project

SOURCES = ("accepted", "predictions")
AUGMENT = ("default", "none")


def _index_mask(shapes: list, class_index: dict[str, int], background: int, height: int, width: int) -> np.ndarray:
    """Class index per pixel (0 = background; a class named background is written as 0 too)."""
    mask = np.zeros((height, width), np.uint8 if len(class_index) < 256 else np.uint16)
    for shape in sorted(shapes, key=lambda s: class_index[s.label]):
        value = class_index[shape.label]
        region = rle.decode(shape) if isinstance(shape, Mask) else rle.polygon_to_mask(shape, (height, width))
        mask[region] = 0 if value == background else value
    return mask


@dataclass(frozen=True)
class _ItemLoader:
    """(image, class-index mask) of one item; picklable, so worker processes can cut pairs from it."""

    path: str
    page: int
    name: str
    shapes: tuple
    class_index: dict[str, int]
    background: int
    height: int
    width: int

    def __call__(self) -> tuple[np.ndarray, np.ndarray]:
        image = media.read(self.path, self.page, name=self.name)
        return image, _index_mask(list(self.shapes), self.class_index, self.background, self.height, self.width)


@job_kind("dataset")
def dataset_job(workspace, ctx: JobContext) -> dict[str, Any]:
    from labelloop.ml.dataset_generator import AugmentSpec, PairSource, PatchSpec, generate

    p = ctx.params
    if p.get("source", "accepted") not in SOURCES:
        raise InvalidInput(f"--source must be one of {', '.join(SOURCES)}")
    if p.get("augment", "default") not in AUGMENT:
        raise InvalidInput(f"--augment must be one of {', '.join(AUGMENT)}")
    with workspace.session() as session:
        project = get_project(session, p["project"])
    source = "annotations" if p.get("source", "accepted") == "accepted" else "predictions"
    rows = labelled_items(workspace, project, ("mask", "polygon"), source=source)
    if not rows:
        raise InvalidInput(f"project {project.name!r} has no {'accepted masks' if source == 'annotations' else 'mask predictions'}"
                           " to cut into patches")
    class_index = {c.name: c.index for c in project.classes}
    background = background_index(project)

    sources = [PairSource(f"{item.id}:{item.source}",
                          _ItemLoader(str(workspace.blobs.local_path(item.blob_sha256)), item.page, item.source,
                                      tuple(shapes), class_index, background, item.height, item.width))
               for item, shapes in rows]
    workers = int(p.get("workers") or min(4, os.cpu_count() or 1))
    out = Path(p["out"])
    augment = AugmentSpec.default() if p.get("augment", "default") == "default" else AugmentSpec.none()
    try:
        manifest = generate(sources, out, count=int(p["count"]), patch=PatchSpec(size=int(p.get("patch", 256))),
                            augment=augment, seed=int(p.get("seed", 0)), workers=workers,
                            progress=lambda done, total: ctx.progress(done, total, "writing pairs"))
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    classes = {str(c.index): c.name for c in project.classes if c.index != background}
    (out / "classes.json").write_text(json.dumps({"0": "background", **classes}, indent=2))
    ctx.log(f"wrote {manifest.count} pairs from {len(sources)} items to {out}")
    return {"out": str(out), "pairs": manifest.count, "empty": manifest.empty_count, "sources": len(sources)}
