"""Simulated annotators, one `Task` per project kind: how the truth is compared with what a model shows, which
actions of the cost model turn the shown pre-labels into the truth, how the task's model is trained and asked, and
how the quality of a dataset and of a model is measured. The runner (runner.py) is the same for every task.

Adding a task is one subclass and one `@register_task` line (docs/simulate.md, "Task interface")."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from labelloop.domain import ClassLabel, ProjectKind, Shape
from labelloop.errors import InvalidInput
from labelloop.jobs.registry import JobContext
from labelloop.services.assist.simulation.costs import CostModel

log = logging.getLogger(__name__)
TASKS: dict[ProjectKind, type] = {}


@dataclass
class Outcome:
    """What the simulated annotator wrote for one item, and the actions it took: (action, quantity) pairs whose
    seconds are quantity x the cost model's figure (a quantity is 1 per click-like action; pixels of outline for
    mask corrections)."""

    shapes: list[Shape]
    actions: list[tuple[str, float]] = field(default_factory=list)

    def seconds(self, costs: CostModel) -> float:
        return sum(costs.cost(action) * quantity for action, quantity in self.actions)


class CheapestOutcome(Outcome):
    """An outcome a person could reach in more than one way (correct the pre-label, or redraw it): the cost model
    in use picks the cheapest when its seconds are counted, and `actions` then names that one."""

    def __init__(self, shapes: list[Shape], actions: list[tuple[str, float]], *,
                 options: list[list[tuple[str, float]]]):
        super().__init__(shapes, list(actions))
        self.options = options

    def seconds(self, costs: CostModel) -> float:
        totals = [sum(costs.cost(a) * q for a, q in option) for option in self.options]
        best = totals.index(min(totals))  # ties: the first option
        self.actions = list(self.options[best])
        return float(totals[best])


def register_task(cls: type) -> type:
    for kind in cls.project_kinds:
        TASKS[kind] = cls
    return cls


def task_for(kind: ProjectKind) -> Task:
    _load()
    if kind not in TASKS:
        raise InvalidInput(f"simulate does not support {kind.value} projects yet; it supports "
                           f"{', '.join(k.value for k in TASKS)}")
    return TASKS[kind]()


# Modules whose import registers more tasks (semantic, instance, detection): one line each; a module not written
# yet is skipped.
TASK_MODULES: tuple[str, ...] = ("labelloop.services.assist.simulation.segmentation",
                                 "labelloop.services.assist.simulation.semantic",
                                 "labelloop.services.assist.simulation.detection")


def _load() -> None:
    import importlib

    for module in TASK_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def prelabels(shown: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The shapes of a prediction the labelling view shows as pre-labels."""
    return [s for s in shown if (s.get("attributes") or {}).get("prelabel") is not False]


class Task:
    """One project kind's simulated annotator and measurements. Subclasses set the class attributes and
    implement the methods; `train`/`predict` default to the model-kind registry."""

    name: ClassVar[str]
    project_kinds: ClassVar[tuple[ProjectKind, ...]]
    default_model: ClassVar[str]
    quality: ClassVar[str]  # what dataset_quality measures, in words ("accuracy", "box F1 at IoU >= 0.5", ...)
    quality_goal: ClassVar[float] = 0.98
    budget_param: ClassVar[str | None] = "time_budget"  # the model kind's training-time option, if it has one
    chains: ClassVar[bool] = False  # `--model micro` runs the chain of every class's micro-model each round
    grids: ClassVar[bool] = False  # `--grid N` labels grid pages of the model's suggestions (annotate_page)

    def check_params(self, project, model: str, params: dict[str, Any]) -> None:
        """Refuse (InvalidInput) model parameters (`--set`) the model kind would refuse, before anything runs."""

    def prepare(self, workspace, project, model: str, ctx: JobContext) -> None:
        """Work done once on the base copy before any run (e.g. embeddings every run would otherwise repeat)."""

    def scratch(self, truth: list[Shape]) -> Outcome:
        """Label the item from nothing (no model)."""
        raise NotImplementedError

    def annotate(self, shown: list[dict[str, Any]], truth: list[Shape]) -> Outcome:
        """Turn the shown pre-labels (shape dicts) into the truth with the cheapest actions."""
        raise NotImplementedError

    def annotate_page(self, suggested: list[str | None], truths: list[list[Shape]]) -> list[Outcome]:
        """Label a grid page whose items show these suggestions (None: nothing shown): one look over the page,
        then a fix of each item whose suggestion is not its truth (tasks with `grids`)."""
        raise NotImplementedError

    def train(self, workspace, project, model: str, params: dict[str, Any], ctx: JobContext):
        from labelloop.services.assist.model_kinds import get_model_kind

        return get_model_kind(model).train(workspace, project, params, ctx)

    def predict(self, workspace, project, model, item_ids: list[int], ctx: JobContext) -> dict[str, Any]:
        from labelloop.services.assist.model_kinds import get_model_kind

        return get_model_kind(model.kind).predict(workspace, project, model, item_ids, {}, ctx)

    def auto_accepted(self, shown: list[dict[str, Any]]) -> list[Shape] | None:
        """The label the project's rule accepts without a person (pre-labels above the calibrated threshold),
        or None when the item must go to a person."""
        return None

    def dataset_quality(self, labels: dict[int, list[Shape] | None], truth: dict[int, list[Shape]]) -> float:
        """Quality of the final labels of every pool item against the truth (an item without a label counts as
        wrong)."""
        raise NotImplementedError

    def model_quality(self, workspace, project, model, item_ids: list[int], truth: dict[int, list[Shape]]
                      ) -> float | None:
        """The model's quality on held-out items (never labelled in the simulation)."""
        return None

    def cost_variants(self, costs: CostModel) -> dict[str, CostModel]:
        """Other prices of the same actions the output reports beside the run's (e.g. boxes drawn the traditional
        way); none by default."""
        return {}


