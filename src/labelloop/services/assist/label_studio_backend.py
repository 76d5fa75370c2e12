"""Label Studio's ML-backend protocol over one labelloop project: /setup, /predict and /webhook as services.

The protocol (label-studio-ml-backend, `label_studio_ml/api.py`; Label Studio's caller `label_studio/ml/api_connector.py`):
/setup gets {project: "<id>.<created>", schema: <labelling config>, hostname, access_token, extra_params} and answers
{model_version}; /predict gets {tasks: [{id, data}], project, label_config, params} and answers {results: [one
prediction per task: {result, score, model_version}]}; /webhook gets Label Studio's webhook events ({action,
annotation, task, project}). Every task is matched to an item of the project before anything is computed or written,
so a request that names an image that cannot be found changes nothing.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from labelloop.domain import ProjectKind, shape_to_dict
from labelloop.errors import InvalidInput, LabelloopError, NotFound
from labelloop.services.assist.ls_images import LabelStudioAccess, candidate_names, fetch
from labelloop.services.assist.ls_predict import TaskImage, Predictor
from labelloop.services.assist.ls_results import check_labels, served_kinds, shapes_from_results, targets
from labelloop.services.projects import ProjectInfo, get_project
from labelloop.store.tables import ItemRow

log = logging.getLogger(__name__)
ANNOTATION_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
MAX_TASKS = 1000  # per /predict request (Label Studio sends one task, or a batch from the Data Manager)
ITEM_KEY = "labelloop_item_id"  # a task data key naming the item outright (tasks exported by labelloop carry it)


class LabelStudioBackend:
    """One labelloop project served to Label Studio."""

    def __init__(self, workspace, project_name: str, access: LabelStudioAccess | None = None):
        self.workspace = workspace
        self.project_name = project_name
        self.access = access or LabelStudioAccess.from_env()
        self.predictor = Predictor(workspace)
        self._retraining: threading.Thread | None = None
        self._retrain_lock = threading.Lock()
        self.last_retrain: dict[str, Any] | None = None
        self.project()  # an unknown or unsuitable project fails here, before the server starts

    def project(self) -> ProjectInfo:
        with self.workspace.session() as session:
            project = get_project(session, self.project_name)
        if project.kind not in (ProjectKind.classification, ProjectKind.multilabel, ProjectKind.detection):
            raise InvalidInput(f"project {project.name!r} is a {project.kind.value} project; the Label Studio "
                               f"backend serves {', '.join(served_kinds())} projects")
        return project

    # --- the protocol ---

    def health(self) -> dict[str, Any]:
        project = self.project()
        return {"status": "UP", "model_class": "labelloop", "project": project.name,
                "model_version": self.predictor.model_version(project)}

    def setup(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Check the labelling config against the project, keep Label Studio's URL and token for fetching images."""
        project = self.project()
        found = targets(_text(payload, "schema"), project.kind)
        check_labels(found, project.class_names())
        hostname, token = _text(payload, "hostname"), _text(payload, "access_token")
        if hostname:
            self.access.url = hostname
        if token:
            self.access.token = token
        self.predictor.warm_up(project)
        return {"model_version": self.predictor.model_version(project) or "none"}

    def predict(self, payload: dict[str, Any]) -> dict[str, Any]:
        project = self.project()
        tasks = payload.get("tasks")
        if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
            raise InvalidInput("'tasks' must be a list of Label Studio tasks ({\"id\": ..., \"data\": {...}})")
        if len(tasks) > MAX_TASKS:
            raise InvalidInput(f"at most {MAX_TASKS} tasks per request; send the rest in another one")
        found = targets(_text(payload, "label_config"), project.kind)
        images = self.resolve(project, tasks, found.data_key)
        predictions, version = self.predictor.predict(project, images, found)
        response: dict[str, Any] = {"results": predictions, "model_version": version}
        if version is None:
            response["message"] = (f"project {project.name!r} has no trained model yet: train one with `labelloop "
                                   f"train {project.name} --model {_model_kind(project)}`")
        return response

    def webhook(self, payload: dict[str, Any]) -> dict[str, Any]:
        """ANNOTATION_CREATED / _UPDATED: the task's labels become a new annotation revision of its item, then the
        classifier is retrained in the background when `retrain_every` new labels have come in. Other events are
        acknowledged and ignored."""
        action = payload.get("action")
        if action == "START_TRAINING":
            return {"status": "ok", "result": {"retrain": self.start_retraining(force=True)}}
        if action not in ANNOTATION_EVENTS:
            return {"status": "ignored", "result": f"event {action!r} is not used by labelloop"}
        annotation, task = payload.get("annotation"), payload.get("task")
        if not isinstance(annotation, dict) or not isinstance(task, dict):
            raise InvalidInput(f"a {action} event needs 'annotation' and 'task' objects")
        if annotation.get("was_cancelled"):
            return {"status": "ignored", "result": "the task was skipped in Label Studio; nothing stored"}
        project = self.project()
        found = targets(_project_config(payload), project.kind)
        image = self.resolve(project, [task], found.data_key, keep_fetched=True)[0]
        width, height = image.size
        shapes = shapes_from_results(annotation.get("result"), project.kind, width, height)
        author = _author(annotation)
        stored = self._store(project, task, image, shapes, author)
        return {"status": "ok", "result": {**stored, "retrain": self.start_retraining()}}

    # --- tasks to items ---

    def resolve(self, project: ProjectInfo, tasks: Sequence[dict], data_key: str, *,
                keep_fetched: bool = False) -> list[TaskImage]:
        """Each task's image: an item of the project (by `labelloop_item_id`, or by the name its URL ends in), else
        the image fetched from Label Studio or the local folder. Any task whose image cannot be found fails the
        whole request with a message naming it."""
        references = []
        for n, task in enumerate(tasks):
            data = task.get("data")
            if not isinstance(data, dict):
                raise InvalidInput(f"task {task.get('id', n + 1)}: 'data' must be an object")
            references.append(_reference(task, data, data_key, n))
        items = self._find_items(project, tasks, references)
        images, problems, bad_input = [], [], False
        for task, reference, item in zip(tasks, references, items):
            if item is not None:
                images.append(TaskImage(item=item))
                continue
            try:
                images.append(self._fetched(reference, keep_fetched))
            except LabelloopError as exc:
                problems.append(f"task {task.get('id', '?')}: {exc}")
                bad_input |= not isinstance(exc, NotFound)
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise (InvalidInput if bad_input else NotFound)("; ".join(problems[:3]) + more)
        return images

    def _find_items(self, project: ProjectInfo, tasks: Sequence[dict], references: list[str]) -> list[ItemRow | None]:
        names = [candidate_names(r) for r in references]
        wanted = sorted({n for group in names for n in group})
        explicit = {t["data"][ITEM_KEY] for t in tasks if isinstance(t["data"].get(ITEM_KEY), int)}
        with self.workspace.session() as session:
            by_source: dict[str, ItemRow] = {}
            for start in range(0, len(wanted), 500):
                for row in session.scalars(select(ItemRow).where(ItemRow.project_id == project.id,
                                                                 ItemRow.source.in_(wanted[start:start + 500]))
                                           .order_by(ItemRow.page.desc())):
                    by_source[row.source] = row  # page 0 of a multi-page file last, so it wins
            by_id = {r.id: r for r in session.scalars(select(ItemRow).where(
                ItemRow.project_id == project.id, ItemRow.id.in_(explicit)))} if explicit else {}
            found: list[ItemRow | None] = []
            for task, group in zip(tasks, names):
                item_id = task["data"].get(ITEM_KEY)
                if isinstance(item_id, int):
                    if item_id not in by_id:
                        raise NotFound(f"task {task.get('id', '?')}: no item {item_id} in project {project.name!r}")
                    found.append(by_id[item_id])
                    continue
                exact = next((by_source[n] for n in group if n in by_source), None)
                found.append(exact if exact is not None or not group else self._by_file_name(session, project, group[-1]))
            session.expunge_all()
        return found

    def _by_file_name(self, session, project: ProjectInfo, name: str) -> ItemRow | None:
        """The item whose source ends in this file name, when exactly one does (Label Studio's uploads keep only
        the file name; items imported from folders carry their folder in front)."""
        rows = session.scalars(select(ItemRow).where(ItemRow.project_id == project.id, ItemRow.page == 0,
                                                     ItemRow.source.endswith("/" + name, autoescape=True))
                               .limit(2)).all()
        if len(rows) > 1:
            raise InvalidInput(f"image {name!r} matches several items ({rows[0].source}, {rows[1].source}, ...); "
                               f"give the task's data the key {ITEM_KEY!r}, or a URL with the folder")
        return rows[0] if rows else None

    def _fetched(self, reference: str, keep: bool) -> TaskImage:
        from labelloop import media

        name, data = fetch(reference, self.access)
        try:
            pixels = media.read(io.BytesIO(data), name=name)
        except Exception as exc:  # any decoder failure: the bytes are not an image we can read
            raise InvalidInput(f"image {reference!r} could not be decoded: {exc}") from None
        return TaskImage(pixels=pixels, fetched=(name, data) if keep else None)

    # --- storing labels ---

    def _store(self, project: ProjectInfo, task: dict, image: TaskImage, shapes, author: str) -> dict[str, Any]:
        from labelloop.services.labelling.annotations import check_shapes, latest, save

        width, height = image.size
        where = f"task {task.get('id', '?')}"
        check_shapes(shapes, project, width, height, where)  # before an image is added for it
        added = False
        if image.item is None:
            image.item, added = self._add_item(project, image), True
        with self.workspace.session() as session:
            current = latest(session, image.item.id)
            wanted = [shape_to_dict(s) for s in shapes]
            if current is not None and current.author == author and current.shapes == wanted:
                return {"item": image.item.id, "annotation_version": current.version, "unchanged": True}
            info = save(session, project, image.item.id, shapes, author=author, base_version=None)
        log.info("stored %s's labels of %s as version %d of item %d", author, where, info.version, info.item_id)
        return {"item": info.item_id, "annotation_version": info.version, "item_added": added}

    def _add_item(self, project: ProjectInfo, image: TaskImage) -> ItemRow:
        from labelloop.services.data.items import upload_items

        name, data = image.fetched
        upload_items(self.workspace, project.name, [(name, io.BytesIO(data))], split=None, author="label-studio")
        with self.workspace.session() as session:
            row = session.scalar(select(ItemRow).where(ItemRow.project_id == project.id)
                                 .order_by(ItemRow.id.desc()).limit(1))
            session.expunge(row)
        return row

    # --- retraining ---

    def start_retraining(self, *, force: bool = False) -> str:
        """Retrain in a background thread when due (`retrain_every` new labels since the newest classifier), or now
        (`force`: Label Studio's "Start training"); one retraining at a time."""
        from labelloop.services.assist.prelabels import DEFAULT_RETRAIN_EVERY, new_labels_since_last_model

        project = self.project()
        if project.kind is ProjectKind.detection:
            return "not automatic for detectors (train with `labelloop train NAME --model detector`)"
        every = int(project.settings.get("retrain_every", DEFAULT_RETRAIN_EVERY) or 0)
        with self._retrain_lock:
            if self._retraining is not None and self._retraining.is_alive():
                return "already running"
            if not force:
                if every <= 0:
                    return "off (retrain_every = 0)"
                new, model = new_labels_since_last_model(self.workspace, project)
                if model is None:
                    return "no classifier yet: train the first one with `labelloop train`"
                if new < every:
                    return f"not due ({new} of {every} new labels)"
            self._retraining = threading.Thread(target=self._retrain, args=(force,), daemon=True,
                                                name="labelloop-retrain")
            self._retraining.start()
            return "started"

    def wait_for_retraining(self, timeout: float | None = None) -> dict[str, Any] | None:
        thread = self._retraining
        if thread is not None:
            thread.join(timeout)
        return self.last_retrain

    def _retrain(self, force: bool) -> None:
        from labelloop.services.assist.prelabels import retrain_if_due

        try:
            if force:
                from labelloop.services.jobs import create_job, get_job, run_job

                job = run_job(self.workspace, create_job(self.workspace, "train", {
                    "project": self.project_name, "model": "classifier"}, self.project().id))
                self.last_retrain = {"job": job.id, "state": job.state, "error": job.error}
            else:
                self.last_retrain = retrain_if_due(self.workspace, self.project_name)
        except Exception as exc:  # a background thread: log it, keep serving
            log.warning("retraining %s failed: %s", self.project_name, exc)
            self.last_retrain = {"error": str(exc)}


def _text(payload: dict[str, Any], key: str) -> str | None:
    value = payload.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidInput(f"'{key}' must be a string")
    return value or None


def _project_config(payload: dict[str, Any]) -> str | None:
    project = payload.get("project")
    return project.get("label_config") if isinstance(project, dict) else None


def _reference(task: dict, data: dict, data_key: str, n: int) -> str:
    if isinstance(data.get(ITEM_KEY), int):
        return ""
    value = data.get(data_key)
    if value is None:  # a config-less request: the first text value of the task
        value = next((v for v in data.values() if isinstance(v, str) and v), None)
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"task {task.get('id', n + 1)}: no image URL under data.{data_key}")
    return value


def _author(annotation: dict[str, Any]) -> str:
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        who = who.get("email") or who.get("id")
    return f"label-studio:{who}" if who not in (None, "") else "label-studio"


def _model_kind(project: ProjectInfo) -> str:
    return "detector" if project.kind is ProjectKind.detection else "classifier"
