"""The Python API for notebooks and scripts: thin handles over the same services the CLI uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from labelloop.domain import Shape
from labelloop.formats.base import ExportSummary
from labelloop.services.labelling import annotations as annotation_service
from labelloop.services import projects as project_service
from labelloop.services.labelling.annotations import AnnotationInfo
from labelloop.services.data.exporting import export_project
from labelloop.services.data.importing import ImportReport, import_path
from labelloop.services.projects import ProjectInfo
from labelloop.services.data.stats import project_stats
from labelloop.services.workspace import Workspace
from labelloop.store.tables import ItemRow


class ProjectHandle:
    def __init__(self, workspace: Workspace, name: str):
        self.workspace = workspace
        self.name = name
        self.info  # fail now if the project does not exist

    @property
    def info(self) -> ProjectInfo:
        with self.workspace.session() as session:
            return project_service.get_project(session, self.name)

    def import_(self, path: str | Path, *, format: str = "auto", split: str | None = None, skip_bad: bool = False) -> ImportReport:
        return import_path(self.workspace, self.name, path, format=format, split=split, skip_bad=skip_bad)

    def export(self, out: str | Path, *, format: str, include: str = "annotations",
               unlabelled: bool = False) -> ExportSummary:
        """Labelled items only, unless `unlabelled`; `ExportSummary.left_out` counts the others by reason."""
        return export_project(self.workspace, self.name, out, format=format, include=include, unlabelled=unlabelled)

    def stats(self) -> dict[str, Any]:
        return project_stats(self.workspace, self.name)

    def items(self, *, split: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Items in labelling order, as plain dicts (id, source, page, width, height, split, ...)."""
        with self.workspace.session() as session:
            project = project_service.get_project(session, self.name)
            query = select(ItemRow).where(ItemRow.project_id == project.id).order_by(ItemRow.position)
            if split:
                query = query.where(ItemRow.split == split)
            if limit:
                query = query.limit(limit)
            return [
                {"id": r.id, "source": r.source, "page": r.page, "width": r.width, "height": r.height,
                 "dtype": r.dtype, "channels": r.channels, "split": r.split, "metadata": r.meta}
                for r in session.scalars(query)
            ]

    def image(self, item_id: int, *, display: bool = False):
        """The item's pixels: raw values, or the uint8 view a labeller sees (windowed, MONOCHROME1 inverted)."""
        from labelloop import media

        with self.workspace.session() as session:
            row = session.get(ItemRow, item_id)
        path = self.workspace.blobs.local_path(row.blob_sha256)
        return media.render(path, row.page, name=row.source) if display else media.read(path, row.page, name=row.source)

    def embed(self, encoder: str | None = None, *, weights: str | Path | None = None) -> dict[str, Any]:
        """Compute the project's missing embeddings as a job, on the executor LABELLOOP_EXECUTOR names (inline by
        default, `ray` for a cluster); returns the job's summary."""
        from labelloop.errors import Cancelled, LabelloopError
        from labelloop.jobs.batches import executor_name
        from labelloop.services.jobs import create_job, run_job

        if executor_name() == "ray":
            from labelloop.jobs.ray_runner import connect

            connect()  # an unreachable cluster fails before the job is recorded
        params = {"project": self.name, "encoder": encoder, "weights": str(weights) if weights else None}
        job = run_job(self.workspace, create_job(self.workspace, "embed", params, self.info.id))
        if job.state == "cancelled":
            raise Cancelled(job.message)
        if job.state != "done":
            raise LabelloopError(job.error or f"the embed job ended {job.state}")
        return job.result

    def embeddings(self, encoder: str | None = None, *, weights: str | Path | None = None) -> dict[str, Any]:
        """{file name: float32 vector} of every item, read back from the embedding cache (whichever executor
        computed them). A page of a multi-page file is named `name#page` (pages after the first)."""
        from labelloop.ml.pretrained import DEFAULT_MODEL
        from labelloop.services.assist.embeddings import encoder_key, load_embeddings

        key = encoder_key(encoder or DEFAULT_MODEL, weights)
        with self.workspace.session() as session:
            project = project_service.get_project(session, self.name)
            rows = session.execute(select(ItemRow.id, ItemRow.source, ItemRow.page)
                                   .where(ItemRow.project_id == project.id).order_by(ItemRow.id)).all()
        vectors = load_embeddings(self.workspace, [r.id for r in rows], key)
        return {(r.source if not r.page else f"{r.source}#{r.page}"): vectors[n] for n, r in enumerate(rows)}

    def annotation(self, item_id: int) -> AnnotationInfo | None:
        with self.workspace.session() as session:
            row = annotation_service.latest(session, item_id)
            return annotation_service.to_info(row) if row else None

    def annotate(self, item_id: int, shapes: list[Shape], *, author: str, base_version: int | None = None) -> AnnotationInfo:
        with self.workspace.session() as session:
            project = project_service.get_project(session, self.name)
            return annotation_service.save(session, project, item_id, shapes, author=author, base_version=base_version)

    def __repr__(self) -> str:
        return f"<Project {self.name!r}>"


class WorkspaceHandle:
    def __init__(self, workspace: Workspace):
        self.workspace = workspace

    def project(self, name: str) -> ProjectHandle:
        return ProjectHandle(self.workspace, name)

    def create_project(self, name: str, *, kind: str, classes: list[str] | None = None) -> ProjectHandle:
        with self.workspace.session() as session:
            project_service.create_project(session, name, kind, classes)
        return ProjectHandle(self.workspace, name)

    def projects(self) -> list[ProjectInfo]:
        with self.workspace.session() as session:
            return project_service.list_projects(session)

    def __repr__(self) -> str:
        return f"<labelloop workspace {self.workspace.root}>"
