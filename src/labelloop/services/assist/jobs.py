"""Train and predict orchestration: job kinds that dispatch to the model-kind registry."""

from __future__ import annotations

from typing import Any

from labelloop.errors import InvalidInput
from labelloop.jobs.batches import batch_work, run_batches
from labelloop.jobs.registry import JobContext, job_kind
from labelloop.services.assist.model_cards import model_card
from labelloop.services.assist.model_kinds import get_model_kind
from labelloop.services.assist.models import get_model, parse_ref
from labelloop.services.assist.sampling import refresh_after_model
from labelloop.services.data.project_data import select_items
from labelloop.services.projects import get_project


def _project_and_kind(workspace, params: dict[str, Any]):
    with workspace.session() as session:
        project = get_project(session, params["project"])
    kind_name, _ = parse_ref(params["model"])
    kind = get_model_kind(kind_name)
    if project.kind not in kind.project_kinds:
        raise InvalidInput(f"model {kind_name!r} serves {', '.join(k.value for k in kind.project_kinds)} projects; "
                           f"{project.name!r} is a {project.kind.value} project")
    return project, kind


@job_kind("train")
def train_job(workspace, ctx: JobContext) -> dict[str, Any]:
    project, kind = _project_and_kind(workspace, ctx.params)
    model = kind.train(workspace, project, ctx.params, ctx)
    ctx.log(f"trained {model.ref}: {model.metrics}")
    refresh_after_model(workspace, project.name, model)
    card = model_card(model)
    figures = ", ".join(f"{f['name']} {f['value']}" for f in card["figures"][:3])
    missing = [f"{c['class']}: {c['reason']}" for c in card["classes"] if c["reason"]]
    return {**model.to_dict(), "summary": "; ".join([f"{model.ref} {model.status}: {figures}", *missing])}


@job_kind("predict")
def predict_job(workspace, ctx: JobContext) -> dict[str, Any]:
    project, kind = _project_and_kind(workspace, ctx.params)
    model = get_model(workspace, project, ctx.params["model"])
    chosen = ctx.params.get("items")
    if isinstance(chosen, str):
        chosen = [int(i) for i in chosen.split(",") if i.strip().isdigit()] or None
    item_ids = select_items(workspace, project, split=ctx.params.get("split"), everything=ctx.params.get("all", False),
                            items=chosen)
    summary = run_batches(workspace, "predict", item_ids, {**ctx.params, "model": model.ref}, ctx,
                          message=f"predicting with {model.ref}")
    predicted = summary.get("predictions", 0)
    if summary.get("executor") == "ray":  # the chunks' own sentences count their chunk only
        if "prelabelled" in summary:
            summary["coverage"] = round(summary["prelabelled"] / predicted, 4) if predicted else None
        summary["summary"] = (f"{model.ref} predicted {predicted} item(s) in {summary['tasks']} Ray tasks"
                              + (f"; {summary['prelabelled']} pre-labelled" if "prelabelled" in summary else ""))
    ctx.log(f"{model.ref} predicted {predicted} items")
    refresh_after_model(workspace, project.name, model)
    summary.setdefault("summary", f"{model.ref} predicted {predicted} item(s)")
    return summary


@batch_work("predict")
def predict_batch(workspace, item_ids: list[int], params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Predictions of one model version on these items (all of a job's, or one chunk of them on Ray)."""
    project, kind = _project_and_kind(workspace, params)
    return kind.predict(workspace, project, get_model(workspace, project, params["model"]), item_ids, params, ctx)
