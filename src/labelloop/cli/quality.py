"""Quality commands: `quality` (label errors, duplicates, outliers put up for review) and `spot-check`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from labelloop.cli.common import DataDir, JsonFlag, err, open_workspace, out, print_json


def _project(workspace, name: str):
    from labelloop.services.projects import get_project

    with workspace.session() as session:
        return get_project(session, name)


def quality(
    name: str,
    kind: Optional[str] = typer.Option(None, "--kind", help="label, duplicate, outlier (default: every check that applies) or spot_check (list only)."),
    top: int = typer.Option(10, "--top", help="Suspects to show (--json lists every one above the cut)."),
    force: bool = typer.Option(False, "--force", help="Score again even if nothing changed since the last run."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Find label errors, duplicates and outliers; show counts and the top suspects to review."""
    from labelloop.cli.progress import DelayedProgress
    from labelloop.services.quality.runs import report, run_checks

    workspace = open_workspace(data_dir)
    project = _project(workspace, name)
    with DelayedProgress(err, enabled=not as_json) as bar:
        runs = {} if kind == "spot_check" else run_checks(workspace, project, kind, force=force, progress=bar)
    found = report(workspace, project, kind, top=top, every=as_json)
    if as_json:
        print_json({**found, "runs": runs})
        return
    for check, result in runs.items():
        if "skipped" in result:
            out.print(f"{check}: skipped: {result['skipped']}", highlight=False)
        else:
            what = "re-scored" if result.get("rescored") else "unchanged since the last run"
            open_now = sum(v for s, v in found["counts"].get(check, {}).items() if s == "open")
            out.print(f"{check}: {open_now} open suspect(s) ({what})", highlight=False)
    if not found["suspects"]:
        out.print("nothing to review")
        return
    table = Table("suspect", "item", "file", "kind", "score", "group", "reason")
    for s in found["suspects"]:
        table.add_row(str(s["id"]), str(s["item_id"]), s["file"] or "", s["kind"] if s["kind"] != "outlier" else
                      s["check"], f"{s['score']:.3f}", s["group"] or "", s["reason"])
    out.print(table)
    if found["open"] > len(found["suspects"]):
        out.print(f"… {found['open'] - len(found['suspects'])} more (--top, --json)")


def spot_check(
    name: str,
    width: float = typer.Option(0.03, "--width", help="Half-width of the precision interval (0.03: ± 3 points)."),
    confidence: float = typer.Option(0.9, "--confidence", help="Confidence of the interval."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the sample (default 0)."),
    report_only: bool = typer.Option(False, "--report", help="Only report the reviewed spot-checks; draw nothing."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Draw a seeded sample of auto-accepted pre-labels to review, and report their precision (and raise a
    class's threshold when its interval lies below the target)."""
    from labelloop.services.quality.spot_checks import draw_spot_checks, spot_check_report

    workspace = open_workspace(data_dir)
    project = _project(workspace, name)
    drawn = None if report_only else draw_spot_checks(workspace, project, width=width, confidence=confidence,
                                                      seed=seed)
    result = spot_check_report(workspace, project)
    if as_json:
        print_json({"drawn": drawn, **result})
        return
    if drawn is not None:
        sizes = ", ".join(f"{c} {v['sample']} of {v['auto_accepted']}" for c, v in drawn["classes"].items())
        out.print(f"spot-checks of {drawn['model']} ({'drawn now' if drawn['drawn_now'] else 'drawn before'}, "
                  f"± {drawn['width']} at {drawn['confidence']:.0%}): {sizes}; review them in the Suspects tab or "
                  f"`labelloop quality {name} --kind spot_check`", highlight=False)
    for line in result["messages"]:
        out.print(line, highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(quality)
    app.command("spot-check")(spot_check)
