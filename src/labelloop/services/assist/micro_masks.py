"""Micro-models of semantic projects: one binary segmenter per class (the class's pixels against every other
labelled pixel) on a pixel forest (`--base pixel-rf`, scribbles or masks) or a U-Net (`--base unet`, masks),
each scored and calibrated on held-out pixels (ml.micro_masks), and the chain's per-pixel merge into one mask
pre-label per item (ml.micro.merge_masks)."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

import numpy as np

from labelloop import media
from labelloop.domain import Mask, Scribble, shape_to_dict
from labelloop.errors import InvalidInput
from labelloop.geometry import rle
from labelloop.services.assist.models import ModelInfo, save_model, update_model
from labelloop.services.data.project_data import background_index, item_rows, labelled_items

log = logging.getLogger(__name__)
MASK_BASES = ("pixel-rf", "unet")
DEFAULT_MASK_MIN_EXAMPLES = 2  # images holding the class: one trains while another is held out
SHAPES = {"pixel-rf": ("scribble", "mask"), "unet": ("mask", "polygon")}
FOREST_FOLDS = 5  # held-out images for the forest: each image left out in turn, at most this many folds
OTHER, CLASS = 1, 2  # the forest's label values: 0 is an unlabelled pixel
NO_EARLY_STOP = 1_000_000  # a U-Net micro-model's default patience (epochs without a better held-out IoU)


def mask_rows(workspace, project, base: str | None = None) -> list:
    """Labelled items a mask micro-model of `base` trains on (both bases' shapes when None)."""
    types = SHAPES[base] if base else ("scribble", "mask", "polygon")
    return labelled_items(workspace, project, shape_types=types)


def default_base(workspace, project) -> str:
    """U-Net when the project has whole masks (or polygons), else the pixel forest (scribbles)."""
    rows = labelled_items(workspace, project, shape_types=("mask", "polygon"))
    return "unet" if rows else "pixel-rf"


def foreground_classes(project) -> list[str]:
    """The classes a semantic project's micro-models are for: every class but the background."""
    background = background_index(project)
    return [c.name for c in project.classes if c.index != background]


def why_not_trainable_mask(name: str, examples: int, min_examples: int, maps=None) -> str:
    """'' when a class's mask micro-model can be trained, else the reason in words; `maps` (is-class, known)
    pairs are checked for pixels that are not the class."""
    if examples < min_examples:
        return (f"{examples} labelled image(s) hold {name!r}, fewer than --min-examples {min_examples}; "
                f"label it on {min_examples - examples} more")
    if maps is not None and not any((known & ~positive).any() for positive, known in maps):
        return f"no labelled pixel outside {name!r} to learn what it is not; scribble the background or other classes"
    return ""


def labels_signature(rows) -> str:
    """A digest of the labelled items and their shapes: a retrain with --all-classes is skipped when it is the same."""
    digest = hashlib.sha256()
    for item, shapes in sorted(rows, key=lambda r: r[0].id):
        digest.update(json.dumps([item.id, [shape_to_dict(s) for s in shapes]], sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def _binary_maps(project, rows, name: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per labelled item (is-class, known) H×W bool maps: scribbles give their own pixels; whole masks (or
    polygons) every pixel, the unmasked ones being background."""
    from labelloop.services.assist.datasets import _index_mask

    class_index = {c.name: c.index for c in project.classes}
    background = background_index(project)
    maps = []
    for item, shapes in rows:
        scribbles = [s for s in shapes if isinstance(s, Scribble)]
        if scribbles:
            positive = np.zeros((item.height, item.width), bool)
            known = np.zeros_like(positive)
            for shape in scribbles:
                pixels = rle.decode(shape)
                known |= pixels
                if shape.label == name:
                    positive |= pixels
            maps.append((positive & known, known))
        else:
            for shape in shapes:
                if isinstance(shape, Mask) and tuple(shape.size) != (item.height, item.width):
                    raise InvalidInput(f"item {item.id} ({item.source}): its {shape.label!r} mask is "
                                       f"{shape.size[1]}x{shape.size[0]} but the image is {item.width}x{item.height}")
            index = _index_mask(shapes, class_index, background, item.height, item.width)
            maps.append((index == class_index[name], np.ones(index.shape, bool)))
    return maps


def _read(workspace, item) -> np.ndarray:
    return media.read(workspace.blobs.local_path(item.blob_sha256), item.page, name=item.source)


def _forest_labels(positive: np.ndarray, known: np.ndarray, whole: bool, rng) -> np.ndarray:
    """The forest's label map: CLASS / OTHER on labelled pixels (a seeded sample per value for whole masks,
    which would swamp the forest, as for the project's pixel classifier), 0 elsewhere."""
    from labelloop.services.assist.model_kinds.pixel_rf import MASK_PIXELS_PER_CLASS

    labels = np.zeros(positive.shape, np.uint16)
    for value, where in ((CLASS, positive & known), (OTHER, known & ~positive)):
        pixels = np.flatnonzero(where)
        if whole and len(pixels) > MASK_PIXELS_PER_CLASS:
            pixels = rng.choice(pixels, MASK_PIXELS_PER_CLASS, replace=False)
        labels.flat[pixels] = value
    return labels


def _train_forest(workspace, project, name: str, rows, maps, params: dict[str, Any], ctx):
    """Cross-fitted by image (each image's held-out probabilities come from a forest that did not see it), then
    one forest on every image. Returns (fitted forest, held-out probabilities, held-out truth, extra metrics)."""
    from labelloop.ml.micro_masks import sample_pixels
    from labelloop.services.assist.model_kinds.pixel_rf import PixelRF, project_intensity

    seed = int(params.get("seed", 0))
    rng = np.random.default_rng(seed)
    images = []
    for n, (item, _) in enumerate(rows, 1):
        images.append(_read(workspace, item))
        ctx.progress(n, len(rows), "reading labelled images")
    whole = [not any(isinstance(s, Scribble) for s in shapes) for _, shapes in rows]
    labels = [_forest_labels(p, k, w, rng) for (p, k), w in zip(maps, whole)]
    intensity = project_intensity(workspace, project, str(params.get("intensity") or "auto"))
    settings = {**params, "intensity": intensity}
    # Images holding the class are dealt round the folds first, so every fold trains on some of them.
    holding = [i for i, (p, _) in enumerate(maps) if p.any()]
    order = [*rng.permutation(holding).tolist(), *rng.permutation([i for i in range(len(rows)) if i not in holding]
                                                                  ).tolist()]
    folds = min(FOREST_FOLDS, len(rows))
    fold_of = {image: n % folds for n, image in enumerate(order)}
    held_p, held_y = [], []
    for fold in range(folds):
        test = [i for i in range(len(rows)) if fold_of[i] == fold]
        train = [i for i in range(len(rows)) if fold_of[i] != fold]
        ctx.progress(fold, folds, f"held-out images: fold {fold + 1} of {folds}")
        if not any(maps[i][0].any() for i in train) or all(maps[i][0][maps[i][1]].all() for i in train):
            continue  # this fold's training part lacks the class or its contrary: its images are not scored
        forest = PixelRF().estimator(settings).fit([images[i] for i in train], [labels[i] for i in train])
        column = list(np.asarray(forest.classes_)).index(CLASS)
        for i in test:
            probability = forest.predict_proba(images[i])[:, :, column]
            p, y = sample_pixels(probability, maps[i][0], maps[i][1], rng)
            held_p.append(p)
            held_y.append(y)
    ctx.progress(folds, folds, f"training the micro-model of {name!r} on every image")
    started = time.perf_counter()
    forest = PixelRF().estimator(settings).fit(images, labels)
    extra = {"intensity": forest.intensity, "validation": f"each image held out in turn ({folds} folds)",
             "fit_seconds": round(time.perf_counter() - started, 3)}
    return forest, _cat(held_p), _cat(held_y), extra


def _train_unet(workspace, project, name: str, rows, params: dict[str, Any], ctx):
    """A 2-class U-Net (the class against the rest), validated on held-out bands (or items), with the U-Net's final
    fit on whole images by default. The threshold is calibrated on the bands as the best network before the final
    fit saw them (unseen); the network after the final fit, which trained on them too, predicts. Returns
    (checkpoint bytes, held-out probabilities, truth, extra metrics, curves)."""
    from labelloop.ml.micro_masks import sample_pixels
    from labelloop.ml.unet import UNetSegmenter
    from labelloop.services.assist.model_kinds.unet import _training_pairs, settings

    class_value = next(c.index for c in project.classes if c.name == name)
    # No early stopping unless asked (`--set patience=N`): with held-out bands it would end the run before the final
    # fit, which then never happens (seen on Lucchi: stopped with a quarter of the schedule left).
    options = settings({"patience": NO_EARLY_STOP, **params})
    try:
        segmenter = UNetSegmenter(n_classes=2, **options).validate_params()
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    images, masks = _training_pairs(workspace, project, rows, [0, class_value], ctx)
    if not any(m.any() for m in masks):
        raise InvalidInput(f"no pixel of {name!r} in the labelled masks")
    held_out_best: dict[str, Any] = {}

    def keep_held_out_best(seg) -> None:
        if not seg._state.joined_epoch and seg._best_state is not None:
            held_out_best["weights"] = seg._best_state  # a fresh CPU copy each time the held-out best improves

    segmenter.fit(images, masks, on_progress=ctx.progress, on_checkpoint=keep_held_out_best)
    state = segmenter._state
    rng = np.random.default_rng(int(params.get("seed", 0)))
    tta = params.get("tta")
    held_p, held_y = [], []
    judge = segmenter
    if state.joined_epoch and held_out_best:  # the bands trained the final network: score the one before
        judge = UNetSegmenter.from_checkpoint(segmenter.checkpoint())
        judge.network_.load_state_dict(held_out_best["weights"])
    if state.val_regions and (not state.joined_epoch or held_out_best):
        for n, (image, mask, (y0, y1, x0, x1)) in enumerate(zip(images, masks, state.val_regions), 1):
            probability = judge.predict_proba(image, tta=tta)[y0:y1, x0:x1, 1]
            band = mask[y0:y1, x0:x1] > 0
            p, y = sample_pixels(probability, band, np.ones(band.shape, bool), rng)
            held_p.append(p)
            held_y.append(y)
            ctx.progress(n, len(images), "scoring the held-out bands")
    elif state.val_items:
        for n, i in enumerate(state.val_items, 1):
            probability = segmenter.predict_proba(images[i], tta=tta)[:, :, 1]
            p, y = sample_pixels(probability, masks[i] > 0, np.ones(masks[i].shape, bool), rng)
            held_p.append(p)
            held_y.append(y)
            ctx.progress(n, len(state.val_items), "scoring the held-out items")
    validation = segmenter.validation_
    if judge is not segmenter:
        validation += f" (held-out figures: the best network before the final fit, epoch {state.best_epoch})"
    extra = {**{k: v for k, v in segmenter.summary_.items() if k not in ("stopped",)},
             "validation": validation, "unet_stopped": segmenter.summary_["stopped"]}
    return segmenter.checkpoint(), _cat(held_p), _cat(held_y), extra, dict(segmenter.history_)


def fitted_final_fit(params: dict[str, Any]) -> float:
    from labelloop.ml.unet import UNetSegmenter
    from labelloop.services.assist.model_kinds.unet import settings

    return float(settings(params).get("final_fit", UNetSegmenter().final_fit))


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def train_mask_class(workspace, project, name: str, params: dict[str, Any], ctx, base: str, min_examples: int,
                     rows=None) -> ModelInfo:
    """Train, score on held-out pixels, calibrate and store the next version of `micro:NAME` on `base`; a version
    whose held-out average precision falls below the one in use is kept with status `worse`."""
    from labelloop.ml.micro_masks import MaskMicroModel, pixel_calibration
    from labelloop.services.assist.model_kinds.micro import examples_per_class, micro_kind, self_validation

    if name not in foreground_classes(project):
        if name in project.class_names():
            raise InvalidInput(f"{name!r} is the background of project {project.name!r}: micro-models are for the "
                               f"other classes ({', '.join(foreground_classes(project))})")
        raise InvalidInput(f"project {project.name!r} has no class {name!r}; its classes: "
                           f"{', '.join(project.class_names())}")
    if params.get("pseudo_labels"):
        raise InvalidInput("--pseudo-labels: pseudo-labels train classification micro-models only; semantic ones "
                           "learn from human masks and scribbles")
    rows = mask_rows(workspace, project, base) if rows is None else rows
    if not rows:
        raise InvalidInput(f"project {project.name!r} has no {' or '.join(SHAPES[base])} labels for a {base} "
                           f"micro-model")
    examples = examples_per_class(project, rows)[name]
    reason = why_not_trainable_mask(name, examples, min_examples)
    maps = None if reason else _binary_maps(project, rows, name)
    reason = reason or why_not_trainable_mask(name, examples, min_examples, maps)
    if reason:
        raise InvalidInput(f"no micro-model for {name!r}: {reason}")
    target = float(params.get("target_precision") or project.settings.get("target_precision") or 0.95)
    started = time.perf_counter()
    curves = None
    if base == "pixel-rf":
        fitted, held_p, held_y, extra = _train_forest(workspace, project, name, rows, maps, params, ctx)
        stored_settings = {"intensity": extra["intensity"], "trees": fitted.n_estimators,
                           "smoothing": fitted.smoothing, "scales": list(fitted.scales), "seed": fitted.random_state}
    else:
        fitted, held_p, held_y, extra, curves = _train_unet(workspace, project, name, rows, params, ctx)
        stored_settings = {"final_fit": fitted_final_fit(params)}
    seconds = time.perf_counter() - started
    calibration = pixel_calibration(held_p, held_y, target)
    if not len(held_y):
        calibration["reason"] = ("nothing was held out to calibrate on (every image trained): label the class on "
                                 "more images")
    score = {k: calibration[k] for k in ("average_precision", "ready", "threshold", "precision", "recall", "iou",
                                         "iou_at_half", "reason", "pixels", "positive_pixels")}
    worse, verdict = self_validation(workspace, project, name, score)
    positives = sorted(item.id for item, shapes in rows if any(s.label == name for s in shapes))
    metrics = {
        "class": name, "base": base, "examples": examples, "negatives": len(rows) - examples,
        "labelled_items": len(rows), "min_examples": min_examples, "held_out": score,
        "held_out_precision": score["precision"], "held_out_recall": score["recall"],
        "held_out_average_precision": score["average_precision"], "held_out_iou": score["iou"],
        "held_out_iou_at_half": score["iou_at_half"], "threshold": score["threshold"], "ready": score["ready"],
        "reason": score["reason"], "target_precision": target, "coverage": None, "in_use": not worse,
        "self_validation": verdict, "training_seconds": round(seconds, 3), "pseudo_labels": {"requested": False},
        "measured_on": extra["validation"], **{k: v for k, v in extra.items() if k not in ("validation",)},
    }
    model = MaskMicroModel(name, base, fitted, calibration,
                           {"tta": params.get("tta"), "device": params.get("device")} if base == "unet" else None)
    stored = {"class": name, "base": base, "min_examples": min_examples, "positives": positives,
              "labels_signature": labels_signature(rows), "target_precision": target, **stored_settings}
    saved = save_model(workspace, project, micro_kind(name), model, params=stored, metrics=metrics,
                       item_ids=[item.id for item, _ in rows], curves=curves)
    if worse:
        saved = update_model(workspace, saved, status="worse")
    log.info("%s: %s", saved.ref, verdict)
    return saved


def predict_mask_chain(workspace, project, models: list[ModelInfo], item_ids: list[int], ctx) -> dict[str, Any]:
    """Every micro-model's probability map of each item, merged per pixel (the passing class with the highest
    probability, background where none passes), small specks removed as the U-Net's prediction does; one
    Prediction per item whose masks each name the micro-model and version that made them."""
    from labelloop.ml.micro import merge_masks
    from labelloop.ml.postprocess import clean_classes
    from labelloop.services.assist.micro import CHAIN_VERSION, _drop_pending_chain_predictions
    from labelloop.services.assist.model_kinds.micro import class_of
    from labelloop.services.assist.models import load_estimator
    from labelloop.services.assist.predictions import save_predictions
    from labelloop.store.tables import PredictionRow

    loaded = [load_estimator(workspace, m) for m in models]
    names = [class_of(m.kind) for m in models]
    thresholds = np.array([np.inf if e.threshold_ is None else e.threshold_ for e in loaded])
    started = time.perf_counter()
    per_class, prelabelled, written = dict.fromkeys(names, 0), 0, 0
    for n, item in enumerate(item_rows(workspace, item_ids), 1):
        image = _read(workspace, item)
        probabilities = np.stack([e.probability(image) for e in loaded])
        merged = clean_classes(merge_masks(probabilities, thresholds), min_size=20)
        shapes = []
        for k in range(len(models)):
            region = merged == k + 1
            if not region.any():
                continue
            size, counts = rle.encode(region)
            shapes.append(Mask(names[k], size, counts, score=round(float(probabilities[k][region].mean()), 4),
                               attributes={"prelabel": True, "threshold": round(float(thresholds[k]), 4),
                                           "micro_model": models[k].ref, "micro_model_id": models[k].id}))
            per_class[names[k]] += 1
        prelabelled += bool(shapes)
        certainty = float(probabilities.max(axis=0).mean())
        with workspace.session() as session:
            _drop_pending_chain_predictions(session, [item.id])
            save_predictions(session, [PredictionRow(item_id=item.id, model_id=None, model_version=CHAIN_VERSION,
                                                     shapes=[shape_to_dict(s) for s in shapes],
                                                     score=round(certainty, 4), review_state="pending")])
        written += 1
        ctx.progress(n, len(item_ids), "pre-labelling with the chain")
    return {"chain": [m.ref for m in models], "predictions": written, "prelabelled": prelabelled,
            "coverage": round(prelabelled / written, 4) if written else None, "prelabels_per_class": per_class,
            "thresholds": {n: (None if np.isinf(t) else float(t)) for n, t in zip(names, thresholds)},
            "seconds": round(time.perf_counter() - started, 3)}
