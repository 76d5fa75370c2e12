"""Outliers and bad images of a project: far from every other item in embedding space, blurred, under- or
over-exposed, or corrupt-looking. Images are measured once (item_checks); a run re-scores from the cache."""

from __future__ import annotations

import numpy as np

from labelloop.errors import InvalidInput
from labelloop.ml.neighbours import NeighbourCache
from labelloop.ml.outliers import NEIGHBOURS, OUTLIER_Z, ImageChecks, knn_distance, robust_z
from labelloop.services.data.project_data import item_pages
from labelloop.services.projects import ProjectInfo
from labelloop.services.quality.image_checks import measured
from labelloop.services.quality.inputs import any_embeddings
from labelloop.services.quality.suspects import Found, fingerprint, last_run, store_run

KIND = "outlier"


def find_outliers(workspace, project: ProjectInfo, *, z_cut: float = OUTLIER_Z, force: bool = False,
                  progress=lambda d, t, m: None, neighbours: NeighbourCache | None = None) -> dict:
    """Score every item's distance to the rest and its image checks; store the flagged ones as suspects. Returns
    a summary. `neighbours`: shared with the run's other checks (runs.run_checks)."""
    if z_cut <= 0:
        raise InvalidInput(f"outlier cut {z_cut} must be positive")
    rows = [r for page in item_pages(workspace, project.id) for r in page]
    if not rows:
        raise InvalidInput(f"project {project.name!r} has no items; import some first")
    ids = [r.id for r in rows]
    measures = measured(workspace, ids, progress)
    _, embeddings, encoder = any_embeddings(workspace, project)
    embedded = np.zeros(len(ids), bool) if embeddings is None else ~np.isnan(embeddings).any(axis=1)
    run_fingerprint = fingerprint(ids, encoder, int(embedded.sum()), z_cut)
    with workspace.session() as session:
        run = last_run(session, project.id, KIND)
        if run is not None and run.fingerprint == run_fingerprint and not force:
            return {**run.summary, "rescored": False}
    found = []
    if embedded.sum() > NEIGHBOURS + 1:
        index = np.flatnonzero(embedded)
        vectors = embeddings[index]
        distance = knn_distance(vectors, NEIGHBOURS,
                                found=(neighbours or NeighbourCache()).neighbours(vectors, NEIGHBOURS))
        z = robust_z(distance)
        for n in np.flatnonzero(z >= z_cut):
            item_id = ids[index[n]]
            found.append(Found(item_id, "knn", float(z[n] / (z[n] + z_cut)),
                               f"unlike the rest: mean distance {distance[n]:.3f} to its {NEIGHBOURS} nearest items "
                               f"({z[n]:.1f} robust deviations above the median)", encoder or "",
                               {"distance": round(float(distance[n]), 4), "z": round(float(z[n]), 2)}))
    for item_id in ids:
        checks = ImageChecks(**measures[item_id][1])
        for check, score, text in checks.problems():
            found.append(Found(item_id, check, float(score), text, "image", checks.to_dict()))
    by_check: dict[str, int] = {}
    for f in found:
        by_check[f.check] = by_check.get(f.check, 0) + 1
    summary = {"items": len(ids), "embedded": int(embedded.sum()), "flagged": len({f.item_id for f in found}),
               "by_check": by_check, "embedding": encoder, "z_cut": z_cut}
    with workspace.session() as session:
        counts = store_run(session, project.id, KIND, found, run_fingerprint, summary)
    return {**summary, **counts, "rescored": True}
