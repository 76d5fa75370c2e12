"""Label errors of a semantic project: cleanlab's segmentation check on out-of-sample probability maps of the pixel
forest, cross-fitted by image (each image predicted by a forest trained on the other images' masks), with a reason in
words per flagged image. Re-scored only when the masks or the forest's settings changed."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from labelloop import media
from labelloop.errors import InvalidInput, NotFound
from labelloop.services.projects import ProjectInfo
from labelloop.services.quality.suspects import Found, fingerprint, last_run, store_run

log = logging.getLogger(__name__)
KIND = "label"
FOREST_SETTINGS = ("trees", "scales", "smoothing", "seed")  # read from the project's pixel-rf model, if it has one


class _Lazy:
    """A sequence that reads one element when asked: images and masks are never all in memory at full size."""

    def __init__(self, n: int, read):
        self.n, self.read = n, read

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.read(i)


def forest_params(workspace, project: ProjectInfo) -> tuple[str, dict[str, Any]]:
    """(what the maps come from, the forest's settings): the project's newest pixel-rf model's, else the defaults."""
    from labelloop.services.assist.models import get_model

    try:
        model = get_model(workspace, project, "pixel-rf")
    except NotFound:
        return "pixel forest (default settings)", {}
    return f"pixel forest with the settings of {model.ref}", {k: model.params[k] for k in FOREST_SETTINGS
                                                              if model.params.get(k) is not None}


def find_mask_label_errors(workspace, project: ProjectInfo, *, force: bool = False,
                           progress=lambda d, t, m: None) -> dict[str, Any]:
    """Score every masked image; store the flagged ones as suspects. Returns a summary."""
    from labelloop.ml.mask_label_issues import FOLDS, KINDS, MAX_PIXELS, cross_fitted_maps, find_mask_label_issues
    from labelloop.services.assist.datasets import _index_mask
    from labelloop.services.assist.model_kinds.pixel_rf import project_intensity
    from labelloop.services.data.project_data import background_index, labelled_items
    from labelloop.services.labelling.annotations import latest_for_items

    rows = labelled_items(workspace, project, ("mask", "polygon"))
    if len(rows) < 2:
        raise InvalidInput(f"label errors in masks need at least 2 masked images in {project.name!r} (each one is "
                           f"checked by a model trained on the others); it has {len(rows)}: import or draw more masks")
    background = background_index(project)
    others = [c for c in project.classes if c.index != background]
    names = [next((c.name for c in project.classes if c.index == background), "background")] + [c.name for c in others]
    lookup = np.zeros(max([c.index for c in project.classes] + [background]) + 1, np.uint8)
    for n, c in enumerate(others, 1):
        lookup[c.index] = n
    class_index = {c.name: c.index for c in project.classes}
    for item, shapes in rows:
        for shape in shapes:
            if getattr(shape, "size", None) is not None and tuple(shape.size) != (item.height, item.width):
                raise InvalidInput(f"item {item.id} ({item.source}): its {shape.label!r} mask is {shape.size[1]}x"
                                   f"{shape.size[0]} but the image is {item.width}x{item.height}; fix or re-import it")
    masks = _Lazy(len(rows), lambda i: lookup[_index_mask(rows[i][1], class_index, background, rows[i][0].height,
                                                          rows[i][0].width)])
    images = _Lazy(len(rows), lambda i: media.read(workspace.blobs.local_path(rows[i][0].blob_sha256), rows[i][0].page,
                                                   name=rows[i][0].source))
    source, params = forest_params(workspace, project)
    ids = [item.id for item, _ in rows]
    with workspace.session() as session:
        versions = {}
        for start in range(0, len(ids), 500):
            versions.update({i: r.version for i, r in latest_for_items(session, ids[start:start + 500]).items()})
    run_fingerprint = fingerprint("masks", source, params, MAX_PIXELS, FOLDS, ids, [versions[i] for i in ids])
    with workspace.session() as session:
        run = last_run(session, project.id, KIND)
        if run is not None and run.fingerprint == run_fingerprint and not force:
            return {**run.summary, "rescored": False}
    progress(0, None, "choosing the intensity scaling")
    params["intensity"] = project_intensity(workspace, project, "auto")
    forest = {"n_estimators": int(params["trees"])} if "trees" in params else {}
    if "scales" in params:
        forest["scales"] = tuple(float(s) for s in params["scales"])
    if "smoothing" in params:
        forest["smoothing"] = float(params["smoothing"])
    forest["intensity"] = params["intensity"]
    maps = cross_fitted_maps(images, masks, len(names), folds=FOLDS, seed=int(params.get("seed", 0)),
                             classifier_params=forest, progress=progress)
    progress(0, None, "finding disagreeing regions")
    suspects, scores = find_mask_label_issues(maps.labels, maps.proba, names, scale=maps.scale)
    found = [Found(ids[s.index], "label", s.score, s.reason, str(versions[ids[s.index]]),
                   {"issue": s.kind, "issue_words": KINDS[s.kind], "region": s.region, "labelled": s.labelled,
                    "model_says": s.model}) for s in suspects]
    summary = {"labelled": len(ids), "scored": len(ids), "flagged": len(found), "model": source,
               "folds": int(len(np.unique(maps.folds))), "max_pixels_per_image": MAX_PIXELS,
               "issues": {KINDS[k]: sum(s.kind == k for s in suspects) for k in KINDS},
               "median_score": round(float(np.median(scores)), 4) if len(scores) else None}
    with workspace.session() as session:
        counts = store_run(session, project.id, KIND, found, run_fingerprint, summary)
    log.info("mask label errors of %s: %d of %d flagged", project.name, len(found), len(ids))
    return {**summary, **counts, "rescored": True}
