"""Model-assisted classification commands: embed, clusters (grid pages of similar images), calibration report."""

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


def embed(
    name: str,
    model: str = typer.Option("tf_efficientnet_lite0", "--model", help="timm model name (others need --weights)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="A local weights file for the model."),
    batch_size: int = typer.Option(16, "--batch-size", help="Images per forward pass."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Compute the embeddings of a project's items (cached: only new items are computed)."""
    workspace = open_workspace(data_dir)
    project = _project(workspace, name)
    params = {"project": name, "encoder": model, "batch_size": batch_size,
              "weights": str(weights.resolve()) if weights else None}
    job = run_job_here(workspace, "embed", params, project.id, quiet=as_json)
    result = job.result
    if as_json:
        print_json({"job": job.id, **result})
        return
    speed = f" at {result['images_per_second']} images/s" if result["images_per_second"] else ""
    out.print(f"{result['computed']} embeddings computed{speed}, {result['cached']} already cached ({result['encoder']})",
              highlight=False)


def _k(value: str) -> int | None:
    from labelloop.errors import InvalidInput

    if value == "auto":
        return None
    if not value.isdigit():
        raise InvalidInput(f"--k {value!r}: give a number of clusters or auto")
    return int(value)


def clusters(
    name: str,
    k: str = typer.Option("auto", "--k", help="Number of k-means clusters, or auto (best silhouette)."),
    method: str = typer.Option("kmeans", "--method", help="kmeans or hdbscan."),
    page: Optional[int] = typer.Option(None, "--page", help="Show the next page of similar unlabelled images: 4, 6 or 9."),
    model: str = typer.Option("tf_efficientnet_lite0", "--model", help="The encoder whose embeddings to use."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="A local weights file for the model."),
    seed: int = typer.Option(0, "--seed", help="Random seed of k-means."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Group similar images (embedding them first where needed); --page N gives the next grid to label."""
    from labelloop.services.assist.clusters import cluster_project, next_similar_page

    workspace = open_workspace(data_dir)
    project = _project(workspace, name)
    weights_path = str(weights.resolve()) if weights else None
    run_job_here(workspace, "embed", {"project": name, "encoder": model, "weights": weights_path}, project.id,
                 quiet=as_json)
    clustering = cluster_project(workspace, project, method=method, k=_k(k), model_name=model, weights=weights_path,
                                 seed=seed)
    similar = next_similar_page(workspace, project, page, clustering=clustering) if page is not None else None
    if as_json:
        print_json({**clustering.to_dict(), **({"page": similar.to_dict() if similar else None} if page else {})})
        return
    silhouette = f", silhouette {clustering.silhouette}" if clustering.silhouette is not None else ""
    out.print(f"{len(clustering.clusters)} clusters ({clustering.method}, k={clustering.k}{silhouette})")
    table = Table("cluster", "items", "unlabelled", "labels", "examples")
    for c in clustering.clusters:
        labels = ", ".join(f"{n} {v}" for n, v in list(c.labels.items())[:3])
        table.add_row("none" if c.id == -1 else str(c.id), str(c.size), str(c.unlabelled), labels,
                      " ".join(map(str, c.examples[:5])))
    out.print(table)
    if page is not None:
        if similar is None:
            out.print("every item is labelled")
        else:
            out.print(f"next page (cluster {similar.cluster}): items {' '.join(map(str, similar.item_ids))}; "
                      f"{similar.remaining_unlabelled} unlabelled items in all", highlight=False)


def calibration(
    name: str,
    model: str = typer.Option("classifier", "--model", help="classifier[:VERSION] or detector[:VERSION]"),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """A classifier's calibration report: per class threshold, held-out precision and recall, coverage."""
    from labelloop.services.assist.models import get_model

    workspace = open_workspace(data_dir)
    project = _project(workspace, name)
    found = get_model(workspace, project, model)
    metrics = found.metrics
    spot = _spot_checks(workspace, project, found)
    if as_json:
        print_json({"model": found.ref, **metrics, "spot_checks": spot})
        return
    if found.kind == "detector":
        _detector_report(found)
        return
    out.print(f"{found.ref}: {metrics['labelled_items']} labelled items, {metrics['held_out_items']} held out; target "
              f"precision {metrics['target_precision']} at {metrics['confidence']} confidence; coverage "
              f"{metrics['coverage']}", highlight=False)
    # precision / lower bound: on the held-out items above the threshold; estimated: over the unlabelled items
    # it pre-labels (the `estimate` rule's calibrated chances), with the chance that they reach the target.
    table = Table("class", "rule", "threshold", "precision", "lower bound", "estimated", "assurance", "recall",
                  "held-out", "coverage", "note")
    for cls, row in metrics["classes"].items():
        table.add_row(cls, row.get("method", "bound"), *("" if row.get(key) is None else str(row[key]) for key in
                      ("threshold", "precision", "precision_bound", "estimated_precision", "assurance", "recall",
                       "held_out", "coverage")), row["reason"])
    out.print(table)
    out.print(f"reliability plot: {metrics['reliability_plot']}", highlight=False)
    if spot:
        out.print("spot-checks of auto-accepted pre-labels (Clopper–Pearson interval):")
        for line in spot["messages"]:
            out.print(f"  {line}", highlight=False)


def _spot_checks(workspace, project, model):
    """The reviewed spot-checks of this classifier's auto-accepted pre-labels (None: none drawn)."""
    if model.kind != "classifier":
        return None
    from labelloop.services.quality.spot_checks import spot_check_report

    report = spot_check_report(workspace, project, apply=False)
    return report if report["model"] == model.ref and report["classes"] else None


def _detector_report(found) -> None:
    """A detector's pre-label thresholds, chosen on its held-out images (and out-of-fold ones, when few)."""
    metrics = found.metrics
    evidence = metrics.get("calibrated_on") or f"{metrics.get('test_items')} held-out images"
    out.print(f"{found.ref}: {metrics.get('test_items')} held-out images; target precision "
              f"{found.params.get('target_precision')}; mAP@0.5 {metrics.get('map50')}, mAP@0.5:0.95 "
              f"{metrics.get('map')}; thresholds chosen on {evidence}", highlight=False)
    table = Table("classes", "threshold", "precision", "recall", "pre-labels per image", "held-out boxes", "note")
    for name, row in metrics.get("thresholds", {}).items():
        table.add_row(name, *("" if row.get(key) is None else str(row[key]) for key in
                              ("threshold", "precision", "recall", "boxes_per_image", "boxes")), row.get("reason", ""))
    out.print(table)


def register(app: typer.Typer) -> None:
    for command in (embed, clusters, calibration):
        app.command()(command)
