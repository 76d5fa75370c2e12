"""Label errors of a classification or multi-label project: cleanlab on the classifier's cross-fitted
probabilities, with a reason in words per suspect. Re-scored only when labels or the classifier changed."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from labelloop.ml.label_errors import DEFAULT_FILTER, find_suspects
from labelloop.ml.neighbours import NeighbourCache
from labelloop.services.projects import ProjectInfo
from labelloop.services.quality.inputs import labelled_set
from labelloop.services.quality.suspects import Found, fingerprint, last_run, store_run

log = logging.getLogger(__name__)
KIND = "label"


def find_label_errors(workspace, project: ProjectInfo, *, filter_by: str = DEFAULT_FILTER, force: bool = False,
                      progress=lambda d, t, m: None, neighbours: NeighbourCache | None = None) -> dict[str, Any]:
    """Score every labelled item; store the flagged ones as suspects. Returns a summary. `neighbours`: shared with
    the run's other checks (runs.run_checks)."""
    from labelloop.ml.classifier import EmbeddingClassifier

    data = labelled_set(workspace, project, progress)
    run_fingerprint = fingerprint(data.model_ref, data.params.get("C"), data.params.get("encoder"), filter_by,
                                  data.item_ids, data.annotation_versions)
    with workspace.session() as session:
        run = last_run(session, project.id, KIND)
        if run is not None and run.fingerprint == run_fingerprint and not force:
            return {**run.summary, "rescored": False}
    progress(0, None, "cross-fitting the classifier")
    multilabel = data.y.ndim == 2
    seed = int(data.params.get("seed", 0))
    suspects, scores, proba = find_suspects(
        data.embeddings, data.y, project.class_names(), filter_by=filter_by, seed=seed, cache=neighbours,
        estimator_factory=lambda: EmbeddingClassifier(C=float(data.params.get("C", 1.0)), multilabel=multilabel,
                                                      random_state=seed))
    names = project.class_names()
    found = []
    for s in suspects:
        given = data.y[s.index]
        labels = [names[k] for k in np.flatnonzero(given)] if multilabel else [names[int(given)]]
        found.append(Found(data.item_ids[s.index], "label", s.score, s.reason, str(data.annotation_versions[s.index]),
                           {"labels": labels, "suggested": s.suggested,
                            "probabilities": {n: round(float(p), 4) for n, p in zip(names, proba[s.index])}}))
    summary = {"labelled": len(data.item_ids), "flagged": len(found), "model": data.model_ref, "filter": filter_by,
               "median_score": round(float(np.median(scores)), 4) if len(scores) else None}
    with workspace.session() as session:
        counts = store_run(session, project.id, KIND, found, run_fingerprint, summary)
    log.info("label errors of %s: %d of %d flagged", project.name, len(found), len(data.item_ids))
    return {**summary, **counts, "rescored": True}
