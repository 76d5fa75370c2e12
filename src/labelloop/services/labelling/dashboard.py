"""Dashboard data for one project: items per state, work per annotator and per class, queue, reviews,
models with metrics and curves, jobs with progress."""

from __future__ import annotations

import io
from typing import Any

from sqlalchemy import func, select

from labelloop.errors import NotFound
from labelloop.services.labelling import queue, review
from labelloop.services.assist.effort import effort_by_model
from labelloop.services.assist.model_cards import model_card
from labelloop.services.assist.models import list_models
from labelloop.services.projects import ProjectInfo
from labelloop.services.data.stats import project_stats
from labelloop.store.tables import AssignmentRow, JobRow, ModelRow, UserRow

RECENT_JOBS = 20


def _stored_picture(curves: dict[str, Any], params: dict[str, Any]) -> str | None:
    """The blob of a picture the model kind drew itself: U-Net curves, a classifier's reliability plot."""
    return curves.get("png") or params.get("reliability_plot_sha256")


def model_summary(model, effort: dict[int, dict[str, Any]] | None = None) -> dict[str, Any]:
    """A model for the API and the dashboard; `effort`: per model id, what its reviewed pre-labels saved."""
    data = model.to_dict()
    drawable = _stored_picture(model.curves, model.params) or _series(model.curves)
    data["curves_png"] = f"/api/models/{model.id}/curves.png" if drawable else None  # never a link that 404s
    data["effort"] = (effort or {}).get(model.id)
    data["card"] = model_card(model, data["effort"])
    return data


def project_dashboard(workspace, project: ProjectInfo) -> dict[str, Any]:
    from labelloop.services.quality.runs import quality_summary

    stats = project_stats(workspace, project.name)
    with workspace.session() as session:
        done_by = dict(session.execute(
            select(UserRow.name, func.count()).join(AssignmentRow, AssignmentRow.user_id == UserRow.id)
            .where(AssignmentRow.project_id == project.id, AssignmentRow.state == "done")
            .group_by(UserRow.name)).all())
        queue_state = queue.queue_counts(session, project.id)
        verdicts = review.review_counts(session, project.id)
        saved = effort_by_model(session, project.id)
        jobs = session.scalars(select(JobRow).where(JobRow.project_id == project.id)
                               .order_by(JobRow.id.desc()).limit(RECENT_JOBS)).all()
        job_list = [{"id": j.id, "kind": j.kind, "state": j.state, "done": j.done, "total": j.total,
                     "message": j.message, "created_at": j.created_at.isoformat()} for j in jobs]
    states = {"unlabelled": stats["unlabelled_items"], **{s: stats["annotation_states"].get(s, 0)
                                                          for s in ("submitted", "accepted")}}
    annotators = sorted(set(stats["items_per_annotator"]) | set(done_by))
    return {
        "project": {"id": project.id, "name": project.name, "kind": project.kind.value},
        "items": stats["items"],
        "items_per_state": states,
        "items_per_split": stats["items_per_split"],
        "per_annotator": {a: {"newest_revisions": stats["items_per_annotator"].get(a, 0),
                              "queue_items_done": done_by.get(a, 0)} for a in annotators},
        "per_class": {c: {"items": stats["items_per_class"].get(c, 0), "shapes": n}
                      for c, n in stats["shapes_per_class"].items()},
        "queue": queue_state,
        "reviews": verdicts,
        "predictions": stats["predictions"],
        "models": [model_summary(m, saved) for m in list_models(workspace, project)],
        "jobs": job_list,
        "quality": quality_summary(workspace, project),
    }


def _series(curves: dict[str, Any]) -> list[tuple[str, list[float], list[float]]]:
    """Curves as stored by model kinds: name -> [y...], name -> {"x": [...], "y": [...]}, or name -> {series: [y...]}."""
    found = []
    for name, value in curves.items():
        if isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
            found.append((name, list(range(1, len(value) + 1)), value))
        elif isinstance(value, dict) and isinstance(value.get("y"), list):
            found.append((name, value.get("x") or list(range(1, len(value["y"]) + 1)), value["y"]))
        elif isinstance(value, dict):
            found.extend(_series({f"{name} {k}": v for k, v in value.items()}))
    return found


def curves_png(workspace, model_id: int) -> bytes:
    """A model's training curves drawn as one PNG (matplotlib, headless)."""
    with workspace.session() as session:
        row = session.get(ModelRow, model_id)
        if row is None:
            raise NotFound(f"no model {model_id}")
        curves, title = dict(row.curves), f"{row.kind}:{row.version}"
        stored = _stored_picture(curves, dict(row.params))
    if stored:
        with workspace.blobs.open(stored) as picture:
            return picture.read()
    series = _series(curves)
    if not series:
        raise NotFound(f"model {title} has no curves")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3.5), dpi=100)
    axes = figure.add_subplot()
    for name, xs, ys in series:
        axes.plot(xs[: len(ys)], ys, label=name)
    axes.set_title(title)
    axes.legend(fontsize="small")
    axes.grid(alpha=0.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def model_project(workspace, model_id: int) -> int:
    with workspace.session() as session:
        project_id = session.scalar(select(ModelRow.project_id).where(ModelRow.id == model_id))
    if project_id is None:
        raise NotFound(f"no model {model_id}")
    return project_id


def project_jobs(workspace, project_id: int, *, before: int = 0, limit: int = 100) -> list[dict[str, Any]]:
    """A project's jobs, newest first (keyset: ids below `before`, when given)."""
    from labelloop.services.jobs import get_job

    query = select(JobRow.id).where(JobRow.project_id == project_id)
    if before:
        query = query.where(JobRow.id < before)
    with workspace.session() as session:
        ids = session.scalars(query.order_by(JobRow.id.desc()).limit(limit)).all()
    return [get_job(workspace, job_id).to_dict() for job_id in ids]
