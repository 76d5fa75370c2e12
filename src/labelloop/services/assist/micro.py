"""Micro-models of a project: training them class by class, the chain (project setting `micro_chain`), one
prediction job that runs the chain and merges its outputs into one pre-label per item, and each class's state."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from labelloop.domain import ClassLabel, ProjectKind, shape_to_dict
from labelloop.errors import InvalidInput, LabelloopError, NotFound
from labelloop.jobs.batches import batch_work, run_batches
from labelloop.jobs.registry import JobContext, job_kind
from labelloop.services.assist.embeddings import embed_items
from labelloop.services.assist.model_kinds.micro import (DEFAULT_MIN_EXAMPLES, PREFIX, Micro, base_of, class_of,
                                                      examples_per_class, in_use, micro_kind, min_examples_of,
                                                      versions, why_not_trainable)
from labelloop.services.assist.models import ModelInfo, _info, load_estimator
from labelloop.services.data.project_data import item_pages, labelled_items, select_items
from labelloop.services.projects import ProjectInfo, get_project, get_row
from labelloop.store.tables import ModelRow, PredictionRow

SETTING = "micro_chain"
CHAIN_VERSION = "chain"  # model_version of a merged chain pre-label; each shape names its micro-model
CHUNK = 512


def _project(workspace, name: str) -> ProjectInfo:
    with workspace.session() as session:
        return get_project(session, name)


# --- training -----------------------------------------------------------------------------------------------

def train_micro(workspace, project: ProjectInfo, params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """One class (`class`) or every class (`all_classes`): per class a line saying what was trained, or why not.
    With `all_classes`, a class whose labelled examples are the same as its version in use is left as it is (each
    micro-model retrains alone when its class gets new labels) unless `force`."""
    base = base_of(workspace, project, params)
    min_examples = min_examples_of(params, base)
    if base in ("detector", "shared-detector"):
        from labelloop.services.assist.micro_boxes import train_box_micros

        results = train_box_micros(workspace, project, params, ctx, min_examples, base)
        lines = [_line(name, r) for name, r in results.items()]
        return {"summary": "; ".join(lines), "lines": lines, "classes": results}
    if base != "classifier":
        return _train_mask_micros(workspace, project, params, ctx, base, min_examples)
    names = project.class_names() if params.get("all_classes") else [params.get("class")]
    if not params.get("all_classes") and not names[0]:
        raise InvalidInput("give --class CLASS or --all-classes")
    kind = Micro()
    rows = labelled_items(workspace, project, shape_types=("class",))
    counts = examples_per_class(project, rows)
    labelled = {item.id for item, _ in rows}
    pool = [i for page in item_pages(workspace, project.id, ids_only=True) for i in page if i not in labelled]
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        if name not in counts:
            raise InvalidInput(f"project {project.name!r} has no class {name!r}; its classes: "
                               f"{', '.join(project.class_names())}")
        reason = why_not_trainable(name, counts[name], len(rows), min_examples)
        if reason and not params.get("all_classes"):
            raise InvalidInput(f"no micro-model for {name!r}: {reason}")
        if reason:
            results[name] = {"trained": False, "examples": counts[name], "reason": reason}
            continue
        current = in_use(workspace, project, name)
        positives = sorted(item.id for item, shapes in rows if any(s.label == name for s in shapes))
        if params.get("all_classes") and not params.get("force") and not params.get("pseudo_labels") \
                and current is not None \
                and sorted(current.params.get("positives", [])) == positives:
            results[name] = {"trained": False, "examples": counts[name], "model": current.ref,
                             "reason": f"no new labels since {current.ref}; it stays in use"}
            continue
        model = kind.train_class(workspace, project, name, params, ctx, rows, pool)
        results[name] = {"trained": True, "examples": counts[name], "model": model.ref, "status": model.status,
                         "in_use": model.status == "ready", "ready": model.metrics["ready"],
                         "threshold": model.metrics["threshold"], "precision": model.metrics["held_out_precision"],
                         "recall": model.metrics["held_out_recall"], "coverage": model.metrics["coverage"],
                         "self_validation": model.metrics["self_validation"],
                         "pseudo_labels": model.metrics["pseudo_labels"], "reason": model.metrics["reason"]}
    lines = [_line(name, r) for name, r in results.items()]
    return {"summary": "; ".join(lines), "lines": lines, "classes": results}


def _train_mask_micros(workspace, project: ProjectInfo, params: dict[str, Any], ctx: JobContext, base: str,
                       min_examples: int) -> dict[str, Any]:
    """`train_micro` for a semantic project: per class a binary segmenter on `base` (services/assist/micro_masks)."""
    from labelloop.services.assist.micro_masks import (foreground_classes, labels_signature, mask_rows,
                                                       train_mask_class, why_not_trainable_mask)

    names = foreground_classes(project) if params.get("all_classes") else [params.get("class")]
    if not params.get("all_classes") and not names[0]:
        raise InvalidInput("give --class CLASS or --all-classes")
    rows = mask_rows(workspace, project, base)
    signature = labels_signature(rows)
    counts = examples_per_class(project, rows)
    results = train_each_class(
        workspace, project, params, names, counts, lambda name, n: why_not_trainable_mask(name, n, min_examples),
        lambda current, name: current.params.get("base") == base and current.params.get("labels_signature") == signature,
        lambda name: train_mask_class(workspace, project, name, params, ctx, base, min_examples, rows),
        lambda m: {"iou": m["held_out_iou"]})
    lines = [_line(name, r) for name, r in results.items()]
    return {"summary": "; ".join(lines), "lines": lines, "classes": results}


def train_each_class(workspace, project: ProjectInfo, params: dict[str, Any], names: list[str],
                     counts: dict[str, int], why_not, unchanged, train_one, figures) -> dict[str, dict[str, Any]]:
    """The per-class loop box and mask micro-models share: a class is not trained when `why_not(name, examples)`
    gives a reason (with `all_classes`; one class asked for raises in `train_one`), or, with `all_classes` and no
    `force`, when `unchanged(version in use, name)`; else `train_one(name)`, its held-out figures and `figures`' own."""
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        examples = counts.get(name, 0)
        reason = why_not(name, examples)
        if reason and params.get("all_classes"):
            results[name] = {"trained": False, "examples": examples, "reason": reason}
            continue
        current = in_use(workspace, project, name)
        if params.get("all_classes") and not params.get("force") and current is not None \
                and unchanged(current, name):
            results[name] = {"trained": False, "examples": examples, "model": current.ref,
                             "reason": f"no new labels since {current.ref}; it stays in use"}
            continue
        model = train_one(name)
        m = model.metrics
        results[name] = {"trained": True, "examples": examples, "model": model.ref, "status": model.status,
                         "in_use": model.status == "ready", "ready": m["ready"], "threshold": m["threshold"],
                         "precision": m["held_out_precision"], "recall": m["held_out_recall"], **figures(m),
                         "coverage": None, "self_validation": m["self_validation"],
                         "pseudo_labels": m["pseudo_labels"], "reason": m["reason"]}
    return results


