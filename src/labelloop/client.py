"""A Python client for the labelloop REST API, typed with the server's own pydantic schemas.

    from labelloop.client import Client

    with Client("http://127.0.0.1:8000", token) as lab:
        project = lab.create_project("cells", "semantic", ["background", "cell"])
        lab.upload(project.id, Path("images").glob("*.png"))
        work = lab.next(project.id)
        lab.annotate(work.item.id, shapes, base_version=work.base_version)   # StaleVersion when someone was first
        job = lab.train(project.id, "pixel-rf", wait=True, progress=print)
        lab.export(project.id, "out/", format="coco")

Errors come back as labelloop's own exceptions with the server's one-line `detail`: 400/422 InvalidInput,
401/403 NotAllowed, 404 NotFound, 409 Conflict (StaleVersion for a stale `base_version`, with `current`: the
newer revision). Needs httpx and pydantic only, not FastAPI.
"""

from __future__ import annotations

import contextlib
import dataclasses
import mimetypes
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from labelloop.errors import Conflict, InvalidInput, LabelloopError, NotFound
from labelloop.server.schemas import (
    AnnotationOut,
    ItemDetail,
    ItemOut,
    JobOut,
    NextOut,
    PredictionOut,
    ProjectOut,
    ShapeIn,
    VerdictOut,
)

M = TypeVar("M", bound=BaseModel)
Progress = Callable[[int, "int | None", str], None]
ProjectRef = int | str
_SHAPES = TypeAdapter(list[ShapeIn])
_FINISHED = ("done", "failed", "cancelled")


class ApiError(LabelloopError):
    """The server refused a request; `status` is the HTTP status, the message its `detail`."""

    def __init__(self, message: str, status: int, body: Any = None):
        super().__init__(message)
        self.status = status
        self.body = body


class NotAllowed(ApiError):
    """401 (no or a revoked token) or 403 (your role in the project does not allow it)."""


class ClientInvalidInput(ApiError, InvalidInput):
    """400 or 422: the request was wrong; nothing changed."""


class ClientNotFound(ApiError, NotFound):
    """404: no such project, item, prediction, model or job (or not one you may see)."""


class ClientConflict(ApiError, Conflict):
    """409: the write clashes with newer data; `current` is what the server has now, when it says."""

    def __init__(self, message: str, status: int, body: Any = None):
        ApiError.__init__(self, message, status, body)
        self.current = body.get("current") if isinstance(body, dict) else None


class StaleVersion(ClientConflict):
    """409 on a save or review: someone saved a newer revision since your `base_version`. Reload the item
    (`Client.item`), merge, and send again with its `base_version`."""


class JobFailed(LabelloopError):
    """A job the client waited for ended failed or cancelled; `job` is its final state."""

    def __init__(self, job: JobOut):
        super().__init__(f"job {job.id} ({job.kind}) {job.state}: {job.error or job.message or 'no message'}")
        self.job = job


@dataclasses.dataclass
class ExportResult:
    path: Path  # the zip file, or the folder it was unpacked into
    items: int  # items exported
    left_out: str  # what was left out and why ("3 not labelled"), empty when nothing


def _shape_dicts(shapes: Iterable[Any]) -> list[dict[str, Any]]:
    """labelloop shapes (domain dataclasses), pydantic ShapeIn models or plain dicts -> checked JSON dicts."""
    from labelloop.domain import shape_to_dict

    plain = []
    for shape in shapes:
        if isinstance(shape, BaseModel):
            plain.append(shape.model_dump())
        elif dataclasses.is_dataclass(shape):
            data = shape_to_dict(shape)
            data.pop("score", None)  # a person's shape has no score (the API refuses one)
            plain.append(data)
        else:
            plain.append(dict(shape))
    try:
        return [s.model_dump() for s in _SHAPES.validate_python(plain)]
    except ValidationError as exc:
        first = exc.errors()[0]
        place = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"shapes[{place}]: {first['msg']}") from None


