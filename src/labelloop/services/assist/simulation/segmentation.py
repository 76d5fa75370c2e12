"""The instance task of the simulated annotator: each object its own mask (docs/simulate.md, "Instance").

- **A start item** (no model yet): every true object is drawn (`draw_mask`, 91 s; `draw_mask_assisted`, 34 s, is
  reported beside it as a cost variant).
- **A queued item**, shown with the model's objects (the U-Net's foreground split by its own seeded watershed, one
  polygon per object; pixel-rf's the same way): the shown objects are matched one to one to the true objects,
  greedily by mask IoU from the highest, same class, a pair counting from IoU >= 0.5. A matched object with
  IoU >= 0.9 is verified (`verify_box`, the cost model's only yes/no verification of a shown shape); one below 0.9
  is corrected at `mask_correction_per_px` per pixel of the outline of its wrong area (shown XOR true), or
  redrawn (`draw_mask`), whichever the cost model in use prices lower. Every other shown object is deleted
  (`delete_shape`), every other true object drawn (`draw_mask`). The stored label is the truth's objects.
- **Quality**: instance F1 at IoU >= 0.5 of the final labels against the truth, pooled over items (an item without
  a label misses every true object); the model's instance F1 the same way on the held-out items.
- **No auto-accept**: neither the U-Net nor pixel-rf has a calibrated rule for masks, so every item goes to a person.
- **Model**: the project's U-Net (or `--model pixel-rf`), trained each round with `--round-budget` as its
  `time_budget`; predictions are asked with `instances=watershed` (what `labelloop predict --instances watershed`
  does): without it both kinds give one mask per class, not objects."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from labelloop.domain import Mask, Polygon, ProjectKind, shape_from_dict
from labelloop.errors import InvalidInput
from labelloop.geometry import rle
from labelloop.services.assist.simulation.annotators import (CheapestOutcome, Outcome, Task, prelabels,
                                                             register_task)
from labelloop.services.assist.simulation.costs import CostModel
from labelloop.services.assist.simulation.semantic import outline

MATCH_IOU = 0.5  # a shown object is the true object's from this mask IoU on (as COCO's and DSB2018's F1 count)
VERIFY_FROM = 0.9  # at or above this IoU a matched object only needs looking at (the box task's threshold)
ORDER = ("verify_box", "mask_correction_per_px", "delete_shape", "draw_mask")  # how an outcome lists its actions


@dataclass
class Objects:
    """The objects of one item as an id image (0 = none, k = objects[k - 1]) and their class names; where objects
    overlap, the later one wins the pixel."""

    ids: np.ndarray
    labels: list[str]

    def areas(self) -> np.ndarray:
        return np.bincount(self.ids.ravel(), minlength=len(self.labels) + 1)[1:]


def objects_of(shapes: Iterable, size: tuple[int, int]) -> Objects:
    """Masks and polygons (shape objects or dicts) as an id image; a model's watershed polygons that share a class
    and an `instance` attribute (pieces of one object) are one object."""
    ids = np.zeros(size, np.int32)
    labels: list[str] = []
    seen: dict[tuple[str, int], int] = {}
    for shape in shapes:
        shape = shape_from_dict(shape) if isinstance(shape, dict) else shape
        if isinstance(shape, Mask):
            if tuple(shape.size) != tuple(size):
                raise InvalidInput(f"a mask of {shape.size[1]}x{shape.size[0]} on an item of {size[1]}x{size[0]}")
            region = rle.decode(shape)
        elif isinstance(shape, Polygon):
            region = rle.polygon_to_mask(shape, size)
        else:
            continue
        instance = (shape.attributes or {}).get("instance")
        key = (shape.label, int(instance)) if instance is not None else None
        if key is not None and key in seen:
            number = seen[key]
        else:
            labels.append(shape.label)
            number = len(labels)
            if key is not None:
                seen[key] = number
        ids[region] = number
    return Objects(ids, labels)


def _size(shapes: Iterable) -> tuple[int, int]:
    size = next((tuple(s.size) for s in shapes if isinstance(s, Mask)), None)
    if size is None:
        raise InvalidInput("an instance truth needs masks (the `instances` format: 16-bit label images, or coco "
                           "with RLE masks); this item's truth has none")
    return size


def match(shown: Objects, truth: Objects) -> list[tuple[int, int, float]]:
    """(shown index, true index, IoU) pairs, one to one, greedy by IoU from the highest, same class, IoU >= 0.5."""
    if not shown.labels or not truth.labels:
        return []
    n, m = len(shown.labels) + 1, len(truth.labels) + 1
    inter = np.bincount((shown.ids.astype(np.int64) * m + truth.ids).ravel(), minlength=n * m).reshape(n, m)[1:, 1:]
    union = shown.areas()[:, None] + truth.areas()[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    same = np.array(shown.labels)[:, None] == np.array(truth.labels)[None, :]
    iou = np.where(same, iou, 0.0)
    pairs, used_s, used_t = [], set(), set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        s, t = divmod(int(flat), iou.shape[1])
        if iou[s, t] < MATCH_IOU:
            break
        if s not in used_s and t not in used_t:
            used_s.add(s)
            used_t.add(t)
            pairs.append((s, t, float(iou[s, t])))
    return pairs


def wrong_outline(shown: Objects, s: int, truth: Objects, t: int) -> int:
    """Pixels of the outline of the area where shown object s and true object t disagree."""
    a, b = shown.ids == s + 1, truth.ids == t + 1
    found = ndimage.find_objects((a | b).astype(np.int8))
    if not found or found[0] is None:
        return 0
    box = found[0]
    return outline(a[box] ^ b[box])


def instance_counts(given: Objects, truth: Objects) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) of the given objects at IoU >= 0.5."""
    hits = len(match(given, truth))
    return hits, len(given.labels) - hits, len(truth.labels) - hits


