"""Model commands: train, predict, models, dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from labelloop.cli.common import DataDir, JsonFlag, open_workspace, out, parse_pairs, print_json, run_job_here


def _project(workspace, name: str):
    from labelloop.services.projects import get_project

    with workspace.session() as session:
        return get_project(session, name)


def _given(**options) -> dict[str, object]:
    return {k: v for k, v in options.items() if v is not None}


def train(
    name: str,
    model: str = typer.Option(..., "--model", help="Model kind: pixel-rf, unet, classifier, detector or micro."),
    scales: Optional[str] = typer.Option(None, "--scales", help="pixel-rf: Gaussian scales, e.g. 0.7,1,1.6,3.5,5,10"),
    trees: Optional[int] = typer.Option(None, "--trees", help="pixel-rf: number of trees (default 20: on Lucchi 10, 20 and 100 scored the same IoU)."),
    autocontext: Optional[bool] = typer.Option(None, "--autocontext/--no-autocontext", help="pixel-rf: a second, auto-context stage (the default: +0.04 IoU on Lucchi, training about 2x slower); --no-autocontext for one forest."),
    intensity: Optional[str] = typer.Option(None, "--intensity", help="pixel-rf: auto (default: percentile when the project's images differ in brightness, else dtype), dtype (the dtype's range to [0, 1]) or percentile (each image's 1st-99.8th percentile; for images whose exposure differs, e.g. fluorescence)."),
    smoothing: Optional[float] = typer.Option(None, "--smoothing", help="pixel-rf: Gaussian sigma (px) over the probability map before the argmax; 0 turns it off."),
    encoder: Optional[str] = typer.Option(None, "--encoder", help="unet: encoder name (default tu-tf_efficientnet_lite0)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="unet/classifier: a local pretrained weights file."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="unet: number of epochs."),
    time_budget: Optional[str] = typer.Option(None, "--time-budget", help="unet: stop after this long, e.g. 20m, 90s, 1h."),
    lr: Optional[str] = typer.Option(None, "--lr", help="unet: learning rate, or auto for a search."),
    batch_size: Optional[str] = typer.Option(None, "--batch-size", help="unet: batch size, or auto for a search."),
    patch: Optional[int] = typer.Option(None, "--patch", help="unet: training patch size in pixels."),
    loss: Optional[str] = typer.Option(None, "--loss", help="unet: loss, e.g. focal+dice."),
    resume: Optional[str] = typer.Option(None, "--resume", help="unet: continue training from this model version."),
    head: Optional[str] = typer.Option(None, "--head", help="classifier: logreg (default, seconds) or finetune "
                                        "(Lite2's last stage trained 6 times for its calibration: minutes)."),
    backbone: Optional[str] = typer.Option(None, "--backbone", help="detector: timm backbone (default tf_efficientnet_lite0)."),
    gamma: Optional[float] = typer.Option(None, "--gamma", help="detector: learning-rate factor at each gamma epoch (0.1)."),
    gamma_epochs: Optional[str] = typer.Option(None, "--gamma-epochs", help="detector: epochs where the rate drops, e.g. 20,27 (default 70%/90% of the run)."),
    rois_per_image: Optional[int] = typer.Option(None, "--rois-per-image", help="detector: sampled RoIs per image (128)."),
    eval_period: Optional[int] = typer.Option(None, "--eval-period", help="detector: evaluate and checkpoint every N epochs (2)."),
    test_fraction: Optional[float] = typer.Option(None, "--test-fraction", help="detector: share of labelled images held out for testing (0.2)."),
    test_split: Optional[str] = typer.Option(None, "--test-split", help="detector: hold out the labelled images of this split."),
    test_items: Optional[str] = typer.Option(None, "--test-items", help="detector: hold out these item ids, e.g. 4,9,12."),
    min_size: Optional[int] = typer.Option(None, "--min-size", help="detector: the shorter image side the network sees (416)."),
    start_from: Optional[str] = typer.Option(None, "--from", help="detector: fine-tune this version on today's labels."),
    class_name: Optional[str] = typer.Option(None, "--class", help="micro: train the micro-model of this class."),
    all_classes: bool = typer.Option(False, "--all-classes", help="micro: every class with enough examples (one line each)."),
    base: Optional[str] = typer.Option(None, "--base", help="micro: the base model: classifier (classification, multi-label); detector (detection: a one-class detector per class); shared-detector (detection: one detector for every class, a small head per class; the chain runs it once per image); unet or pixel-rf (semantic; default unet where there are masks, pixel-rf for scribbles only)."),
    min_examples: Optional[int] = typer.Option(None, "--min-examples", help="micro: labelled examples a class needs (5 items; 5 images with a box of it for detector; 2 images for unet and pixel-rf)."),
    pseudo: bool = typer.Option(False, "--pseudo-labels", help="micro: the chain's pending pre-labels join training where the held-out score says they help."),
    extra: list[str] = typer.Option([], "--set", help="Any other model parameter as key=value (repeatable)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Train a model on the project's labels; prints the new version and its figures."""
    from labelloop.errors import InvalidInput

    workspace = open_workspace(data_dir)
    project = _project(workspace, name)
    params = {"project": name, "model": model, "seed": seed, **parse_pairs(extra),
              **_given(trees=trees, encoder=encoder, weights=str(weights.resolve()) if weights else None,
                       epochs=epochs, time_budget=time_budget, lr=lr, batch_size=batch_size, patch=patch, loss=loss,
                       resume=resume, head=head, backbone=backbone, gamma=gamma, gamma_epochs=gamma_epochs,
                       rois_per_image=rois_per_image, eval_period=eval_period, test_fraction=test_fraction,
                       test_split=test_split, test_items=test_items, min_size=min_size, **{"from": start_from})}
    if autocontext is not None:
        params["autocontext"] = autocontext
    if intensity is not None:
        from labelloop.ml.features import INTENSITY_SCALINGS

        if intensity not in ("auto", *INTENSITY_SCALINGS):
            raise InvalidInput(f"--intensity {intensity!r}: choose one of auto, {', '.join(INTENSITY_SCALINGS)}")
        params["intensity"] = intensity
    if smoothing is not None:
        if smoothing < 0:
            raise InvalidInput(f"--smoothing {smoothing}: give a sigma in pixels >= 0 (0 turns smoothing off)")
        params["smoothing"] = smoothing
    if scales:
        try:
            params["scales"] = [float(s) for s in scales.split(",") if s.strip()]
        except ValueError:
            raise InvalidInput(f"--scales {scales!r}: give numbers separated by commas, e.g. 0.7,1,1.6") from None
    if model == "micro":
        from labelloop.cli.micro import train_micro

        params.update(_given(base=base, min_examples=min_examples, all_classes=all_classes or None,
                             pseudo_labels=pseudo or None, **{"class": class_name}))
        return train_micro(workspace, project, params, as_json)
    job = run_job_here(workspace, "train", params, project.id, quiet=as_json)
    result = job.result
    if as_json:
        print_json({"job": job.id, **result})
        return
    metrics = ", ".join(f"{k}={v}" for k, v in result["metrics"].items() if not isinstance(v, (dict, list)))
    out.print(f"trained {result['ref']} on {result['training_items']} items: {metrics}", highlight=False)


