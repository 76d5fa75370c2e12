"""A scratch copy of a project for a simulation: a throw-away SQLite workspace in a temporary folder holding the
project's items (their blobs symlinked, not copied) and cached embeddings, without its labels, predictions, models or
queue state. Everything a simulation writes lands there; the real workspace is only read."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from labelloop.services.projects import ProjectInfo, create_project, get_project
from labelloop.store.tables import BlobRow, EmbeddingRow, ItemRow

COPIED_ITEM_COLUMNS = ("source", "page", "format", "width", "height", "dtype", "channels", "meta", "split", "position")


@dataclass
class ScratchProject:
    workspace: Any
    project: ProjectInfo  # the pool: the items the simulated annotator labels
    held_out: ProjectInfo  # items kept apart to measure the model on (never labelled, never in the queue)
    folder: Path
    item_map: dict[int, int] = field(default_factory=dict)  # real item id -> scratch item id

    def close(self) -> None:
        self.workspace.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _link_blob(source, target_root: Path, sha: str) -> None:
    target = target_root / sha[:2] / sha
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    original = source.local_path(sha)
    try:  # a link, not a copy; blobs are written by rename and removed by unlink, which replace or drop the link only
        os.symlink(Path(original).resolve(), target)
    except OSError:
        shutil.copyfile(original, target)


def scratch_copy(workspace, project: ProjectInfo, pool_ids: Sequence[int], held_out_ids: Sequence[int],
                 settings: dict[str, Any], *, parent: str | Path | None = None) -> ScratchProject:
    """Copy the chosen items of `project` (and their embeddings) into a new temporary workspace."""
    from labelloop.services.workspace import Workspace

    folder = Path(tempfile.mkdtemp(prefix="labelloop-simulate-", dir=parent))
    try:
        scratch = Workspace.init(folder, database_url=f"sqlite:///{folder / 'labelloop.db'}",
                                 blob_url=str(folder / "blobs"))
        names = project.class_names()
        colours = [c.colour for c in project.classes]
        with scratch.session() as session:
            pool = create_project(session, project.name, project.kind, names, colours,
                                  settings={**project.settings, **settings})
            held = create_project(session, f"{project.name}-held-out", project.kind, names, colours,
                                  settings={**project.settings, **settings})
        item_map: dict[int, int] = {}
        wanted = [(i, pool.id) for i in pool_ids] + [(i, held.id) for i in held_out_ids]
        for start in range(0, len(wanted), 500):
            chunk = dict(wanted[start:start + 500])
            with workspace.session() as session:
                rows = session.scalars(select(ItemRow).where(ItemRow.id.in_(list(chunk))).order_by(ItemRow.id)).all()
                copies = [(row.id, chunk[row.id], row.blob_sha256, {c: getattr(row, c) for c in COPIED_ITEM_COLUMNS})
                          for row in rows]
                embeddings = session.execute(select(EmbeddingRow.item_id, EmbeddingRow.encoder, EmbeddingRow.dim,
                                                    EmbeddingRow.vector)
                                             .where(EmbeddingRow.item_id.in_(list(chunk)))).all()
                sizes = dict(session.execute(select(BlobRow.sha256, BlobRow.size)
                                             .where(BlobRow.sha256.in_({c[2] for c in copies}))).all())
            for _, _, sha, _ in copies:
                _link_blob(workspace.blobs, folder / "blobs", sha)
            with scratch.session() as session:
                for sha in {c[2] for c in copies}:
                    if session.get(BlobRow, sha) is None:
                        session.add(BlobRow(sha256=sha, size=sizes[sha]))
                session.flush()
                for real_id, project_id, sha, columns in copies:
                    row = ItemRow(project_id=project_id, blob_sha256=sha, **columns)
                    session.add(row)
                    session.flush()
                    item_map[real_id] = row.id
                session.add_all(EmbeddingRow(item_id=item_map[i], encoder=e, dim=d, vector=v)
                                for i, e, d, v in embeddings)
        with scratch.session() as session:
            pool, held = get_project(session, pool.name), get_project(session, held.name)
        return ScratchProject(scratch, pool, held, folder, item_map)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