class Client:
    """One server, one API token (`labelloop token create`, or POST /api/auth/token)."""

    def __init__(self, url: str, token: str, *, timeout: float = 60.0, transport: httpx.BaseTransport | None = None):
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout,
                                  transport=transport)
        self._project_ids: dict[str, int] = {}

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing -------------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, stale_is_version: bool = False, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise LabelloopError(f"cannot reach the labelloop server at {self.url}: {exc}") from None
        _check(response, f"{method} {path}", stale_is_version)
        return response

    def _get(self, path: str, model: type[M], **params: Any) -> M:
        return model.model_validate(self._request("GET", path, params=_clean(params)).json())

    def _post(self, path: str, model: type[M], body: Any = None, *, stale_is_version: bool = False) -> M:
        response = self._request("POST", path, json=body, stale_is_version=stale_is_version)
        return model.model_validate(response.json())

    def _pages(self, path: str, model: type[M], **params: Any) -> Iterator[M]:
        cursor = None
        while True:
            page = self._request("GET", path, params=_clean({**params, "cursor": cursor, "limit": 1000})).json()
            yield from (model.model_validate(item) for item in page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def project_id(self, project: ProjectRef) -> int:
        """A project's id from its id or its name."""
        if isinstance(project, int):
            return project
        if project not in self._project_ids:
            self._project_ids.update({p.name: p.id for p in self.projects()})
        if project not in self._project_ids:
            raise ClientNotFound(f"no project named {project!r} that you belong to", 404)
        return self._project_ids[project]

    # --- projects and items ---------------------------------------------------------------------------------

    def projects(self) -> list[ProjectOut]:
        return list(self._pages("/api/projects", ProjectOut))

    def project(self, project: ProjectRef) -> ProjectOut:
        return self._get(f"/api/projects/{self.project_id(project)}", ProjectOut)

    def create_project(self, name: str, kind: str, classes: Iterable[str] = (), *,
                       settings: dict[str, Any] | None = None) -> ProjectOut:
        created = self._post("/api/projects", ProjectOut, {"name": name, "kind": kind, "classes": list(classes),
                                                           "settings": settings or {}})
        self._project_ids[created.name] = created.id
        return created

    def set_member(self, project: ProjectRef, user: str, role: str) -> None:
        """Give a user a role in the project: owner, manager, annotator or reviewer."""
        self._request("PUT", f"/api/projects/{self.project_id(project)}/members/{user}", json={"role": role})

    def upload(self, project: ProjectRef, paths: Iterable[str | Path], *, split: str | None = None,
               skip_bad: bool = False) -> dict[str, Any]:
        """Upload image files in one request: all or nothing (unless skip_bad). Returns the import report."""
        files = []
        for path in map(Path, paths):
            kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            files.append(("files", (path.name, path.read_bytes(), kind)))
        if not files:
            raise InvalidInput("no files to upload")
        data = _clean({"split": split, "skip_bad": "true" if skip_bad else None})
        return self._request("POST", f"/api/projects/{self.project_id(project)}/items", files=files, data=data).json()

    def items(self, project: ProjectRef, *, state: str | None = None) -> Iterator[ItemOut]:
        """Every item of the project (a page of 1000 at a time); `state`: unlabelled, submitted or accepted."""
        return self._pages(f"/api/projects/{self.project_id(project)}/items", ItemOut, state=state)

    def item(self, item_id: int) -> ItemDetail:
        """The item, the revision to show you, and the base_version to send with your next save."""
        return self._get(f"/api/items/{item_id}", ItemDetail)

    def image(self, item_id: int, *, level: int = 0) -> bytes:
        """The picture as PNG bytes (level 0: full size; each level halves both sides)."""
        return self._request("GET", f"/api/items/{item_id}/image", params={"level": level}).content

    def next(self, project: ProjectRef) -> NextOut:
        """The next item to label, leased to you; `item` is None when nothing is left for you."""
        return self._get(f"/api/projects/{self.project_id(project)}/next", NextOut)

    def skip(self, item_id: int) -> None:
        self._request("POST", f"/api/items/{item_id}/skip")

    # --- annotations and review -----------------------------------------------------------------------------

    def annotations(self, item_id: int) -> list[AnnotationOut]:
        """The item's revisions you may see, oldest first."""
        return list(self._pages(f"/api/items/{item_id}/annotations", AnnotationOut))

    def annotate(self, item_id: int, shapes: Iterable[Any], *, base_version: int,
                 state: str = "submitted") -> AnnotationOut:
        """Save a revision. `base_version` is the version you started from (0: none); a stale one raises
        StaleVersion, whose `current` is the newer revision."""
        body = {"shapes": _shape_dicts(shapes), "base_version": base_version, "state": state}
        return self._post(f"/api/items/{item_id}/annotations", AnnotationOut, body, stale_is_version=True)

    def review_queue(self, project: ProjectRef) -> list[AnnotationOut]:
        """Submitted revisions waiting for a reviewer."""
        return list(self._pages(f"/api/projects/{self.project_id(project)}/review", AnnotationOut))

    def review(self, item_id: int, action: str, *, version: int, shapes: Iterable[Any] | None = None,
               comment: str = "") -> VerdictOut:
        """Accept, edit (with corrected shapes) or reject the submitted `version` of an item."""
        body: dict[str, Any] = {"action": action, "version": version, "comment": comment}
        if shapes is not None:
            body["shapes"] = _shape_dicts(shapes)
        return self._post(f"/api/items/{item_id}/review", VerdictOut, body, stale_is_version=True)

    # --- predictions ------------------------------------------------------------------------------------------

    def predictions(self, project: ProjectRef, *, state: str | None = None) -> Iterator[PredictionOut]:
        """The project's predictions; `state`: pending, accepted, edited or rejected."""
        return self._pages(f"/api/projects/{self.project_id(project)}/predictions", PredictionOut, state=state)

    def review_prediction(self, prediction_id: int, action: str, *, shapes: Iterable[Any] | None = None,
                          base_version: int | None = None) -> VerdictOut:
        """Accept a pre-label as it is, edit it (corrected shapes), or reject it."""
        body: dict[str, Any] = {"action": action}
        if shapes is not None:
            body["shapes"] = _shape_dicts(shapes)
        if base_version is not None:
            body["base_version"] = base_version
        return self._post(f"/api/predictions/{prediction_id}/review", VerdictOut, body, stale_is_version=True)

    # --- models and jobs --------------------------------------------------------------------------------------

    def train(self, project: ProjectRef, model: str, params: dict[str, Any] | None = None, *, wait: bool = False,
              progress: Progress | None = None, timeout: float | None = None) -> JobOut:
        """Start training `model` (a model kind); with wait=True, block until the job ends (JobFailed if it fails)."""
        job = self._post(f"/api/projects/{self.project_id(project)}/train", JobOut,
                         {"model": model, "params": params or {}})
        return self.wait(job, progress=progress, timeout=timeout) if wait else job

    def predict(self, project: ProjectRef, model: str, *, split: str | None = None, all: bool = False,
                items: list[int] | None = None, params: dict[str, Any] | None = None, wait: bool = False,
                progress: Progress | None = None, timeout: float | None = None) -> JobOut:
        """Pre-label with `model` ("kind" or "kind:version"): unlabelled items, a split, all, or chosen items."""
        body = _clean({"model": model, "split": split, "all": all, "items": items, "params": params or {}})
        job = self._post(f"/api/projects/{self.project_id(project)}/predict", JobOut, body)
        return self.wait(job, progress=progress, timeout=timeout) if wait else job

    def models(self, project: ProjectRef) -> list[dict[str, Any]]:
        return [dict(m) for m in self._pages_raw(f"/api/projects/{self.project_id(project)}/models")]

    def _pages_raw(self, path: str) -> Iterator[dict[str, Any]]:
        cursor = None
        while True:
            page = self._request("GET", path, params=_clean({"cursor": cursor, "limit": 1000})).json()
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def job(self, job_id: int) -> JobOut:
        return self._get(f"/api/jobs/{job_id}", JobOut)

    def cancel(self, job_id: int) -> JobOut:
        return self._post(f"/api/jobs/{job_id}/cancel", JobOut)

    def wait(self, job: JobOut | int, *, progress: Progress | None = None, timeout: float | None = None,
             poll: float = 0.5) -> JobOut:
        """Poll until the job ends; `progress(done, total, message)` hears every change. JobFailed when it
        failed or was cancelled; TimeoutError after `timeout` seconds (the job goes on)."""
        job_id = job if isinstance(job, int) else job.id
        deadline = None if timeout is None else time.monotonic() + timeout
        seen = None
        while True:
            current = self.job(job_id)
            state = (current.done, current.total, current.message)
            if progress is not None and state != seen:
                progress(*state)
                seen = state
            if current.state in _FINISHED:
                if current.state != "done":
                    raise JobFailed(current)
                return current
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {current.state} after {timeout:g} s (it goes on)")
            time.sleep(poll)

    # --- export -----------------------------------------------------------------------------------------------

    def export(self, project: ProjectRef, dest: str | Path, *, format: str, include: str = "annotations",
               images: bool = False, unlabelled: bool = False) -> ExportResult:
        """Download an export. `dest` ending in .zip keeps the zip; otherwise it is unpacked into the folder
        `dest` (which must be empty or new)."""
        dest = Path(dest)
        params = {"format": format, "include": include, "images": images, "unlabelled": unlabelled}
        path = f"/api/projects/{self.project_id(project)}/export"
        as_zip = dest.suffix.lower() == ".zip"
        if not as_zip and dest.exists() and any(dest.iterdir()):
            raise InvalidInput(f"{dest} is not empty; choose a new folder")
        with tempfile.TemporaryFile() as spool, self._http.stream("GET", path, params=params) as response:
            if response.status_code >= 400:
                response.read()
                _check(response, f"GET {path}", False)
            with dest.open("wb") if as_zip else contextlib.nullcontext(spool) as target:
                for chunk in response.iter_bytes():
                    target.write(chunk)
            items = int(response.headers.get("X-Labelloop-Exported-Items", "0"))
            left_out = response.headers.get("X-Labelloop-Left-Out", "")
            if not as_zip:
                spool.seek(0)
                with zipfile.ZipFile(spool) as archive:
                    for member in archive.namelist():
                        if member.startswith("/") or ".." in Path(member).parts:
                            raise InvalidInput(f"the export holds an unsafe path {member!r}")
                    dest.mkdir(parents=True, exist_ok=True)
                    archive.extractall(dest)
        return ExportResult(dest, items, left_out)


def _check(response: httpx.Response, what: str, stale_is_version: bool) -> None:
    """Raise the labelloop exception for an error answer, with the server's one-line detail."""
    status = response.status_code
    if status < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    message = f"{what}: {status} {detail or response.reason_phrase}"
    if status == 409 and stale_is_version:
        raise StaleVersion(f"{message} (reload it with Client.item, merge, and send its base_version)", status, body)
    if status == 409:
        raise ClientConflict(message, status, body)
    if status in (401, 403):
        raise NotAllowed(message, status, body)
    if status == 404:
        raise ClientNotFound(message, status, body)
    if status in (400, 422):
        raise ClientInvalidInput(message, status, body)
    raise ApiError(message, status, body)


def _clean(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}