def _share(value: float | None) -> str:
    """A held-out figure, or why there is none: a threshold estimated on the unlabelled items (calibration `auto`
    on few held-out labels) can lie above every held-out score of the class."""
    return "n/a (no held-out item above the threshold)" if value is None else f"{value:.2f}"


def _line(name: str, r: dict[str, Any]) -> str:
    if not r["trained"]:
        return f"{name}: not trained ({r['reason']})"
    figures = (f"threshold {r['threshold']:.3f}, held-out precision {_share(r['precision'])}, recall "
               f"{_share(r['recall'])}" if r["ready"] else f"no pre-labels yet ({r['reason']})")
    if r.get("iou") is not None:
        figures += f", pixel IoU {r['iou']:.3f}"
    if r.get("average_precision") is not None:
        figures += f", held-out AP@0.5 {r['average_precision']:.3f}"
    pseudo = r.get("pseudo_labels") or {}
    if pseudo.get("requested"):
        figures += (f"; pseudo-labels {'kept' if pseudo.get('kept') else 'off'} ({pseudo.get('available', 0)} "
                    f"available: {pseudo.get('reason', '')})")
    return f"{name}: {r['model']} on {r['examples']} examples, {figures}; {r['self_validation']}"


@job_kind("micro-train")
def micro_train_job(workspace, ctx: JobContext) -> dict[str, Any]:
    project = _project(workspace, ctx.params["project"])
    result = train_micro(workspace, project, ctx.params, ctx)
    for line in result["lines"]:
        ctx.log(line)
    return result


