"""`unet`: a U-Net with an ImageNet-pretrained encoder (EfficientNet-Lite0 by default), trained on masks.

The version is reserved when training starts; every epoch's evaluation replaces its checkpoint, so stopping
(Ctrl-C, `labelloop jobs cancel`, the API) leaves the last evaluated weights as a usable Model, and
`--resume VERSION` continues that run as a new version. Torch is imported only inside the methods."""

from __future__ import annotations

from typing import Any

import numpy as np

from labelloop import media
from labelloop.domain import Mask, Polygon, ProjectKind, shape_to_dict
from labelloop.errors import InvalidInput
from labelloop.geometry import rle
from labelloop.services.assist.model_kinds import register_model_kind
from labelloop.services.assist.model_kinds.checkpoints import end_run, resumable, run_keeping_checkpoints
from labelloop.services.assist.model_kinds.options import number as _number
from labelloop.services.assist.model_kinds.options import parse_duration
from labelloop.services.assist.models import ModelInfo, read_checkpoint, start_model, update_model
from labelloop.services.data.project_data import background_index, item_rows, labelled_items
from labelloop.services.assist.predictions import save_predictions
from labelloop.store.tables import PredictionRow

# Settings a user may give with --set key=value, and how to read them.
_NUMBERS = {"focal_weight": float, "dice_weight": float, "val_fraction": float, "foreground_bias": float,
            "weight_decay": float, "patience": int, "steps_per_epoch": int, "max_tile": int, "overlap": int,
            "tta": int, "threads": int, "search_patches": int, "search_fraction": float, "ema_decay": float,
            "final_fit": float}


def settings(params: dict[str, Any]) -> dict[str, Any]:
    """UNetSegmenter arguments from job params (CLI options and --set pairs), checked."""
    out: dict[str, Any] = {"seed": int(params.get("seed", 0))}
    if params.get("encoder"):
        out["encoder"] = str(params["encoder"])
    if params.get("weights"):
        out["weights"] = str(params["weights"])
    if "pretrained" in params:
        out["pretrained"] = str(params["pretrained"]).lower() not in ("false", "0", "no", "none")
    if params.get("epochs") is not None:
        out["epochs"] = _number("--epochs", params["epochs"], int)
        if out["epochs"] < 1:
            raise InvalidInput(f"--epochs {params['epochs']!r}: train for at least 1 epoch")
    if params.get("time_budget") is not None:
        out["time_budget"] = parse_duration(params["time_budget"])
    for name, option in (("lr", "--lr"), ("batch_size", "--batch-size")):
        value = params.get(name)
        if value is None:
            continue
        if str(value).lower() == "auto":
            out[name] = "auto"
        else:
            out[name] = _number(option, value, float if name == "lr" else int)
            if out[name] <= 0:
                raise InvalidInput(f"{option} {value!r}: must be more than 0 (or auto)")
    if params.get("patch") is not None:
        out["patch"] = _number("--patch", params["patch"], int)
    if params.get("loss"):
        out["loss"] = str(params["loss"])
    if params.get("decoder_channels"):
        out["decoder_channels"] = tuple(_number("decoder_channels", c, int) for c in params["decoder_channels"])
    if params.get("device"):
        out["device"] = str(params["device"])
    if params.get("precision"):
        out["precision"] = str(params["precision"]).lower()
        if out["precision"] not in ("auto", "bf16", "fp32"):
            raise InvalidInput(f"precision {params['precision']!r}: give auto, bf16 or fp32")
    if params.get("val_split"):
        out["val_split"] = str(params["val_split"]).lower()
        if out["val_split"] not in ("auto", "items", "regions"):
            raise InvalidInput(f"val_split {params['val_split']!r}: give auto, items (whole held-out images) or "
                               "regions (a held-out band of every image)")
    for name, kind in _NUMBERS.items():
        if params.get(name) is not None:
            out[name] = _number(name, params[name], kind)
    return out


def _class_values(project, background: int) -> list[int]:
    """Network output j <-> project class value: 0 (background) first, then every other class."""
    return [0] + [c.index for c in project.classes if c.index != background]


