"""Duplicates and near-duplicates of a project: same bytes, or a pHash within a Hamming distance or embeddings at
least this similar whose pixels then agree as one photograph; grouped, leakage (a group across train and test)
first."""

from __future__ import annotations

import numpy as np

from labelloop import media
from labelloop.errors import InvalidInput
from labelloop.ml.duplicates import (MAX_HAMMING, MIN_COSINE, NEIGHBOURS as SEMANTIC_NEIGHBOURS, exact_pairs,
                                     group_pairs, perceptual_pairs, pixel_confirmed, semantic_pairs)
from labelloop.ml.neighbours import NeighbourCache
from labelloop.ml.same_picture import MIN_AGREEMENT
from labelloop.services.data.project_data import item_pages
from labelloop.services.projects import ProjectInfo
from labelloop.services.quality.image_checks import measured
from labelloop.services.quality.inputs import any_embeddings
from labelloop.services.quality.suspects import Found, fingerprint, last_run, store_run

KIND = "duplicate"


def _picture(workspace, row) -> np.ndarray:
    from labelloop.ml.embeddings import to_rgb

    return to_rgb(media.read(workspace.blobs.local_path(row.blob_sha256), row.page, name=row.source))


def find_project_duplicates(workspace, project: ProjectInfo, *, max_hamming: int = MAX_HAMMING,
                            min_cosine: float = MIN_COSINE, force: bool = False,
                            progress=lambda d, t, m: None, neighbours: NeighbourCache | None = None) -> dict:
    """Group the project's duplicates; store every member as a suspect. Returns a summary. `neighbours`: shared
    with the run's other checks (runs.run_checks)."""
    if not 0 <= max_hamming <= 32:
        raise InvalidInput(f"max Hamming distance {max_hamming} must lie in 0..32")
    if not 0 < min_cosine <= 1:
        raise InvalidInput(f"min cosine similarity {min_cosine} must lie in (0, 1]")
    rows = [r for page in item_pages(workspace, project.id) for r in page]
    if not rows:
        raise InvalidInput(f"project {project.name!r} has no items; import some first")
    ids = [r.id for r in rows]
    measures = measured(workspace, ids, progress)
    _, embeddings, encoder = any_embeddings(workspace, project)
    embedded = None if embeddings is None else ~np.isnan(embeddings).any(axis=1)
    run_fingerprint = fingerprint(ids, [r.split for r in rows], encoder, None if embedded is None else
                                  int(embedded.sum()), max_hamming, min_cosine, MIN_AGREEMENT)
    with workspace.session() as session:
        run = last_run(session, project.id, KIND)
        if run is not None and run.fingerprint == run_fingerprint and not force:
            return {**run.summary, "rescored": False}
    hashes = np.array([measures[i][0] for i in ids], np.int64)
    splits = [r.split for r in rows]
    nominated = perceptual_pairs(hashes, max_hamming)
    if embedded is not None and embedded.sum() > 1:
        index = np.flatnonzero(embedded)  # semantic pairs among the items an encoder has embedded
        vectors = embeddings[index]
        found = (neighbours or NeighbourCache()).neighbours(vectors, SEMANTIC_NEIGHBOURS)
        nominated += [(int(index[i]), int(index[j]), k, s)
                      for i, j, k, s in semantic_pairs(vectors, min_cosine, found=found)]
    exact = exact_pairs([f"{r.blob_sha256}:{r.page}" for r in rows])
    pairs = exact + pixel_confirmed(nominated, exact, lambda i: _picture(workspace, rows[i]),
                                    progress=lambda d, t: progress(d, t, "comparing pictures"))
    groups = group_pairs(pairs, len(rows), splits)
    found = []
    for g in groups:
        key = f"{ids[g.members[0]]}"
        member_ids = [ids[m] for m in g.members]
        kept = member_ids[0]
        words = {"exact": "the same file", "perceptual": "the same picture (perceptual hash, pixels agree)",
                 "semantic": "the same picture (embeddings, pixels agree)"}[g.kind]
        for m in g.members:
            others = [ids[o] for o in g.members if o != m]
            text = (f"{words} as item{'s' if len(others) > 1 else ''} {', '.join(map(str, others[:5]))}"
                    f"{' …' if len(others) > 5 else ''}; similarity {g.similarity:.3f}")
            if g.leakage:
                text = (f"leakage: {rows[m].split} item; the group spans train and "
                        f"{'/'.join(sorted({splits[o] for o in g.members} - {'train', 'none'}))}; " + text)
            found.append(Found(ids[m], "duplicate", g.score, text, fingerprint(member_ids),
                               {"group": member_ids, "kind": g.kind, "similarity": g.similarity, "leakage": g.leakage,
                                "keep": kept, "split": rows[m].split}, key))
    summary = {"items": len(rows), "groups": len(groups), "in_groups": sum(len(g.members) for g in groups),
               "leakage_groups": sum(g.leakage for g in groups), "embedding": encoder,
               "max_hamming": max_hamming, "min_cosine": min_cosine}
    with workspace.session() as session:
        counts = store_run(session, project.id, KIND, found, run_fingerprint, summary)
    return {**summary, **counts, "rescored": True}