# --- the chain ----------------------------------------------------------------------------------------------

def parse_entry(project: ProjectInfo, entry: str) -> tuple[str, int | None]:
    """'micro:CLASS' (the version in use) or 'micro:CLASS:VERSION' -> (class, version)."""
    entry = str(entry).strip()
    if not entry.startswith(PREFIX):
        raise InvalidInput(f"chain entry {entry!r}: name a micro-model as micro:CLASS or micro:CLASS:VERSION, "
                           f"or a model id")
    rest = entry[len(PREFIX):]
    if rest in project.class_names():
        return rest, None
    name, _, version = rest.rpartition(":")
    if version.isdigit() and name in project.class_names():
        return name, int(version)
    raise InvalidInput(f"chain entry {entry!r}: project {project.name!r} has no class {rest!r}; its classes: "
                       f"{', '.join(project.class_names())}")


def _model_by_id(workspace, project: ProjectInfo, model_id: int) -> ModelInfo:
    from labelloop.services.projects import get_project_by_id

    with workspace.session() as session:
        row = session.get(ModelRow, model_id)
        if row is None:
            raise NotFound(f"no model {model_id}")
        model = _info(row)
        owner = get_project_by_id(session, row.project_id).name
    if model.project_id != project.id:
        raise InvalidInput(f"model {model_id} ({model.ref}) belongs to project {owner!r}, not {project.name!r}; a "
                           "chain uses the project's own micro-models")
    if not model.kind.startswith(PREFIX):
        raise InvalidInput(f"model {model_id} is {model.ref}, not a micro-model; a chain holds micro:CLASS models")
    return model


def normalise_chain(workspace, project: ProjectInfo, entries: list[Any]) -> list[str]:
    """Checked chain entries in the stored form ('micro:CLASS' or 'micro:CLASS:VERSION'); model ids are
    resolved and must be micro-models of this project."""
    if not entries:
        raise InvalidInput("a chain names at least one micro-model, e.g. micro:cat micro:dog")
    chain, seen = [], set()
    for entry in entries:
        if isinstance(entry, int) or str(entry).strip().isdigit():
            if not 0 < int(entry) < 2**31:
                raise NotFound(f"no model {entry}")
            model = _model_by_id(workspace, project, int(entry))
            name, version = class_of(model.kind), model.version
        else:
            name, version = parse_entry(project, entry)
            if version is not None and version not in {m.version for m in versions(workspace, project, name)}:
                raise InvalidInput(f"chain entry {entry!r}: {micro_kind(name)} has no version {version}")
        if name in seen:
            raise InvalidInput(f"class {name!r} appears twice in the chain; name each class once")
        seen.add(name)
        chain.append(micro_kind(name) + (f":{version}" if version is not None else ""))
    return chain


def set_chain(workspace, project_name: str, entries: list[Any]) -> dict[str, Any]:
    """Store the project's chain (checked first: a bad entry changes nothing); returns the chain's state."""
    project = _project(workspace, project_name)
    chain = normalise_chain(workspace, project, entries)
    with workspace.session() as session:
        row = get_row(session, project_name)
        # Stored beside the checked settings; `labelloop chain` is the one way in, so it is checked here.
        row.settings = {**row.settings, SETTING: chain}
    return chain_state(workspace, _project(workspace, project_name))


