"""`micro`: one small model per class (that class against every other labelled item), each with its own versions,
metrics and calibrated threshold, trainable from a handful of examples (ml/micro.py).

A class's micro-model is stored as model kind `micro:CLASS`, so its versions count on their own
(`micro:cat:1`, `micro:cat:2`, ...). Every retrain is scored on the class's held-out labels; a version that scores
worse than the one in use is kept with status `worse` and not used (the chain keeps the better one)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sqlalchemy import select

from labelloop.domain import ProjectKind
from labelloop.errors import InvalidInput
from labelloop.services.assist.embeddings import embed_items
from labelloop.services.assist.model_kinds import register_model_kind
from labelloop.services.assist.models import ModelInfo, _info, save_model, update_model
from labelloop.services.data.project_data import item_pages, labelled_items
from labelloop.store.tables import ModelRow

log = logging.getLogger(__name__)
PREFIX = "micro:"
DEFAULT_MIN_EXAMPLES = 5
# Bases a micro-model can stand on, with the project kinds each serves (semantic ones: services/assist/micro_masks.py;
# detection ones: services/assist/micro_boxes.py).
BASES = {"classifier": (ProjectKind.classification, ProjectKind.multilabel), "detector": (ProjectKind.detection,),
         "shared-detector": (ProjectKind.detection,), "pixel-rf": (ProjectKind.semantic,),
         "unet": (ProjectKind.semantic,)}


def micro_kind(class_name: str) -> str:
    return f"{PREFIX}{class_name}"


def class_of(kind: str) -> str:
    return kind.removeprefix(PREFIX)


def versions(workspace, project, class_name: str) -> list[ModelInfo]:
    """Every stored version of a class's micro-model, oldest first."""
    with workspace.session() as session:
        rows = session.scalars(select(ModelRow).where(ModelRow.project_id == project.id,
                                                      ModelRow.kind == micro_kind(class_name))
                               .order_by(ModelRow.version))
        return [_info(r) for r in rows]


def in_use(workspace, project, class_name: str) -> ModelInfo | None:
    """The version the chain uses: the newest that self-validation did not mark worse."""
    usable = [m for m in versions(workspace, project, class_name) if m.status == "ready"]
    return usable[-1] if usable else None


def self_validation(workspace, project, class_name: str, score: dict[str, Any]) -> tuple[str, str]:
    """(why the new version is worse than the one in use, '' when it is not; the verdict in words)."""
    from labelloop.ml.micro import is_worse

    current = in_use(workspace, project, class_name)
    worse = is_worse(score, current.metrics.get("held_out") if current else None)
    verdict = (f"worse than {current.ref} (kept, not used): {worse}" if worse else
               f"replaces {current.ref} in use" if current else "first version, in use")
    return worse, verdict


def examples_per_class(project, rows) -> dict[str, int]:
    """Labelled items holding each class."""
    counts = dict.fromkeys(project.class_names(), 0)
    for _, shapes in rows:
        for name in {s.label for s in shapes}:
            if name in counts:
                counts[name] += 1
    return counts


def why_not_trainable(class_name: str, examples: int, labelled: int, min_examples: int) -> str:
    """'' when a class's micro-model can be trained, else the reason in words."""
    if examples < min_examples:
        return (f"{examples} labelled example(s) of {class_name!r}, fewer than --min-examples {min_examples}; "
                f"label {min_examples - examples} more")
    if labelled - examples < 1:
        return f"no labelled item without {class_name!r} to learn what it is not; label other classes"
    return ""


def pseudo_labels(workspace, project, name: str, labelled: set[int]) -> tuple[list[int], np.ndarray]:
    """(item ids, 0/1) from the chain's pending pre-labels on items nobody labelled: 1 where this class was
    pre-labelled; 0 where another class was (multi-class only: in a multi-label project a missing class is no
    evidence). They stay Predictions: never annotations, never exported as human labels."""
    from labelloop.services.assist.micro import CHAIN_VERSION
    from labelloop.store.tables import ItemRow, PredictionRow

    with workspace.session() as session:
        rows = session.execute(select(PredictionRow.item_id, PredictionRow.shapes).join(
            ItemRow, ItemRow.id == PredictionRow.item_id).where(
            ItemRow.project_id == project.id, PredictionRow.model_version == CHAIN_VERSION,
            PredictionRow.review_state == "pending", PredictionRow.shape_count > 0)
            .order_by(PredictionRow.id)).all()
    found: dict[int, int] = {}
    for item_id, shapes in rows:  # the newest chain pre-label of an item wins
        if item_id in labelled:
            continue
        has = any(s.get("label") == name for s in shapes)
        if has or project.kind is ProjectKind.classification:
            found[item_id] = int(has)
    return list(found), np.array(list(found.values()), np.int64)


