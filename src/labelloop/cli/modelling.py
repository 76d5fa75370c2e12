"""Model commands: train, predict, models, dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from labelloop.cli.common import DataDir, JsonFlag, open_workspace, out, print_json, run_job_here


def _project(workspace, name: str):
    from labelloop.services.projects import get_project

    with workspace.session() as session:
        return get_project(session, name)


def train(
    name: str,
    model: str = typer.Option(..., "--model", help="Model kind, e.g. pixel-rf."),
    scales: Optional[str] = typer.Option(None, "--scales", help="pixel-rf: Gaussian scales, e.g. 0.7,1,1.6,3.5,5,10"),
    trees: int = typer.Option(100, "--trees", help="pixel-rf: number of trees."),
    autocontext: bool = typer.Option(False, "--autocontext", help="pixel-rf: add a second, auto-context stage."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Train a model on the project's labels; prints the new version and its figures."""
    from labelloop.errors import InvalidInput

    workspace = open_workspace(data_dir)
    project = _project(workspace, name)
    params = {"project": name, "model": model, "trees": trees, "autocontext": autocontext, "seed": seed}
    if scales:
        try:
            params["scales"] = [float(s) for s in scales.split(",") if s.strip()]
        except ValueError:
            raise InvalidInput(f"--scales {scales!r}: give numbers separated by commas, e.g. 0.7,1,1.6") from None
    job = run_job_here(workspace, "train", params, project.id, quiet=as_json)
    result = job.result
    if as_json:
        print_json({"job": job.id, **result})
        return
    metrics = ", ".join(f"{k}={v}" for k, v in result["metrics"].items() if not isinstance(v, dict))
    out.print(f"trained {result['ref']} on {result['training_items']} items: {metrics}", highlight=False)


def predict(
    name: str,
    model: str = typer.Option(..., "--model", help="Model kind and optional version, e.g. pixel-rf or pixel-rf:3."),
    split: Optional[str] = typer.Option(None, "--split", help="Predict the items of this split."),
    everything: bool = typer.Option(False, "--all", help="Predict every item (default: items without annotations)."),
    instances: Optional[str] = typer.Option(None, "--instances", help="watershed: split touching objects."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Run a trained model over items; results are stored as Predictions for review."""
    from labelloop.errors import InvalidInput

    if instances not in (None, "watershed"):
        raise InvalidInput(f"--instances {instances!r}: the only method is 'watershed'")
    workspace = open_workspace(data_dir)
    project = _project(workspace, name)
    params = {"project": name, "model": model, "split": split, "all": everything, "instances": instances}
    job = run_job_here(workspace, "predict", params, project.id, quiet=as_json)
    if as_json:
        print_json({"job": job.id, **job.result})
    else:
        out.print(f"{job.result['model']} predicted {job.result['predictions']} items (review them, or export with "
                  f"--include predictions)")


def models(name: str, data_dir: Optional[Path] = DataDir, as_json: bool = JsonFlag) -> None:
    """A project's trained models: versions, parameters and figures."""
    from labelloop.services.models import list_models

    workspace = open_workspace(data_dir)
    found = list_models(workspace, _project(workspace, name))
    if as_json:
        print_json([m.to_dict() for m in found])
        return
    table = Table("model", "status", "items", "metrics", "created")
    for m in found:
        metrics = ", ".join(f"{k}={v}" for k, v in m.metrics.items() if not isinstance(v, dict))
        table.add_row(m.ref, m.status, str(len(m.item_ids)), metrics, m.created_at.strftime("%Y-%m-%d %H:%M"))
    out.print(table if found else f"no models yet: `labelloop train {name} --model pixel-rf`")


def dataset(
    name: str,
    out_dir: Path = typer.Argument(..., metavar="OUT"),
    patch: int = typer.Option(256, "--patch", help="Patch size in pixels."),
    count: int = typer.Option(..., "--count", help="Number of image/mask pairs to write."),
    augment: str = typer.Option("default", "--augment", help="default or none"),
    seed: int = typer.Option(0, "--seed", help="Same seed, same bytes."),
    source: str = typer.Option("accepted", "--source", help="accepted (annotations) or predictions"),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Cut masks and images into patches and augment them into a deep-learning training set."""
    workspace = open_workspace(data_dir)
    project = _project(workspace, name)
    params = {"project": name, "out": str(out_dir.resolve()), "patch": patch, "count": count, "augment": augment,
              "seed": seed, "source": source}
    job = run_job_here(workspace, "dataset", params, project.id, quiet=as_json)
    if as_json:
        print_json({"job": job.id, **job.result})
    else:
        out.print(f"wrote {job.result['pairs']} pairs ({job.result['empty']} empty) from {job.result['sources']} "
                  f"items to {job.result['out']}")


def register(app: typer.Typer) -> None:
    for command in (train, predict, models, dataset):
        app.command()(command)