def resolve_chain(workspace, project: ProjectInfo, entries: list[str] | None = None
                  ) -> tuple[list[ModelInfo], dict[str, str]]:
    """The micro-models a chain runs, in order, and the classes it skips with why."""
    entries = entries if entries is not None else project.settings.get(SETTING)
    if not entries:
        raise InvalidInput(f"project {project.name!r} has no chain; set one with "
                           f"`labelloop chain {project.name} micro:CLASS ...`")
    models, skipped = [], {}
    for entry in normalise_chain(workspace, project, list(entries)):
        name, version = parse_entry(project, entry)
        if version is None:
            model = in_use(workspace, project, name)
            if model is None:
                skipped[name] = (f"no micro-model yet; train one with `labelloop train {project.name} --model micro "
                                 f"--class {name}`")
                continue
        else:
            model = next(m for m in versions(workspace, project, name) if m.version == version)
        models.append(model)
    return models, skipped


def chain_items(workspace, project: ProjectInfo, params: dict[str, Any]) -> list[int]:
    chosen = params.get("items")
    if isinstance(chosen, str):
        chosen = [int(i) for i in chosen.split(",") if i.strip().isdigit()] or None
    return select_items(workspace, project, split=params.get("split"), everything=bool(params.get("all")),
                        items=chosen)


def predict_chain(workspace, project: ProjectInfo, models: list[ModelInfo], item_ids: list[int], ctx: JobContext,
                  target_precision: float | None = None) -> dict[str, Any]:
    """Run every micro-model over the items and write one merged pre-label per item (a Prediction whose shapes
    each name the micro-model and version that made them)."""
    from labelloop.ml.micro import ChainScorer, merge_multiclass, merge_multilabel
    from labelloop.services.assist.model_kinds.classifier import Classifier

    base = Classifier()
    loaded = [load_estimator(workspace, m) for m in models]
    target = target_precision or project.settings.get("target_precision")
    for estimator in loaded:
        if target and float(target) != estimator.target_precision:
            estimator.set_target(float(target))
    for key in {(m.params["encoder"], m.params.get("weights")) for m in models}:
        embed_items(workspace, item_ids, model_name=key[0], weights=key[1], progress=ctx.progress)
    names = [class_of(m.kind) for m in models]
    thresholds = np.array([np.inf if e.threshold_ is None else e.threshold_ for e in loaded])
    multilabel = project.kind is ProjectKind.multilabel
    # Micro-models reading the same inputs are scored together (one matrix product for the chain's
    # logistic regressions), and their inputs are read once per chunk.
    groups: dict[tuple, list[int]] = {}
    for k, model in enumerate(models):
        groups.setdefault((model.params["encoder"], model.params.get("weights"), model.params["features"]), []).append(k)
    scorers = {key: ChainScorer([loaded[k] for k in members]) for key, members in groups.items()}
    started = time.perf_counter()
    per_class, written, prelabelled = dict.fromkeys(names, 0), 0, 0
    for start in range(0, len(item_ids), CHUNK):
        chunk = item_ids[start:start + CHUNK]
        scores = np.zeros((len(chunk), len(models)))
        for key, members in groups.items():
            scores[:, members] = scorers[key].scores(base._inputs(workspace, chunk, models[members[0]].params))
        passing = merge_multilabel(scores, thresholds)
        chances = np.full(scores.shape, np.nan)
        for key, members in groups.items():
            chances[:, members] = scorers[key].chances(scores[:, members], passing[:, members])
        if multilabel:
            accepted = merge_multilabel(scores, thresholds)
        else:
            winner = merge_multiclass(scores, thresholds, chances)
            accepted = np.zeros_like(scores, bool)
            accepted[np.flatnonzero(winner >= 0), winner[winner >= 0]] = True
        rows = []
        for n, item_id in enumerate(chunk):
            shapes = [ClassLabel(names[k], score=round(float(chances[n, k]), 4), attributes={
                "prelabel": True, "threshold": round(float(thresholds[k]), 4), "micro_model": models[k].ref,
                "micro_model_id": models[k].id, "raw_score": round(float(scores[n, k]), 4)})
                for k in np.flatnonzero(accepted[n])]
            for shape in shapes:
                per_class[shape.label] += 1
            prelabelled += bool(shapes)
            # The item score orders manual labelling: the surest passing chance, the top raw score otherwise.
            certainty = np.nanmax(chances[n]) if passing[n].any() else scores[n].max()
            rows.append(PredictionRow(item_id=item_id, model_id=None, model_version=CHAIN_VERSION,
                                      shapes=[shape_to_dict(s) for s in shapes], score=round(float(certainty), 4),
                                      review_state="pending"))
        written = save_chain_rows(workspace, chunk, rows, written, len(item_ids), ctx)
    return chain_result(models, names, thresholds, written, prelabelled, per_class, started)


