"""What the quality checks read: labelled items with their labels, and the embeddings the classifier uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select

from labelloop.domain import ProjectKind
from labelloop.errors import InvalidInput, NotFound
from labelloop.services.assist.embeddings import embed_items, encoder_key, load_embeddings
from labelloop.services.data.project_data import item_pages, labelled_items
from labelloop.services.labelling.annotations import latest_for_items
from labelloop.services.projects import ProjectInfo
from labelloop.store.tables import EmbeddingRow

DEFAULT_ENCODER = "tf_efficientnet_lite2"  # the classifier's default encoder (model_kinds/classifier.py)


@dataclass
class LabelledSet:
    item_ids: list[int]
    sources: list[str]
    annotation_versions: list[int]  # the label revision each suspect decision is tied to
    y: np.ndarray  # class indices, or an N×K 0/1 matrix (multi-label)
    # pooled embeddings of the classifier's encoder: the label-error classifier and the neighbours read them (on
    # hymenoptera they found flipped labels with higher precision than the ImageNet logits, docs/quality.md)
    embeddings: np.ndarray
    model_ref: str
    params: dict[str, Any]


def classifier_model(workspace, project: ProjectInfo):
    from labelloop.services.assist.models import get_model

    if project.kind not in (ProjectKind.classification, ProjectKind.multilabel):
        raise InvalidInput(f"label-error checks cover classification, multi-label, detection and semantic projects for now; "
                           f"{project.name!r} is a {project.kind.value} project")
    try:
        return get_model(workspace, project, "classifier")
    except NotFound:
        raise InvalidInput(f"label errors are found with the project's classifier, and {project.name!r} has none: "
                           f"train one first with `labelloop train {project.name} --model classifier`") from None


def labelled_set(workspace, project: ProjectInfo, progress=lambda d, t, m: None) -> LabelledSet:
    from labelloop.services.assist.model_kinds.classifier import training_targets

    model = classifier_model(workspace, project)
    params = model.params
    if params.get("head", "logreg") != "logreg":
        params = {**params, "encoder": DEFAULT_ENCODER, "weights": None, "features": "imagenet"}
    rows = labelled_items(workspace, project, shape_types=("class",))
    if len(rows) < 10:
        raise InvalidInput(f"project {project.name!r} has {len(rows)} labelled items; label at least 10 before "
                           "looking for label errors")
    ids = [item.id for item, _ in rows]
    with workspace.session() as session:
        annotations = {}
        for start in range(0, len(ids), 500):
            annotations.update(latest_for_items(session, ids[start:start + 500]))
    encoder = params.get("encoder") or DEFAULT_ENCODER
    embed_items(workspace, ids, model_name=encoder, weights=params.get("weights"), progress=progress)
    embeddings = load_embeddings(workspace, ids, encoder_key(encoder, params.get("weights")))
    return LabelledSet(ids, [item.source for item, _ in rows], [annotations[i].version for i in ids],
                       training_targets(project, rows), embeddings, model.ref, params)


def any_embeddings(workspace, project: ProjectInfo) -> tuple[list[int], np.ndarray | None, str | None]:
    """Every item's embedding from the encoder that covers most of the project (None when no item has one)."""
    ids = [i for page in item_pages(workspace, project.id, ids_only=True) for i in page]
    if not ids:
        return ids, None, None
    with workspace.session() as session:
        from sqlalchemy import func

        from labelloop.store.tables import ItemRow

        best = session.execute(select(EmbeddingRow.encoder, func.count()).join(ItemRow, ItemRow.id == EmbeddingRow.item_id)
                               .where(ItemRow.project_id == project.id).group_by(EmbeddingRow.encoder)
                               .order_by(func.count().desc())).first()
    if best is None:
        return ids, None, None
    encoder = best[0]
    return ids, load_embeddings_partial(workspace, ids, encoder), encoder


def load_embeddings_partial(workspace, ids: list[int], encoder: str) -> np.ndarray:
    """N×D with NaN rows for items this encoder has not embedded."""
    vectors: dict[int, np.ndarray] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        with workspace.session() as session:
            for item_id, vector in session.execute(select(EmbeddingRow.item_id, EmbeddingRow.vector).where(
                    EmbeddingRow.encoder == encoder, EmbeddingRow.item_id.in_(chunk))):
                vectors[item_id] = np.frombuffer(vector, "<f4")
    dim = len(next(iter(vectors.values())))
    out = np.full((len(ids), dim), np.nan, np.float32)
    for n, i in enumerate(ids):
        if i in vectors:
            out[n] = vectors[i]
    return out