def check_base(project, base: str) -> None:
    if base not in BASES:
        raise InvalidInput(f"--base {base!r}: choose one of {', '.join(BASES)}")
    if project.kind not in BASES[base]:
        raise InvalidInput(f"--base {base} serves {', '.join(k.value for k in BASES[base])} projects; "
                           f"{project.name!r} is a {project.kind.value} project")


def base_of(workspace, project, params: dict[str, Any]) -> str:
    """The base asked for, checked; by default the classifier (classification), the detector (detection), else a
    U-Net where the project has whole masks and the pixel forest where it has only scribbles (semantic)."""
    base = params.get("base")
    if not base:
        if project.kind is ProjectKind.detection:
            base = "detector"
        elif project.kind is ProjectKind.semantic:
            from labelloop.services.assist.micro_masks import default_base

            base = default_base(workspace, project)
        else:
            base = "classifier"
    check_base(project, base)
    return base


def default_min_examples(base: str) -> int:
    """Labelled examples a class needs by default: items (classifier), images holding it (the others)."""
    from labelloop.services.assist.micro_boxes import DEFAULT_BOX_MIN_EXAMPLES
    from labelloop.services.assist.micro_masks import DEFAULT_MASK_MIN_EXAMPLES

    defaults = {"classifier": DEFAULT_MIN_EXAMPLES, "detector": DEFAULT_BOX_MIN_EXAMPLES,
                "shared-detector": DEFAULT_BOX_MIN_EXAMPLES}
    return defaults.get(base, DEFAULT_MASK_MIN_EXAMPLES)


def min_examples_of(params: dict[str, Any], base: str = "classifier") -> int:
    from labelloop.services.assist.model_kinds.options import number

    default = default_min_examples(base)
    value = number("--min-examples", params.get("min_examples", default), int)
    if value < 2:
        raise InvalidInput(f"--min-examples {value}: a micro-model needs at least 2 examples (one to hold out)")
    return value