def _listed(counts: dict[str, float]) -> list[tuple[str, float]]:
    return [(action, counts[action]) for action in ORDER if counts.get(action)]


@register_task
class InstanceTask(Task):
    name = "instance"
    project_kinds = (ProjectKind.instance,)
    default_model = "unet"
    quality = "instance F1 at IoU >= 0.5"
    quality_goal = 0.95  # issue 19: masks reach >= 0.95 of the from-scratch quality (1.0: drawn from the truth)
    budget_param = "time_budget"  # the U-Net stops at the round budget (or its --set epochs, whichever first)

    def check_params(self, project, model, params):
        if model != "unet":
            return
        from labelloop.ml.unet import UNetSegmenter
        from labelloop.services.assist.model_kinds.unet import settings

        try:
            UNetSegmenter(**settings({**params, "time_budget": 1})).validate_params()
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"--set: {exc}") from None

    def predict(self, workspace, project, model, item_ids, ctx):
        from labelloop.services.assist.model_kinds import get_model_kind

        return get_model_kind(model.kind).predict(workspace, project, model, item_ids, {"instances": "watershed"}, ctx)

    def _truth(self, truth: list) -> tuple[list, Objects]:
        shapes = [s for s in truth if isinstance(s, (Mask, Polygon))]
        return shapes, objects_of(shapes, _size(shapes))

    def scratch(self, truth):
        shapes, objects = self._truth(truth)
        return Outcome(shapes, _listed({"draw_mask": len(objects.labels)}))

    def annotate(self, shown, truth):
        shapes, wanted = self._truth(truth)
        offered = [s for s in prelabels(shown) if s.get("type") in ("mask", "polygon")]
        if not offered:
            return self.scratch(truth)
        given = objects_of(offered, wanted.ids.shape)
        pairs = match(given, wanted)
        counts = {"verify_box": sum(1 for _, _, iou in pairs if iou >= VERIFY_FROM),
                  "delete_shape": len(given.labels) - len(pairs), "draw_mask": len(wanted.labels) - len(pairs)}
        poor = [wrong_outline(given, s, wanted, t) for s, t, iou in pairs if iou < VERIFY_FROM]
        if not poor:
            return Outcome(shapes, _listed(counts))
        # Per poor object: correct its outline, or redraw it; the cost model in use decides object by object, so
        # the options are "correct the k with the shortest wrong outlines, redraw the rest" for every k.
        poor.sort()
        options = []
        for k in range(len(poor), -1, -1):
            option = dict(counts)
            option["mask_correction_per_px"] = sum(poor[:k])
            option["draw_mask"] += len(poor) - k
            options.append(_listed(option))
        return CheapestOutcome(shapes, options[0], options=options)

    def dataset_quality(self, labels, truth):
        tp = fp = fn = 0
        for item_id, shapes in truth.items():
            _, wanted = self._truth(shapes)
            given = objects_of(labels.get(item_id) or [], wanted.ids.shape)
            hit, false, missed = instance_counts(given, wanted)
            tp, fp, fn = tp + hit, fp + false, fn + missed
        return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0

    def model_quality(self, workspace, project, model, item_ids, truth):
        """Instance F1 at IoU >= 0.5 of each round's model on the held-out items (in their own scratch project),
        every object it predicts counted."""
        from labelloop.jobs.registry import JobContext
        from labelloop.services.assist.predictions import latest_predictions_for_items

        if not item_ids or model is None:
            return None
        self.predict(workspace, project, model, list(item_ids), JobContext(0, {}, lambda d, t, m: None, lambda m: None))
        with workspace.session() as session:
            rows = latest_predictions_for_items(session, item_ids)
        return self.dataset_quality({i: list(rows[i].shapes) for i in item_ids if i in rows},
                                    {i: truth[i] for i in item_ids})

    def cost_variants(self, costs: CostModel) -> dict[str, CostModel]:
        """The same actions with every mask drawn with a modern assisted tool (issue 19: 34 s beside 91 s)."""
        seconds = {**costs.seconds, "draw_mask": costs.cost("draw_mask_assisted")}
        return {"draw_mask_assisted": CostModel(f"{costs.name}, draw_mask at {seconds['draw_mask']:g} s", seconds,
                                                dict(costs.sources))}
