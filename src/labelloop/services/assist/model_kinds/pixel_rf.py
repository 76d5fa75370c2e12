"""`pixel-rf`: a random forest on local image features, trained on scribbles, segmenting whole images."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sqlalchemy import func, select

from labelloop import media
from labelloop.domain import Mask, Polygon, ProjectKind, Scribble, shape_to_dict
from labelloop.errors import InvalidInput
from labelloop.geometry import rle
from labelloop.services.assist.model_kinds import register_model_kind
from labelloop.services.assist.models import save_model
from labelloop.services.data.project_data import background_index, item_rows, labelled_items
from labelloop.services.assist.predictions import save_predictions
from labelloop.store.tables import ItemRow, PredictionRow

log = logging.getLogger(__name__)
MASK_PIXELS_PER_CLASS = 2000  # full masks train on a seeded sample per class and image, like scribbles
INTENSITY_SAMPLE = 16  # images read, spread over the project, to choose intensity="auto"


def project_intensity(workspace, project, requested: str = "auto", sample: int = INTENSITY_SAMPLE) -> str:
    """The intensity scaling for a project's features: `requested` unless it is "auto"; then "percentile" when the
    bright levels of up to `sample` images spread over the project differ (ml.features.choose_intensity)."""
    from labelloop.ml.features import bright_level, choose_intensity  # cv2: loaded on use, like the forest

    if requested != "auto":
        return requested
    with workspace.session() as session:
        where = ItemRow.project_id == project.id
        count = session.scalar(select(func.count()).select_from(ItemRow).where(where)) or 0
        chosen = min(sample, count)
        offsets = sorted({round(k * (count - 1) / max(chosen - 1, 1)) for k in range(chosen)})
        ids = [session.scalar(select(ItemRow.id).where(where).order_by(ItemRow.id).offset(o).limit(1))
               for o in offsets]
    levels = [bright_level(media.read(workspace.blobs.local_path(item.blob_sha256), item.page, name=item.source))
              for item in item_rows(workspace, [i for i in ids if i is not None])]
    chosen = choose_intensity(levels)
    log.info("project %s: intensity %s (bright levels of %d images: %s)", project.name, chosen, len(levels),
             ", ".join(f"{v:.2f}" for v in levels))
    return chosen


def _label_map(shapes: list, class_index: dict[str, int], height: int, width: int, rng) -> np.ndarray:
    """Scribbles give their pixels; full masks a seeded sample per class (they would swamp the forest)."""
    labels = np.zeros((height, width), np.uint16)
    scribbles = [s for s in shapes if isinstance(s, Scribble)]
    for shape in scribbles or [s for s in shapes if isinstance(s, Mask)]:
        pixels = np.flatnonzero(rle.decode(shape))
        if not scribbles and len(pixels) > MASK_PIXELS_PER_CLASS:
            pixels = rng.choice(pixels, MASK_PIXELS_PER_CLASS, replace=False)
        labels.flat[pixels] = class_index[shape.label]
    return labels


@register_model_kind
class PixelRF:
    name = "pixel-rf"
    description = "random forest on multi-scale local features (ilastik-style), trained on scribbles"
    project_kinds = (ProjectKind.semantic, ProjectKind.instance)
    figures = (("training_pixels", "scribbled pixels", "count"), ("features", "features per pixel", "count"),
               ("training_seconds", "training time", "seconds"))
    card_note = ("trained on scribbles, so there is no held-out score: judge it on the live overlay, or train a "
                 "U-Net on full masks for an IoU")

    def estimator(self, params: dict[str, Any]):
        from labelloop.ml.pixel_classifier import (
            DEFAULT_AUTOCONTEXT,
            DEFAULT_INTENSITY,
            DEFAULT_SMOOTHING,
            PixelClassifier,
        )

        kwargs: dict[str, Any] = {"n_estimators": int(params.get("trees", 20)), "random_state": int(params.get("seed", 0)),
                                  "autocontext": bool(params.get("autocontext", DEFAULT_AUTOCONTEXT)),
                                  "smoothing": float(params.get("smoothing", DEFAULT_SMOOTHING)),
                                  "intensity": str(params.get("intensity") or DEFAULT_INTENSITY),
                                  "refine": params.get("refine", "auto")}  # true/false/auto: checked by fit
        if params.get("scales"):
            kwargs["scales"] = tuple(float(s) for s in params["scales"])
        return PixelClassifier(**kwargs)

    def train(self, workspace, project, params: dict[str, Any], ctx):
        rows = labelled_items(workspace, project, shape_types=("scribble", "mask"))
        if not rows:
            raise InvalidInput(f"project {project.name!r} has no scribbles or masks to train on; "
                               f"import some with `labelloop import {project.name} DIR --format scribbles`")
        class_index = {c.name: c.index for c in project.classes}
        rng = np.random.default_rng(int(params.get("seed", 0)))
        images, labels = [], []
        for n, (item, shapes) in enumerate(rows, 1):
            images.append(media.read(workspace.blobs.local_path(item.blob_sha256), item.page, name=item.source))
            labels.append(_label_map(shapes, class_index, item.height, item.width, rng))
            ctx.progress(n, len(rows), "reading labelled images")
        present = sorted({int(v) for lab in labels for v in np.unique(lab) if v})
        if len(present) < 2:
            names = [c.name for c in project.classes if c.index in present]
            raise InvalidInput(f"scribbles must cover at least 2 classes to train a pixel classifier; found only "
                               f"{', '.join(names) or 'none'} (add strokes of another class, e.g. background)")
        ctx.progress(0, None, "choosing the intensity scaling")
        intensity = project_intensity(workspace, project, str(params.get("intensity") or "auto"))
        ctx.progress(0, None, "training the forest")
        classifier = self.estimator({**params, "intensity": intensity}).fit(images, labels)
        pixels = int(sum((lab > 0).sum() for lab in labels))
        metrics = {"training_seconds": round(classifier.training_seconds_, 3), "training_pixels": pixels,
                   "pixels_per_class": {c.name: int(sum((lab == c.index).sum() for lab in labels))
                                        for c in project.classes if c.index in present},
                   "features": len(classifier.feature_names_)}
        stored = {"scales": list(classifier.scales), "trees": classifier.n_estimators,
                  "autocontext": classifier.autocontext, "smoothing": classifier.smoothing,
                  "intensity": classifier.intensity, "refine": classifier.refine,
                  "seed": classifier.random_state,
                  "feature_names": list(classifier.feature_names_)}
        return save_model(workspace, project, self.name, classifier, params=stored, metrics=metrics,
                          item_ids=[item.id for item, _ in rows])

    def predict(self, workspace, project, model, item_ids: list[int], params: dict[str, Any], ctx) -> dict[str, Any]:
        from labelloop.services.assist.models import load_estimator

        classifier = load_estimator(workspace, model)
        names = {c.index: c.name for c in project.classes}
        background = background_index(project)
        instances = params.get("instances")
        written = 0
        for n, item in enumerate(item_rows(workspace, item_ids), 1):
            image = media.read(workspace.blobs.local_path(item.blob_sha256), item.page, name=item.source)
            proba = classifier.predict_proba(image)
            best = proba.argmax(axis=2)
            values = np.asarray(classifier.classes_)[best]
            confidence = proba.max(axis=2)
            shapes: list = []
            for value in np.unique(values):
                if int(value) == background or int(value) not in names:
                    continue
                region = values == value
                size, counts = rle.encode(region)
                shapes.append(Mask(names[int(value)], size, counts, score=round(float(confidence[region].mean()), 4)))
            if instances == "watershed":
                shapes = self._instances(values, proba, classifier, background, names, params) or shapes
            with workspace.session() as session:
                save_predictions(session, [PredictionRow(
                    item_id=item.id, model_id=model.id, model_version=model.ref,
                    shapes=[shape_to_dict(s) for s in shapes], score=round(float(confidence.mean()), 4),
                    review_state="pending")])
            written += 1
            ctx.progress(n, len(item_ids), "segmenting")
        return {"model": model.ref, "predictions": written}

    def _instances(self, values, proba, classifier, background, names, params) -> list:
        """Split each foreground class into objects by watershed; each object becomes a polygon."""
        from labelloop.ml.watershed import instances_to_polygons, split_instances

        shapes: list = []
        classes = list(np.asarray(classifier.classes_))
        for value in np.unique(values):
            if int(value) == background or int(value) not in names:
                continue
            probability = proba[:, :, classes.index(value)]
            labels = split_instances(values == value, probability=probability,
                                     min_size=int(params.get("min_size", 20)),
                                     min_distance=int(params.get("min_distance", 5)))
            for label_id, points in instances_to_polygons(labels):
                if len(points) >= 3:
                    score = float(probability[labels == label_id].mean())
                    shapes.append(Polygon(names[int(value)], (tuple(points),), score=round(score, 4),
                                          attributes={"instance": int(label_id)}))
        return shapes
