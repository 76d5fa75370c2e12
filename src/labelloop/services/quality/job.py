"""The `quality` job: a project's quality checks run in the background (the browser's "Run the checks" button),
with progress, cancellable, and a one-line summary per check."""

from __future__ import annotations

from typing import Any

from labelloop.jobs.registry import JobContext, job_kind
from labelloop.services.projects import get_project
from labelloop.services.quality.runs import run_checks


def summary_line(results: dict[str, Any]) -> str:
    """'label: 9 flagged of 100; duplicate: 2 flagged of 100; outlier: skipped (…)'."""
    parts = []
    for check, result in results.items():
        if "skipped" in result:
            parts.append(f"{check}: skipped ({result['skipped']})")
        else:
            scored = result.get("scored", result.get("labelled", result.get("items")))
            parts.append(f"{check}: {result.get('flagged', 0)} flagged" + (f" of {scored}" if scored else "")
                         + ("" if result.get("rescored", True) else ", unchanged since the last run"))
    return "; ".join(parts)


@job_kind("quality")
def quality_job(workspace, ctx: JobContext) -> dict[str, Any]:
    with workspace.session() as session:
        project = get_project(session, ctx.params["project"])
    results = run_checks(workspace, project, ctx.params.get("kind"), force=bool(ctx.params.get("force")),
                         progress=ctx.progress)
    line = summary_line(results)
    ctx.log(line)
    return {"checks": results, "summary": line}
