"""`labelloop simulate`: measure the expert time labelloop saves on a project whose true labels are known."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from labelloop.cli.common import DataDir, JsonFlag, err, open_workspace, out, parse_pairs, print_json


def simulate(
    name: str,
    truth: Path = typer.Option(..., "--truth", help="The items' true labels (matched by file name or content hash)."),
    format: str = typer.Option("auto", "--format", help="auto|folders|csv|coco|voc|yolo|masks|instances"),
    model: Optional[str] = typer.Option(None, "--model", help="Model kind (default: the task's: classifier, ...)."),
    strategy: Optional[str] = typer.Option(None, "--strategy",
                                           help="random|least-confidence|margin|entropy|k-center|hybrid (default: "
                                                "the project's sampling setting, else random)."),
    compare: Optional[str] = typer.Option(None, "--compare", help="More strategies to run, e.g. random,margin."),
    start: int = typer.Option(20, "--start", help="Items labelled from scratch (seeded random) before the first model."),
    batch: int = typer.Option(20, "--batch", help="Items taken from the queue per round."),
    until_done: bool = typer.Option(False, "--until-done",
                                    help="Run until every item is labelled by hand or auto-accepted (the default)."),
    rounds: Optional[int] = typer.Option(None, "--rounds", help="Stop after N rounds."),
    round_budget: str = typer.Option("2m", "--round-budget",
                                     help="Training time per round: passed to model kinds with a time budget "
                                          "(unet, detector); checked and reported for the others."),
    target_precision: Optional[float] = typer.Option(None, "--target-precision",
                                                     help="Auto-acceptance target (default: the project's)."),
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated seeds, e.g. 0,1,2."),
    cost_model: str = typer.Option("default", "--cost-model", help="default, or a JSON/YAML file of seconds per action."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Write simulation.json and simulation.png here."),
    grid: Optional[int] = typer.Option(None, "--grid", help="Label on grid pages of 4, 6 or 9 images that the "
                                       "classifier gives one class (its suggestions shown; classification only)."),
    from_previous: bool = typer.Option(False, "--from-previous",
                                       help="Each round fine-tunes the round before's model (as train --from) "
                                            "instead of training anew: the training adds up over the rounds "
                                            "(detector)."),
    extra: list[str] = typer.Option([], "--set", help="A model parameter for every round's training as key=value, "
                                                      "e.g. min_size=320 (repeatable)."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Simulate an annotator labelling the project with labelloop (on a scratch copy: the project is unchanged),
    and report the human seconds saved against labelling every item by hand, per sampling strategy."""
    from labelloop.cli.progress import DelayedProgress
    from labelloop.services.assist.simulation import plan_simulation, run_simulation

    workspace = open_workspace(data_dir)
    plan = plan_simulation(workspace, name, truth, format=format, model=model, strategy=strategy, compare=compare,
                           start=start, batch=batch, until_done=until_done, rounds=rounds, round_budget=round_budget,
                           target_precision=target_precision, seeds=seeds, cost_model=cost_model, out=out_dir,
                           model_params=parse_pairs(extra), grid=grid,
                           from_previous=from_previous)
    with DelayedProgress(err, enabled=not as_json) as bar:
        result = run_simulation(workspace, plan, progress=bar)
    if as_json:
        print_json(result)
        return
    report = result["truth"]
    out.print(f"{name}: {report['matched']} items with a truth ({report['items_without_truth']} items without one, "
              f"{report['truth_without_item']} truth entries without an item); cost model {plan.costs.name}",
              highlight=False)
    goal = result["summary"]["quality_goal"]
    table = Table("strategy", "seeds", "human time", "by hand", "effort ratio", f"quality ({plan.task.quality})",
                  f"time to {goal:g}", "auto-accepted (wrong)")
    for strategy_name, figures in result["summary"]["strategies"].items():
        def mean(key, fmt="{:.3g}"):
            value = figures.get(key)
            return "-" if value is None else fmt.format(value["mean"])
        table.add_row(strategy_name, str(figures["seeds"]), mean("human_seconds", "{:.0f} s"),
                      mean("scratch_seconds", "{:.0f} s"), mean("effort_ratio", "{:.2f}x"), mean("dataset_quality"),
                      mean("seconds_to_goal", "{:.0f} s"),
                      f"{mean('auto_accepted', '{:.0f}')} ({mean('auto_accepted_wrong', '{:.0f}')})")
    out.print(table)
    for strategy_name, versus in result["summary"]["versus_random"].items():
        if versus["compared"]:
            out.print(f"{strategy_name} vs random: {versus['seconds_saved_vs_random']:+.0f} s to quality {goal:g} "
                      f"({'beyond' if versus['beyond_seed_spread'] else 'within'} the spread over seeds)",
                      highlight=False)
        else:
            out.print(f"{strategy_name} vs random: {versus['reason']}", highlight=False)
    for kind, path in result.get("files", {}).items():
        out.print(f"{kind}: {path}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(simulate)