def predict(
    name: str,
    model: Optional[str] = typer.Option(None, "--model", help="Model kind and optional version, e.g. pixel-rf or pixel-rf:3."),
    chain: bool = typer.Option(False, "--chain", help="Run the project's chain of micro-models (`labelloop chain`)."),
    unlabelled: bool = typer.Option(False, "--unlabelled", help="Predict the items without annotations (the default)."),
    split: Optional[str] = typer.Option(None, "--split", help="Predict the items of this split."),
    everything: bool = typer.Option(False, "--all", help="Predict every item (default: items without annotations)."),
    items: Optional[str] = typer.Option(None, "--items", help="Predict these item ids, e.g. 3,5,9 (smart prediction)."),
    instances: Optional[str] = typer.Option(None, "--instances", help="watershed: split touching objects."),
    target_precision: Optional[float] = typer.Option(None, "--target-precision",
                                                     help="classifier: pre-label only above the calibrated threshold."),
    extra: list[str] = typer.Option([], "--set", help="Any other parameter as key=value, e.g. min_size=30 (repeatable)."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Run a trained model over items; results are stored as Predictions for review."""
    from labelloop.errors import InvalidInput

    if instances not in (None, "watershed"):
        raise InvalidInput(f"--instances {instances!r}: the only method is 'watershed'")
    if unlabelled and (everything or items or split):
        raise InvalidInput("--unlabelled predicts the items without annotations; leave out --all, --items and --split")
    if model is None and not chain:
        raise InvalidInput("give --model KIND[:VERSION], or --chain for the project's chain of micro-models")
    workspace = open_workspace(data_dir)
    project = _project(workspace, name)
    params = {"project": name, "model": model, "split": split, "all": everything, "instances": instances,
              **parse_pairs(extra), **_given(target_precision=target_precision, items=items)}
    if chain or (model or "").startswith("micro"):
        from labelloop.cli.micro import predict_chain

        if model and not model.startswith("micro:"):
            raise InvalidInput(f"--model {model!r}: a micro-model is micro:CLASS[:VERSION]; or use --chain")
        if model:
            params["chain"] = [model]
        return predict_chain(workspace, project, params, as_json)
    job = run_job_here(workspace, "predict", params, project.id, quiet=as_json)
    if as_json:
        print_json({"job": job.id, **job.result})
    else:
        out.print(f"{job.result['model']} predicted {job.result['predictions']} items (review them, or export with "
                  f"--include predictions)")


def models(name: str, data_dir: Optional[Path] = DataDir, as_json: bool = JsonFlag) -> None:
    """A project's trained models: versions, parameters and figures."""
    from labelloop.services.assist.models import curves_png_path, list_models

    workspace = open_workspace(data_dir)
    found = list_models(workspace, _project(workspace, name))
    curves = {m.id: curves_png_path(workspace, m) for m in found}
    if as_json:
        print_json([{**m.to_dict(), "curves_png": str(curves[m.id]) if curves[m.id] else None} for m in found])
        return
    table = Table("model", "status", "items", "metrics", "curves PNG", "created")
    for m in found:
        metrics = ", ".join(f"{k}={v}" for k, v in m.metrics.items() if not isinstance(v, (dict, list)))
        table.add_row(m.ref, m.status, str(len(m.item_ids)), metrics, str(curves[m.id] or "-"),
                      m.created_at.strftime("%Y-%m-%d %H:%M"))
    out.print(table if found else f"no models yet: `labelloop train {name} --model pixel-rf`")
    from labelloop.cli.micro import micro_state, state_table

    state = micro_state(workspace, _project(workspace, name))
    if state is not None:
        out.print(state_table(state))


def dataset(
    name: str,
    out_dir: Path = typer.Argument(..., metavar="OUT"),
    patch: int = typer.Option(256, "--patch", help="Patch size in pixels."),
    count: int = typer.Option(..., "--count", help="Number of image/mask pairs to write."),
    augment: str = typer.Option("default", "--augment", help="default or none"),
    seed: int = typer.Option(0, "--seed", help="Same seed, same bytes."),
    source: str = typer.Option("accepted", "--source", help="accepted (annotations) or predictions"),
    workers: Optional[int] = typer.Option(None, "--workers", help="Processes writing pairs (default: CPU cores, at most 4)."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Cut masks and images into patches and augment them into a deep-learning training set."""
    workspace = open_workspace(data_dir)
    project = _project(workspace, name)
    params = {"project": name, "out": str(out_dir.resolve()), "patch": patch, "count": count, "augment": augment,
              "seed": seed, "source": source, **_given(workers=workers)}
    job = run_job_here(workspace, "dataset", params, project.id, quiet=as_json)
    if as_json:
        print_json({"job": job.id, **job.result})
    else:
        out.print(f"wrote {job.result['pairs']} pairs ({job.result['empty']} empty) from {job.result['sources']} "
                  f"items to {job.result['out']}")


def register(app: typer.Typer) -> None:
    from labelloop.cli.micro import register as register_micro

    for command in (train, predict, models, dataset):
        app.command()(command)
    register_micro(app)
