"""Agreement between independent annotators of the same item (projects with `overlap` ≥ 2).

Per item, the newest submitted revision of each of the first two human authors is compared:
class labels by Jaccard overlap of the label sets; boxes, polygons and instance masks by F1 of a greedy
same-class match at IoU ≥ 0.5; semantic masks and scribbles by the mean IoU of each class's pixels."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
from sqlalchemy import select

from labelloop.domain import Box, ClassLabel, Mask, Polygon, ProjectKind, Scribble, shape_from_dict
from labelloop.services.data.project_data import item_pages
from labelloop.services.projects import ProjectInfo
from labelloop.store.tables import AnnotationRow

MATCH_IOU = 0.5
WORST = 20


def _rle(shape, height: int, width: int) -> dict:
    from pycocotools import mask as cocomask

    if isinstance(shape, Box):
        box = [[shape.x0, shape.y0, shape.width, shape.height]]
        return cocomask.merge(cocomask.frPyObjects(np.array(box, dtype=float), height, width))
    if isinstance(shape, Polygon):
        parts = [[c for point in part for c in point] for part in shape.parts]
        return cocomask.merge(cocomask.frPyObjects(parts, height, width))
    return {"size": list(shape.size), "counts": shape.counts.encode("ascii")}


def _iou_matrix(a: list, b: list, height: int, width: int) -> np.ndarray:
    from pycocotools import mask as cocomask

    if all(isinstance(s, Box) for s in a + b):
        boxes_a = np.array([[s.x0, s.y0, s.width, s.height] for s in a], dtype=float)
        boxes_b = np.array([[s.x0, s.y0, s.width, s.height] for s in b], dtype=float)
        return np.asarray(cocomask.iou(boxes_a, boxes_b, [0] * len(b)))
    return np.asarray(cocomask.iou([_rle(s, height, width) for s in a], [_rle(s, height, width) for s in b], [0] * len(b)))


def _matched_f1(a: list, b: list, height: int, width: int) -> float:
    if not a and not b:
        return 1.0
    matches = 0
    for label in {s.label for s in a} & {s.label for s in b}:
        left, right = [s for s in a if s.label == label], [s for s in b if s.label == label]
        iou = _iou_matrix(left, right, height, width)
        while iou.size and iou.max() >= MATCH_IOU:
            i, j = np.unravel_index(int(iou.argmax()), iou.shape)
            matches += 1
            iou[i, :], iou[:, j] = -1, -1
    return 2 * matches / (len(a) + len(b))


def _pixel_iou(a: list, b: list, height: int, width: int) -> float:
    from pycocotools import mask as cocomask

    labels = {s.label for s in a} | {s.label for s in b}
    if not labels:
        return 1.0
    scores = []
    for label in labels:
        left = [_rle(s, height, width) for s in a if s.label == label]
        right = [_rle(s, height, width) for s in b if s.label == label]
        if not left or not right:
            scores.append(0.0)
            continue
        scores.append(float(cocomask.iou([cocomask.merge(left)], [cocomask.merge(right)], [0])[0][0]))
    return float(np.mean(scores))


def score_pair(kind: ProjectKind, a: list, b: list, height: int, width: int) -> float:
    """1.0 when two annotators said the same thing about an item, 0.0 when nothing matches."""
    if kind in (ProjectKind.classification, ProjectKind.multilabel):
        left, right = {s.label for s in a if isinstance(s, ClassLabel)}, {s.label for s in b if isinstance(s, ClassLabel)}
        return 1.0 if not left | right else len(left & right) / len(left | right)
    if kind is ProjectKind.semantic:
        return _pixel_iou([s for s in a if isinstance(s, (Mask, Scribble, Polygon))],
                          [s for s in b if isinstance(s, (Mask, Scribble, Polygon))], height, width)
    return _matched_f1(a, b, height, width)


def _classes(shapes: list[dict]) -> list[str]:
    return sorted(s["label"] for s in shapes if s.get("type") == "class")


def class_kappa(pairs: list[tuple[list[str], list[str]]], project: ProjectInfo) -> float | None:
    """Cohen's kappa of two annotators' classes over items: on the class (multi-class; an item left without a
    class counts as its own category), or the mean over classes of the kappa on present/absent (multi-label).
    None where it is undefined (every label the same on both sides)."""
    from sklearn.metrics import cohen_kappa_score

    if not pairs:
        return None
    with np.errstate(all="ignore"):
        if project.kind is ProjectKind.multilabel:
            values = []
            for name in project.class_names():
                a = [name in first for first, _ in pairs]
                b = [name in second for _, second in pairs]
                if len(set(a) | set(b)) > 1:
                    values.append(cohen_kappa_score(a, b))
            values = [v for v in values if np.isfinite(v)]
            return round(float(np.mean(values)), 4) if values else None
        a = [first[0] if first else "" for first, _ in pairs]
        b = [second[0] if second else "" for _, second in pairs]
        if len(set(a) | set(b)) < 2:
            return None
        value = cohen_kappa_score(a, b)
    return round(float(value), 4) if np.isfinite(value) else None


def project_agreement(workspace, project: ProjectInfo) -> dict[str, Any]:
    """Mean agreement over items with two annotators, per pair of annotators, and the items that agree least."""
    per_pair: dict[str, list[float]] = defaultdict(list)
    scored: list[tuple[float, int, str, str]] = []
    class_pairs: dict[str, list[tuple[list[str], list[str]]]] = defaultdict(list)  # for Cohen's kappa
    for rows in item_pages(workspace, project.id):
        sizes = {r.id: (r.height, r.width) for r in rows}
        with workspace.session() as session:
            revisions = session.execute(
                select(AnnotationRow.item_id, AnnotationRow.author, AnnotationRow.shapes)
                .where(AnnotationRow.item_id.in_(list(sizes)), AnnotationRow.state == "submitted",
                       AnnotationRow.source == "human")
                .order_by(AnnotationRow.item_id, AnnotationRow.version)).all()
        by_item: dict[int, dict[str, list]] = defaultdict(dict)
        for item_id, author, shapes in revisions:
            by_item[item_id][author] = shapes  # later versions replace earlier ones; dict order = first submission
        for item_id, authors in by_item.items():
            if len(authors) < 2:
                continue
            (first, a), (second, b) = list(authors.items())[:2]
            height, width = sizes[item_id]
            score = score_pair(project.kind, [shape_from_dict(s) for s in a], [shape_from_dict(s) for s in b],
                               height, width)
            per_pair[" & ".join(sorted((first, second)))].append(score)
            scored.append((score, item_id, first, second))
            if project.kind in (ProjectKind.classification, ProjectKind.multilabel):
                pair_name = " & ".join(sorted((first, second)))
                ordered = (a, b) if first <= second else (b, a)
                class_pairs[pair_name].append((_classes(ordered[0]), _classes(ordered[1])))
    scores = [s for s, *_ in scored]
    every = [pair for pairs in class_pairs.values() for pair in pairs]
    kappas = {name: class_kappa(pairs, project) for name, pairs in class_pairs.items()}
    return {
        "method": "class-set Jaccard" if project.kind in (ProjectKind.classification, ProjectKind.multilabel)
        else "mean per-class IoU" if project.kind is ProjectKind.semantic else f"F1 of matches at IoU ≥ {MATCH_IOU}",
        "overlap": int(project.settings.get("overlap", 1)),
        "items_compared": len(scores),
        "mean": float(np.mean(scores)) if scores else None,
        # Cohen's kappa (classes only): agreement beyond what the two annotators' class frequencies give by chance
        "kappa": class_kappa(every, project) if every else None,
        "pairs": {pair: {"items": len(v), "mean": float(np.mean(v)), **({"kappa": kappas[pair]} if pair in kappas
                                                                        else {})}
                  for pair, v in sorted(per_pair.items())},
        "least_agreement": [{"item_id": i, "authors": [a, b], "score": s} for s, i, a, b in sorted(scored)[:WORST]],
    }