def save_chain_rows(workspace, item_ids: list[int], rows: list, written: int, total: int, ctx: JobContext) -> int:
    """One chunk's merged pre-labels replace the chain's pending ones of those items; the count written so far."""
    from labelloop.services.assist.predictions import save_predictions

    with workspace.session() as session:
        _drop_pending_chain_predictions(session, item_ids)
        save_predictions(session, rows)
    written += len(rows)
    ctx.progress(written, total, "pre-labelling with the chain")
    return written


def chain_result(models: list[ModelInfo], names: list[str], thresholds: np.ndarray, written: int, prelabelled: int,
                 per_class: dict[str, int], started: float) -> dict[str, Any]:
    """What a chain run reports, whatever its micro-models' base."""
    return {"chain": [m.ref for m in models], "predictions": written, "prelabelled": prelabelled,
            "coverage": round(prelabelled / written, 4) if written else None, "prelabels_per_class": per_class,
            "thresholds": {n: (None if np.isinf(t) else float(t)) for n, t in zip(names, thresholds)},
            "seconds": round(time.perf_counter() - started, 3)}


def _drop_pending_chain_predictions(session, item_ids: list[int]) -> None:
    """A new chain run replaces the chain's pending pre-labels of these items (reviewed ones stay as history)."""
    from sqlalchemy import delete

    session.execute(delete(PredictionRow).where(PredictionRow.item_id.in_(item_ids), PredictionRow.model_id.is_(None),
                                                PredictionRow.model_version == CHAIN_VERSION,
                                                PredictionRow.review_state == "pending"))