@dataclass(frozen=True)
class Chain:
    """What a round of `simulate --model micro` trained: every class's micro-model in use, run as the project's chain
    (`predict --chain`). It stands where the runner expects a model: its pre-labels carry no model id (`id` None),
    and they name the micro-model of each class."""

    models: tuple
    target_precision: float | None = None
    id: None = None
    kind: str = "micro"
    params: dict = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return "chain of " + ", ".join(m.ref for m in self.models)


def train_chain(workspace, project, params: dict[str, Any], ctx: JobContext) -> Chain:
    """Train every class's micro-model on the embeddings (a class whose examples did not change keeps its version,
    as `train --model micro --all-classes` does) and return the chain of those in use; InvalidInput when no class has
    one yet (the round then goes on without a model)."""
    from labelloop.services.assist.micro import resolve_chain, train_micro

    train_micro(workspace, project, {**params, "all_classes": True, "base": "classifier"}, ctx)
    models, skipped = resolve_chain(workspace, project, [f"micro:{name}" for name in project.class_names()])
    if not models:
        raise InvalidInput("no class has a micro-model yet: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    return Chain(tuple(models), params.get("target_precision"))


@register_task
class ClassificationTask(Task):
    name = "classification"
    project_kinds = (ProjectKind.classification,)
    default_model = "classifier"
    quality = "accuracy"
    budget_param = None  # logistic regression has no time option: the runner checks the budget instead
    chains = True
    grids = True

    def prepare(self, workspace, project, model, ctx):
        from labelloop.services.assist.embeddings import embed_items
        from labelloop.services.assist.model_kinds import get_model_kind
        from labelloop.services.data.project_data import item_pages

        # a chain of micro-models (`--model micro`) reads the classifier's embeddings
        choice = get_model_kind("classifier" if model == "micro" else model).settings(project, {})
        if choice["head"] == "logreg":
            ids = [i for page in item_pages(workspace, project.id, ids_only=True) for i in page]
            embed_items(workspace, ids, model_name=choice["encoder"], weights=choice["weights"], progress=ctx.progress)

    def train(self, workspace, project, model, params, ctx):
        if model != "micro":
            return super().train(workspace, project, model, params, ctx)
        return train_chain(workspace, project, params, ctx)

    def predict(self, workspace, project, model, item_ids, ctx):
        if not isinstance(model, Chain):
            return super().predict(workspace, project, model, item_ids, ctx)
        from labelloop.services.assist.micro import predict_chain

        return predict_chain(workspace, project, list(model.models), item_ids, ctx,
                             target_precision=model.target_precision)

    def scratch(self, truth):
        return Outcome([ClassLabel(truth[0].label)], [("classify", 1)])

    def annotate(self, shown, truth):
        wanted = truth[0].label
        offered = [s["label"] for s in prelabels(shown) if s.get("type") == "class"]
        if not offered:
            return self.scratch(truth)
        if offered[0] == wanted:
            return Outcome([ClassLabel(wanted)], [("confirm_class", 1)])
        return Outcome([ClassLabel(wanted)], [("change_class", 1)])

    def annotate_page(self, suggested, truths):
        outcomes = []
        for k, (offered, truth) in enumerate(zip(suggested, truths)):
            actions = [("grid_page", 1)] if k == 0 else []  # the page is looked over once
            if offered != truth[0].label:
                actions.append(("grid_fix", 1))
            outcomes.append(Outcome([ClassLabel(truth[0].label)], actions))
        return outcomes

    def auto_accepted(self, shown):
        offered = [s["label"] for s in prelabels(shown) if s.get("type") == "class"]
        return [ClassLabel(offered[0])] if len(offered) == 1 else None

    def dataset_quality(self, labels, truth):
        if not truth:
            return 0.0
        right = sum(1 for i, t in truth.items() if labels.get(i) and labels[i][0].label == t[0].label)
        return right / len(truth)

    def model_quality(self, workspace, project, model, item_ids, truth):
        from labelloop.services.assist.model_kinds import get_model_kind
        from labelloop.services.assist.models import load_estimator

        if not item_ids or model.params.get("head") != "logreg":
            return None
        prelabeller = load_estimator(workspace, model)
        proba = prelabeller.predict_proba(get_model_kind("classifier")._inputs(workspace, item_ids, dict(model.params)))
        names = list(prelabeller.class_names)
        right = sum(names[int(k)] == truth[i][0].label for i, k in zip(item_ids, proba.argmax(axis=1)))
        return right / len(item_ids)
