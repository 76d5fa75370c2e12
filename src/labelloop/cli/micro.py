"""Micro-model commands: `chain`, and what `train --model micro`, `predict --chain` and `models` do for them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table
from rich.text import Text

from labelloop.cli.common import DataDir, JsonFlag, open_workspace, out, print_json, run_job_here


def _share(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}"


def state_table(state: dict[str, Any]) -> Table:
    """Per class: examples, the micro-model in use, ready or why not, held-out precision and recall (and pixel IoU
    for semantic projects, where coverage has no meaning)."""
    pixels = any(c.get("base") in ("pixel-rf", "unet") for c in state["classes"])
    boxes = any(c.get("base") == "detector" for c in state["classes"])
    table = Table("class", "images" if pixels or boxes else "examples", "micro-model", "versions", "in chain", "ready",
                  "held-out P", "held-out R", "held-out IoU" if pixels else "held-out AP@0.5" if boxes else "coverage",
                  "why not / note", title="micro-models")
    for c in state["classes"]:
        note = c["why_not"] or c["not_used"]
        if c["why_not"] and c["not_used"]:
            note = f"{c['why_not']}; {c['not_used']}"
        model = c["model"] or "-"
        if c.get("base") in ("pixel-rf", "unet", "detector"):
            model += f" ({c['base']})"
        # Text cells: class names are shown as they are (no markup, no :emoji: codes such as micro:bee:1)
        table.add_row(*map(Text, (c["class"], str(c["examples"]), model, str(c["versions"]),
                                  "yes" if c["in_chain"] else "", "yes" if c["ready"] else "no",
                                  _share(c["held_out_precision"]), _share(c["held_out_recall"]),
                                  _share(c.get("held_out_iou") if pixels else c.get("held_out_average_precision")
                                         if boxes else c["coverage"]), note)))
    return table


def chain(
    name: str,
    entries: list[str] = typer.Argument(..., metavar="micro:CLASS[:VERSION]...",
                                        help="The chain in order; micro:CLASS uses the class's version in use."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Set the project's chain of micro-models (run in order by `predict --chain`, merged into one pre-label)."""
    from labelloop.services.assist.micro import set_chain

    state = set_chain(open_workspace(data_dir), name, entries)
    if as_json:
        print_json(state)
        return
    out.print(f"chain of {name}: {' '.join(state['chain'])}", highlight=False, markup=False, emoji=False)
    out.print(state_table(state))


def train_micro(workspace, project, params: dict[str, Any], as_json: bool) -> None:
    """`train --model micro --class C | --all-classes`: one line per class."""
    job = run_job_here(workspace, "micro-train", params, project.id, quiet=as_json)
    if as_json:
        print_json({"job": job.id, **job.result})
        return
    for line in job.result["lines"]:
        out.print(line, highlight=False, soft_wrap=True, markup=False, emoji=False)


def predict_chain(workspace, project, params: dict[str, Any], as_json: bool) -> None:
    """`predict --chain` (or --model micro:CLASS): the chain as one job, one merged pre-label per item."""
    job = run_job_here(workspace, "chain-predict", params, project.id, quiet=as_json)
    if as_json:
        print_json({"job": job.id, **job.result})
        return
    out.print(job.result["summary"], highlight=False, soft_wrap=True, markup=False, emoji=False)


def micro_state(workspace, project) -> dict[str, Any] | None:
    from labelloop.services.assist.micro import project_micro_state

    return project_micro_state(workspace, project)


def register(app: typer.Typer) -> None:
    app.command()(chain)