def _training_pairs(workspace, project, rows, class_values: list[int], ctx) -> tuple[list, list]:
    """Images and network-index masks; a mask whose size differs from its image is refused by name."""
    from labelloop.services.assist.datasets import _index_mask

    class_index = {c.name: c.index for c in project.classes}
    background = background_index(project)
    lookup = np.zeros(max(class_values + [c.index for c in project.classes]) + 1, np.uint8)
    for network_index, value in enumerate(class_values):
        lookup[value] = network_index
    images, masks = [], []
    for n, (item, shapes) in enumerate(rows, 1):
        for shape in shapes:
            if isinstance(shape, Mask) and tuple(shape.size) != (item.height, item.width):
                raise InvalidInput(f"item {item.id} ({item.source}): its {shape.label!r} mask is "
                                   f"{shape.size[1]}x{shape.size[0]} but the image is {item.width}x{item.height}; "
                                   f"fix or re-import that mask")
        image = media.read(workspace.blobs.local_path(item.blob_sha256), item.page, name=item.source)
        if image.shape[:2] != (item.height, item.width):
            raise InvalidInput(f"item {item.id} ({item.source}): the image decodes as {image.shape[1]}x{image.shape[0]}, "
                               f"not the recorded {item.width}x{item.height}")
        images.append(image)
        masks.append(lookup[_index_mask(shapes, class_index, background, item.height, item.width)])
        ctx.progress(n, len(rows), "reading masks and images")
    return images, masks


