"""Export a project as a zip streamed to the client."""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from labelloop.server.auth import Access, project_access, workspace_of
from labelloop.services.data.exporting import INCLUDE, export_preview, export_project

router = APIRouter(tags=["export"])
CHUNK = 1 << 20


class _Pipe:
    """A write-only file for zipfile that hands its bytes on instead of keeping them."""

    def __init__(self):
        self.chunks: list[bytes] = []
        self.offset = 0

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        self.offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self.offset

    def flush(self) -> None:
        return None

    def take(self) -> bytes:
        data, self.chunks = b"".join(self.chunks), []
        return data


def _zip_stream(folder: Path, cleanup: Path) -> Iterator[bytes]:
    """Zip the folder file by file, yielding bytes as they are made; memory stays at about one chunk."""
    pipe = _Pipe()
    try:
        with zipfile.ZipFile(pipe, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                with open(path, "rb") as source, archive.open(path.relative_to(folder).as_posix(), "w",
                                                              force_zip64=True) as target:
                    while block := source.read(CHUNK):
                        target.write(block)
                        yield pipe.take()
                yield pipe.take()
        yield pipe.take()
    finally:
        shutil.rmtree(cleanup, ignore_errors=True)


@router.get("/api/projects/{project_id}/export", response_class=StreamingResponse,
            summary="The project in a training format, as a zip (streamed)",
            responses={200: {"content": {"application/zip": {}}}})
def export(request: Request, format: str = Query(..., min_length=1, max_length=32, description="coco, yolo, voc, ..."),
           include: str = Query("annotations", description=", ".join(INCLUDE)),
           images: bool = Query(False, description="Include the image files (labels only by default)"),
           unlabelled: bool = Query(False, description="Also items nobody labelled, with empty labels"),
           scores: bool = Query(False, description="yolo: a confidence column after each predicted shape"),
           exclude_duplicates: bool = Query(False, description="Keep one item per duplicate group (quality checks)"),
           access: Access = Depends(project_access("manage"))):
    workspace = workspace_of(request)
    staging = Path(tempfile.mkdtemp(prefix="export-", dir=_tmp(workspace)))
    try:
        summary = export_project(workspace, access.project.name, staging / "export", format=format,
                                 include=include, images=images, unlabelled=unlabelled, scores=scores,
                                 exclude_duplicates=exclude_duplicates)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    name = f"{access.project.name}-{format}.zip"
    # The zip streams, so what the export left out travels in headers (the UI shows them).
    headers = {"Content-Disposition": f'attachment; filename="{name}"',
               "X-Labelloop-Exported-Items": str(summary.items),
               "X-Labelloop-Left-Out": ", ".join(f"{n} {why}" for why, n in summary.left_out.items())}
    return StreamingResponse(_zip_stream(staging / "export", staging), media_type="application/zip", headers=headers)


@router.get("/api/projects/{project_id}/export/preview", response_model=dict[str, Any],
            summary="What an export would hold: items exported, items left out by reason (nothing is written)")
def preview(request: Request, format: str = Query(..., min_length=1, max_length=32),
            include: str = Query("annotations", description=", ".join(INCLUDE)),
            unlabelled: bool = Query(False), access: Access = Depends(project_access("manage"))):
    return export_preview(workspace_of(request), access.project.name, format=format, include=include,
                          unlabelled=unlabelled)


def _tmp(workspace) -> Path:
    folder = Path(workspace.root) / "tmp"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