@register_model_kind
class Micro:
    name = "micro"
    description = ("one small model per class (that class against every other labelled item, image or pixel) on "
                   "embeddings, a one-class detector (or a head on a detector the classes share), a pixel forest or a "
                   "U-Net, each with its own versions and a threshold calibrated on the class's held-out labels")
    project_kinds = (ProjectKind.classification, ProjectKind.multilabel, ProjectKind.detection, ProjectKind.semantic)
    figures = (("class", "class", "text"), ("base", "base model", "text"),
               ("examples", "labelled examples of the class", "count"),
               ("negatives", "labelled items without it", "count"),
               ("held_out_precision", "held-out precision at the threshold", "share"),
               ("held_out_recall", "held-out recall at the threshold", "share"),
               ("held_out_average_precision", "held-out average precision (AP@0.5 for boxes)", "number"),
               ("held_out_map", "held-out AP@0.5:0.95", "number"),
               ("held_out_iou", "held-out pixel IoU at the threshold", "number"), ("measured_on", "held out", "text"),
               ("reason", "no pre-labels because", "text"),
               ("coverage", "unlabelled items it pre-labels", "share"), ("self_validation", "self-validation", "text"),
               ("training_seconds", "training time", "seconds"))
    card_note = ("each class's micro-model is scored on its own held-out labels (cross-fitted items or images; a "
                 "U-Net's held-out bands), pixels for semantic projects, boxes matched at IoU ≥ 0.5 for detection "
                 "ones; a retrain that scores worse than the version in use is kept but not used")

    def train(self, workspace, project, params: dict[str, Any], ctx) -> ModelInfo:
        """Train the micro-model of `params["class"]`; refuses (InvalidInput, nothing written) when the class has
        fewer labelled examples than `min_examples`."""
        name = params.get("class")
        if not name:
            raise InvalidInput("a micro-model is trained for one class: give --class CLASS (or --all-classes)")
        base = base_of(workspace, project, params)
        if base == "detector":
            from labelloop.services.assist.micro_boxes import train_box_class

            return train_box_class(workspace, project, name, params, ctx, min_examples_of(params, base))
        if base == "shared-detector":
            from labelloop.services.assist.micro_shared_boxes import train_shared_class

            return train_shared_class(workspace, project, name, params, ctx, min_examples_of(params, base))
        if base != "classifier":
            from labelloop.services.assist.micro_masks import train_mask_class

            return train_mask_class(workspace, project, name, params, ctx, base, min_examples_of(params, base))
        rows = labelled_items(workspace, project, shape_types=("class",))
        return self.train_class(workspace, project, name, params, ctx, rows)

    def train_class(self, workspace, project, name: str, params: dict[str, Any], ctx, rows,
                    pool: list[int] | None = None) -> ModelInfo:
        import time

        from labelloop.ml.micro import MicroModel, pseudo_labels_hurt
        from labelloop.services.assist.model_kinds.classifier import Classifier

        if name not in project.class_names():
            raise InvalidInput(f"project {project.name!r} has no class {name!r}; its classes: "
                               f"{', '.join(project.class_names())}")
        check_base(project, params.get("base") or "classifier")
        min_examples = min_examples_of(params)
        counts = examples_per_class(project, rows)
        reason = why_not_trainable(name, counts[name], len(rows), min_examples)
        if reason:
            raise InvalidInput(f"no micro-model for {name!r}: {reason}")
        base = Classifier()
        choice = base.settings(project, {**params, "head": "logreg"})
        ids = [item.id for item, _ in rows]
        y = np.array([any(s.label == name for s in shapes) for _, shapes in rows], np.int64)
        if pool is None:
            labelled = set(ids)
            pool = [i for page in item_pages(workspace, project.id, ids_only=True) for i in page if i not in labelled]
        embed_items(workspace, ids + pool, model_name=choice["encoder"], weights=choice["weights"],
                    progress=ctx.progress)
        base._resolve_features(workspace, ids, choice)
        ctx.progress(0, None, f"training the micro-model of {name!r}")
        started = time.perf_counter()
        model = MicroModel(name, target_precision=choice["target_precision"], confidence=choice["confidence"],
                           held_out=choice["held_out"], method=choice["calibration_method"],
                           random_state=choice["seed"])
        unlabelled = base._inputs(workspace, pool, choice) if pool else None
        X = base._inputs(workspace, ids, choice)
        model.fit(X, y, unlabelled)
        pseudo = {"requested": bool(params.get("pseudo_labels"))}
        pseudo_ids: list[int] = []
        if pseudo["requested"]:
            candidate_ids, pseudo_y = pseudo_labels(workspace, project, name, set(ids))
            pseudo.update(available=len(candidate_ids), positives=int(pseudo_y.sum()),
                          negatives=int(len(pseudo_y) - pseudo_y.sum()), kept=False)
            if candidate_ids:
                with_pseudo = MicroModel(**model.get_params()).fit(
                    X, y, unlabelled, base._inputs(workspace, candidate_ids, choice), pseudo_y)
                # The held-out score (the same human folds for both) decides whether pseudo-labels stay on.
                worse = pseudo_labels_hurt(with_pseudo.held_out_score(), model.held_out_score())
                pseudo.update(kept=not worse, reason=worse or "held-out score no worse with them",
                              held_out_average_precision_with=with_pseudo.held_out_score()["average_precision"],
                              held_out_average_precision_without=model.held_out_score()["average_precision"],
                              held_out_log_loss_with=with_pseudo.held_out_score()["log_loss"],
                              held_out_log_loss_without=model.held_out_score()["log_loss"])
                if not worse:
                    model, pseudo_ids = with_pseudo, candidate_ids
            else:
                pseudo["reason"] = "no chain pre-label to learn from yet: run `predict --chain` first"
        seconds = time.perf_counter() - started
        score = model.held_out_score()
        worse, verdict = self_validation(workspace, project, name, score)
        prelabelled = int(model.passes(model.prelabeller_.pool_proba_[:, 0]).sum()) if pool else 0
        kind = micro_kind(name)
        metrics = {
            "class": name, "base": "classifier", "examples": int(y.sum()), "negatives": int(len(y) - y.sum()),
            "labelled_items": len(ids), "min_examples": min_examples, "held_out": score,
            "held_out_precision": score["precision"], "held_out_recall": score["recall"],
            "held_out_average_precision": score["average_precision"], "threshold": score["threshold"],
            "ready": score["ready"], "reason": score["reason"], "target_precision": choice["target_precision"],
            "calibration_method": choice["calibration_method"], "features": choice["features"],
            "prelabelled": prelabelled, "coverage": round(prelabelled / len(pool), 4) if pool else None,
            "in_use": not worse, "self_validation": verdict, "training_seconds": round(seconds, 3),
            "pseudo_labels": pseudo,
            "classes": {name: {**model.calibration_.to_dict(), "prelabelled": prelabelled}},
        }
        metrics["classes"][name].pop("name")
        stored = {**choice, "class": name, "base": "classifier", "min_examples": min_examples,
                  "positives": [i for i, v in zip(ids, y) if v], "pseudo_item_ids": pseudo_ids}
        saved = save_model(workspace, project, kind, model, params=stored, metrics=metrics, item_ids=ids)
        if worse:
            saved = update_model(workspace, saved, status="worse")
        log.info("%s: %s", saved.ref, verdict)
        return saved

    def predict(self, workspace, project, model, item_ids: list[int], params: dict[str, Any], ctx) -> dict[str, Any]:
        raise InvalidInput("micro-models predict as a chain: `labelloop predict NAME --chain` (set the chain with "
                           "`labelloop chain NAME micro:CLASS ...`)")
