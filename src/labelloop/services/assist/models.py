"""Model records: versions per project and kind, parameters, metrics, curves, checkpoints as blobs."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from labelloop.errors import InvalidInput, NotFound
from labelloop.services.projects import ProjectInfo
from labelloop.store.tables import BlobRow, ItemRow, ModelRow


@dataclass
class ModelInfo:
    id: int
    project_id: int
    kind: str
    version: int
    status: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    curves: dict[str, Any]
    item_ids: list[int]
    checkpoint_sha256: str | None
    created_at: datetime
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.kind}:{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": self.kind, "version": self.version, "ref": self.ref, "status": self.status,
            "params": self.params, "metrics": self.metrics, "curves": self.curves,
            "training_items": len(self.item_ids), "checkpoint": self.checkpoint_sha256,
            "created_at": self.created_at.isoformat(),
        }


def _info(row: ModelRow) -> ModelInfo:
    return ModelInfo(row.id, row.project_id, row.kind, row.version, row.status, dict(row.params), dict(row.metrics),
                     dict(row.curves), list(row.item_ids), row.checkpoint_sha256, row.created_at)


def parse_ref(ref: str) -> tuple[str, int | None]:
    """'pixel-rf' -> ('pixel-rf', None: the newest); 'pixel-rf:3' -> ('pixel-rf', 3)."""
    kind, _, version = ref.partition(":")
    if version and not version.isdigit():
        raise InvalidInput(f"model {ref!r}: the version after ':' must be a number, e.g. {kind}:2")
    return kind, int(version) if version else None


def save_model(workspace, project: ProjectInfo, kind: str, estimator: Any, *, params: dict[str, Any],
               metrics: dict[str, Any], item_ids: list[int], curves: dict[str, Any] | None = None) -> ModelInfo:
    """Store the fitted estimator as a checkpoint blob and record the next version of this kind."""
    import joblib

    buffer = io.BytesIO()
    joblib.dump(estimator, buffer, compress=3)
    sha, _ = workspace.blobs.put_bytes(buffer.getvalue())
    with workspace.session() as session:
        if session.get(BlobRow, sha) is None:
            session.add(BlobRow(sha256=sha, size=len(buffer.getvalue())))
        version = (session.scalar(select(func.max(ModelRow.version)).where(
            ModelRow.project_id == project.id, ModelRow.kind == kind)) or 0) + 1
        row = ModelRow(project_id=project.id, kind=kind, version=version, status="ready", params=params,
                       metrics=metrics, curves=curves or {}, item_ids=item_ids, checkpoint_sha256=sha)
        session.add(row)
        session.flush()
        return _info(row)


def get_model(workspace, project: ProjectInfo, ref: str, *, statuses: tuple[str, ...] = ("ready",)) -> ModelInfo:
    """A model by 'kind' (the newest) or 'kind:VERSION', among those whose status is one of `statuses`."""
    kind, version = parse_ref(ref)
    query = select(ModelRow).where(ModelRow.project_id == project.id, ModelRow.kind == kind,
                                   ModelRow.status.in_(statuses))
    query = query.where(ModelRow.version == version) if version else query.order_by(ModelRow.version.desc()).limit(1)
    with workspace.session() as session:
        row = session.scalar(query)
        if row is None:
            what = f"version {version} of {kind!r}" if version else f"a trained {kind!r} model"
            raise NotFound(f"project {project.name!r} has no {what}; train one with `labelloop train {project.name} --model {kind}`")
        return _info(row)


def newest_ready_model(workspace, project: ProjectInfo) -> ModelInfo | None:
    """The project's newest ready model of any kind, or None (read by id: a micro-model's kind holds a ':')."""
    with workspace.session() as session:
        row = session.scalars(select(ModelRow).where(ModelRow.project_id == project.id, ModelRow.status == "ready")
                              .order_by(ModelRow.created_at.desc(), ModelRow.id.desc()).limit(1)).first()
        return _info(row) if row is not None else None


def list_models(workspace, project: ProjectInfo) -> list[ModelInfo]:
    with workspace.session() as session:
        rows = session.scalars(select(ModelRow).where(ModelRow.project_id == project.id)
                               .order_by(ModelRow.kind, ModelRow.version))
        return [_info(r) for r in rows]


def load_estimator(workspace, model: ModelInfo) -> Any:
    import joblib

    if model.checkpoint_sha256 is None:
        raise NotFound(f"model {model.ref} has no checkpoint")
    with workspace.blobs.open(model.checkpoint_sha256) as handle:
        return joblib.load(io.BytesIO(handle.read()))


# Models trained over many epochs (unet): the version is reserved when training starts ("training"), each
# evaluation replaces its checkpoint blob, and the end ("ready", or "failed" after a crash) keeps the last one.

def _put_blob(workspace, session, data: bytes) -> str:
    sha, _ = workspace.blobs.put_bytes(data)
    if session.get(BlobRow, sha) is None:
        session.add(BlobRow(sha256=sha, size=len(data)))
    return sha


def _drop_blob_if_unused(workspace, sha: str | None) -> None:
    if sha is None:
        return
    with workspace.session() as session:
        used = session.scalar(select(func.count()).select_from(ModelRow).where(ModelRow.checkpoint_sha256 == sha))
        used = used or session.scalar(select(func.count()).select_from(ItemRow).where(ItemRow.blob_sha256 == sha))
        if used:
            return
        row = session.get(BlobRow, sha)
        if row is not None:
            session.delete(row)
    workspace.blobs.delete(sha)


def start_model(workspace, project: ProjectInfo, kind: str, *, params: dict[str, Any],
                item_ids: list[int]) -> ModelInfo:
    """Reserve the next version of this kind with status "training" and no checkpoint yet."""
    with workspace.session() as session:
        version = (session.scalar(select(func.max(ModelRow.version)).where(
            ModelRow.project_id == project.id, ModelRow.kind == kind)) or 0) + 1
        row = ModelRow(project_id=project.id, kind=kind, version=version, status="training", params=params,
                       metrics={}, curves={}, item_ids=item_ids, checkpoint_sha256=None)
        session.add(row)
        session.flush()
        return _info(row)


def update_model(workspace, model: ModelInfo, *, status: str | None = None, checkpoint: bytes | None = None,
                 params: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None,
                 curves: dict[str, Any] | None = None) -> ModelInfo:
    """Replace what is given; a new checkpoint's blob replaces the old one, which is deleted if nothing else uses it."""
    with workspace.session() as session:
        row = session.get(ModelRow, model.id)
        if row is None:
            raise NotFound(f"model {model.ref} no longer exists")
        previous = row.checkpoint_sha256
        if checkpoint is not None:
            row.checkpoint_sha256 = _put_blob(workspace, session, checkpoint)
        for name, value in (("status", status), ("params", params), ("metrics", metrics), ("curves", curves)):
            if value is not None:
                setattr(row, name, value)
        session.flush()
        info = _info(row)
    if checkpoint is not None and previous != info.checkpoint_sha256:
        _drop_blob_if_unused(workspace, previous)
    return info


def store_file(workspace, data: bytes) -> str:
    """Store bytes (e.g. a curves PNG) as a blob with its row; returns the sha256."""
    with workspace.session() as session:
        return _put_blob(workspace, session, data)


def delete_model(workspace, model: ModelInfo) -> None:
    """Remove a model that never became usable (e.g. cancelled before its first checkpoint)."""
    with workspace.session() as session:
        row = session.get(ModelRow, model.id)
        sha = row.checkpoint_sha256 if row is not None else None
        if row is not None:
            session.delete(row)
    _drop_blob_if_unused(workspace, sha)


def read_checkpoint(workspace, model: ModelInfo) -> bytes:
    if model.checkpoint_sha256 is None:
        raise NotFound(f"model {model.ref} has no checkpoint")
    with workspace.blobs.open(model.checkpoint_sha256) as handle:
        return handle.read()


def curves_png_path(workspace, model: ModelInfo) -> Path | None:
    """A local file holding the model's training-curves PNG (`curves["png"]` names its blob), if it has one."""
    sha = model.curves.get("png") if isinstance(model.curves, dict) else None
    return workspace.blobs.local_path(sha) if sha else None