@job_kind("chain-predict")
def chain_predict_job(workspace, ctx: JobContext) -> dict[str, Any]:
    """The project's chain (or `chain` given with the job) as one prediction job."""
    project = _project(workspace, ctx.params["project"])
    models, skipped = resolve_chain(workspace, project, ctx.params.get("chain"))
    if not models:
        raise InvalidInput("no micro-model of the chain is trained yet: " +
                           "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    item_ids = chain_items(workspace, project, ctx.params)
    # The versions are pinned here, so every chunk (on Ray) runs the same micro-models.
    pinned = [f"{m.kind}:{m.version}" for m in models]
    result = run_batches(workspace, "chain-predict", item_ids, {**ctx.params, "chain": pinned}, ctx,
                         message=f"pre-labelling with a chain of {len(models)} micro-model(s)")
    if result.get("executor") == "ray":  # the chunks' counts add up; their ratios and times do not
        result["coverage"] = round(result["prelabelled"] / result["predictions"], 4) if result["predictions"] else None
        result.pop("seconds", None)
    result["skipped"] = skipped
    no_prelabels = {class_of(m.kind): m.metrics.get("reason") for m in models if not m.metrics.get("ready")}
    result["no_prelabels"] = no_prelabels
    result["summary"] = "; ".join([
        f"chain of {len(models)} micro-model(s) pre-labelled {result['prelabelled']} of {result['predictions']} "
        f"item(s)", *(f"{k}: {v}" for k, v in {**skipped, **no_prelabels}.items())])
    ctx.log(result["summary"])
    return result


@batch_work("chain-predict")
def chain_predict_batch(workspace, item_ids: list[int], params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """The pinned chain (`params["chain"]`: micro:CLASS:VERSION entries) over these items: all of a job's, or one
    chunk of them on Ray; each item's merged pre-label replaces the chain's pending one, so a chunk run twice
    writes nothing twice."""
    project = _project(workspace, params["project"])
    models, _ = resolve_chain(workspace, project, params["chain"])
    if project.kind is ProjectKind.semantic:
        from labelloop.services.assist.micro_masks import predict_mask_chain

        return predict_mask_chain(workspace, project, models, item_ids, ctx)
    if project.kind is ProjectKind.detection:
        from labelloop.services.assist.micro_boxes import predict_box_chain

        return predict_box_chain(workspace, project, models, item_ids, ctx, params.get("target_precision"))
    return predict_chain(workspace, project, models, item_ids, ctx, params.get("target_precision"))


# --- state ----------------------------------------------------------------------------------------------------

def chain_state(workspace, project: ProjectInfo) -> dict[str, Any]:
    """Per class: examples, the micro-model in use and its held-out figures, ready or why not; the chain."""
    semantic = project.kind is ProjectKind.semantic
    boxes = project.kind is ProjectKind.detection
    if semantic:
        from labelloop.services.assist.micro_masks import (DEFAULT_MASK_MIN_EXAMPLES, foreground_classes, mask_rows,
                                                           why_not_trainable_mask)

        rows = mask_rows(workspace, project)
        every = examples_per_class(project, rows)
        counts = {n: every[n] for n in foreground_classes(project)}
    elif boxes:
        from labelloop.services.assist.micro_boxes import DEFAULT_BOX_MIN_EXAMPLES, box_rows, why_not_trainable_box

        rows = box_rows(workspace, project)
        counts = examples_per_class(project, rows)
    else:
        rows = labelled_items(workspace, project, shape_types=("class",))
        counts = examples_per_class(project, rows)
    chain = list(project.settings.get(SETTING) or [])
    chained = set()
    for entry in chain:
        try:
            chained.add(parse_entry(project, entry)[0])
        except LabelloopError:
            continue
    classes = []
    default_minimum = (DEFAULT_MASK_MIN_EXAMPLES if semantic else DEFAULT_BOX_MIN_EXAMPLES if boxes
                       else DEFAULT_MIN_EXAMPLES)
    for name in counts:
        found = versions(workspace, project, name)
        current = in_use(workspace, project, name)
        newest = found[-1] if found else None
        minimum = int(current.params.get("min_examples", default_minimum)) if current else default_minimum
        if current is None:
            why = (why_not_trainable_mask(name, counts[name], minimum) if semantic else
                   why_not_trainable_box(name, counts[name], minimum) if boxes else
                   why_not_trainable(name, counts[name], len(rows), minimum)) or "trainable; no micro-model trained yet"
        else:
            why = "" if current.metrics.get("ready") else current.metrics.get("reason", "")
        metrics = current.metrics if current else {}
        new_labels = (counts[name] - metrics.get("examples", 0)) if current else counts[name]
        classes.append({
            "class": name, "examples": counts[name], "model": current.ref if current else None,
            "model_id": current.id if current else None, "versions": len(found),
            "ready": bool(current and metrics.get("ready")), "why_not": why,
            "held_out_precision": metrics.get("held_out_precision"), "held_out_recall": metrics.get("held_out_recall"),
            "held_out_average_precision": metrics.get("held_out_average_precision"),
            "threshold": metrics.get("threshold"), "coverage": metrics.get("coverage"),
            "base": (current.params.get("base") if current else None),
            "held_out_iou": metrics.get("held_out_iou"), "held_out_map": metrics.get("held_out_map"),
            "new_examples_since": new_labels,
            "not_used": (f"{newest.ref}: {newest.metrics.get('self_validation')}"
                         if newest is not None and newest.status == "worse" else ""),
            "in_chain": name in chained,
        })
    return {"chain": chain, "classes": classes}


def project_micro_state(workspace, project: ProjectInfo) -> dict[str, Any] | None:
    """`chain_state` when the project has a chain or a micro-model, else None (nothing to show)."""
    from labelloop.services.assist.models import list_models

    if project.kind not in Micro.project_kinds:
        return None
    if not project.settings.get(SETTING) and not any(m.kind.startswith(PREFIX) for m in list_models(workspace, project)):
        return None
    return chain_state(workspace, project)