@register_model_kind
class UNet:
    name = "unet"
    description = "U-Net with an ImageNet-pretrained encoder (EfficientNet-Lite0; any timm encoder with --weights)"
    project_kinds = (ProjectKind.semantic, ProjectKind.instance)
    figures = (("val_iou", "IoU (best held-out epoch)", "number"), ("validation", "measured on", "text"),
               ("best_epoch", "best epoch", "count"), ("epochs", "epochs", "count"),
               ("training_seconds", "training time", "seconds"), ("stopped", "stopped by", "text"))
    card_note = ("foreground IoU of the best epoch on what was held out: a band of every image (under 20 images; a "
                 "final fit on whole images follows, and its last weights predict), else whole validation items, "
                 "or the training items when none are held out")

    def train(self, workspace, project, params: dict[str, Any], ctx) -> ModelInfo:
        if params.get("resume"):
            resumed = self._resumable(workspace, project, params["resume"])
            segmenter, class_values, rows = self._resumed_run(workspace, project, resumed, params)
        else:
            resumed = None
            segmenter, class_values, rows = self._new_run(workspace, project, params)
        if not rows:
            raise InvalidInput(f"project {project.name!r} has no masks or polygons to train a U-Net on; import "
                               f"some with `labelloop import {project.name} DIR --format masks` (or coco)")
        images, masks = _training_pairs(workspace, project, rows, class_values, ctx)
        if not any(m.any() for m in masks):
            raise InvalidInput(f"the masks of project {project.name!r} are all background: a U-Net needs some "
                               f"foreground to learn from")
        names = {c.index: c.name for c in project.classes}
        stored = {**segmenter.get_params(), "class_values": class_values,
                  "class_names": [names.get(v, "background") for v in class_values],
                  "resumed_from": resumed.ref if resumed else None, "job_id": ctx.job_id}
        model = start_model(workspace, project, self.name, params=stored, item_ids=[item.id for item, _ in rows])

        def checkpoint(seg) -> None:
            nonlocal model
            model = update_model(workspace, model, checkpoint=seg.checkpoint(), metrics=seg.summary_,
                                 params={**stored, "search": seg.search_}, curves=dict(seg.history_))

        def run() -> None:
            if resumed:
                segmenter.resume(images, masks, on_progress=ctx.progress, on_checkpoint=checkpoint)
            else:
                segmenter.fit(images, masks, on_progress=ctx.progress, on_checkpoint=checkpoint)

        return run_keeping_checkpoints(run, lambda stopped, status: self._keep(workspace, model, stopped, status),
                                       lambda: segmenter.summary_["stopped"], "epoch")

    def _new_run(self, workspace, project, params: dict[str, Any]):
        """A segmenter from the job's settings, with the encoder name and weights file checked before any image is
        read or any version reserved; the network index <-> class value table; the labelled items."""
        from labelloop.ml.unet import UNetSegmenter, build_network

        class_values = _class_values(project, background_index(project))
        try:
            segmenter = UNetSegmenter(n_classes=len(class_values), **settings(params)).validate_params()
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        build_network(segmenter.encoder, 1, weights=segmenter.weights, pretrained=segmenter.pretrained,
                      decoder_channels=segmenter.decoder_channels)
        return segmenter, class_values, labelled_items(workspace, project, ("mask", "polygon"))

    def _resumed_run(self, workspace, project, resumed: ModelInfo, params: dict[str, Any]):
        """The checkpoint's segmenter with new totals (--epochs / --time-budget), its class table and its items in
        the order it trained on them (the item split and sampling depend on that order)."""
        from labelloop.ml.unet import UNetSegmenter

        segmenter = UNetSegmenter.from_checkpoint(read_checkpoint(workspace, resumed), device=params.get("device"))
        wanted = settings(params)
        try:
            segmenter.plan_resume(epochs=wanted.get("epochs"), time_budget=wanted.get("time_budget"))
        except ValueError as exc:
            raise InvalidInput(f"--resume {params['resume']}: {exc}") from None
        order = {item_id: n for n, item_id in enumerate(resumed.item_ids)}
        rows = sorted((r for r in labelled_items(workspace, project, ("mask", "polygon")) if r[0].id in order),
                      key=lambda r: order[r[0].id])
        if len(rows) != len(order):
            raise InvalidInput(f"{resumed.ref} trained on {len(order)} items, but only {len(rows)} of them still "
                               f"have masks; train a new model instead of resuming")
        return segmenter, list(resumed.params["class_values"]), rows

    def _resumable(self, workspace, project, version) -> ModelInfo:
        return resumable(workspace, project, self.name, version, "epoch")

    def _keep(self, workspace, model: ModelInfo, stopped: str, status: str = "ready") -> ModelInfo | None:
        from labelloop.ml.unet.curves import curves_png

        return end_run(workspace, model, stopped, status, lambda curves, title: curves_png(curves, title=title))

    def predict(self, workspace, project, model, item_ids: list[int], params: dict[str, Any], ctx) -> dict[str, Any]:
        from labelloop.ml.postprocess import clean_classes
        from labelloop.ml.unet import UNetSegmenter
        from labelloop.ml.watershed import instances_to_polygons, split_instances

        segmenter = UNetSegmenter.from_checkpoint(read_checkpoint(workspace, model), device=params.get("device"))
        class_values = np.asarray(model.params["class_values"])
        names = {c.index: c.name for c in project.classes}
        tta = _number("tta", params["tta"], int) if params.get("tta") is not None else None
        min_size = _number("min_size", params.get("min_size", 20), int)
        max_hole = _number("max_hole", params.get("max_hole", 0), int)
        if min(min_size, max_hole) < 0:
            raise InvalidInput(f"min_size and max_hole are pixel counts (0 turns them off), got {min_size}, {max_hole}")
        written = 0
        for n, item in enumerate(item_rows(workspace, item_ids), 1):
            image = media.read(workspace.blobs.local_path(item.blob_sha256), item.page, name=item.source)
            proba = segmenter.predict_proba(image, tta=tta)
            best = clean_classes(proba.argmax(axis=2), min_size=min_size, max_hole=max_hole)
            confidence = proba.max(axis=2)
            shapes: list = []
            for index in range(1, proba.shape[2]):
                region = best == index
                value = int(class_values[index])
                if not region.any() or value not in names:
                    continue
                if params.get("instances") == "watershed":
                    labels = split_instances(region, probability=proba[:, :, index], min_size=min_size,
                                             min_distance=int(params.get("min_distance", 5)))
                    for label_id, points in instances_to_polygons(labels):
                        if len(points) >= 3:
                            score = float(proba[:, :, index][labels == label_id].mean())
                            shapes.append(Polygon(names[value], (tuple(points),), score=round(score, 4),
                                                  attributes={"instance": int(label_id)}))
                else:
                    size, counts = rle.encode(region)
                    shapes.append(Mask(names[value], size, counts, score=round(float(confidence[region].mean()), 4)))
            with workspace.session() as session:
                save_predictions(session, [PredictionRow(
                    item_id=item.id, model_id=model.id, model_version=model.ref,
                    shapes=[shape_to_dict(s) for s in shapes], score=round(float(confidence.mean()), 4),
                    review_state="pending")])
            written += 1
            ctx.progress(n, len(item_ids), "segmenting")
        return {"model": model.ref, "predictions": written}
