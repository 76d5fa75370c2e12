"""The simulation protocol (docs/simulate.md): on a scratch copy of the project, `start` items are labelled from
scratch (seeded random), then each round trains the model, pre-labels and recalibrates, auto-accepts what the
project's rule allows, ranks the queue by the strategy, and the simulated annotator takes `batch` items from the
project's own work queue (`claim_next`, the code behind GET /next and the grid) and turns the pre-labels it sees
into the truth with the cheapest actions of the cost model.

`plan_simulation` checks every input (truth, cost model, strategies, model kind, numbers) and runs nothing;
`run_simulation` runs a plan. Everything in the result except its `timing` parts follows from the seeds."""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labelloop.errors import InvalidInput
from labelloop.jobs.registry import JobContext
from labelloop.services.assist.simulation.annotators import Outcome, Task, task_for
from labelloop.services.assist.simulation.costs import CostModel, load_cost_model
from labelloop.services.assist.simulation.truth import Truth, read_truth
from labelloop.services.labelling.strategies import check_strategy
from labelloop.services.projects import ProjectInfo, get_project

log = logging.getLogger(__name__)
Progress = Callable[[int, int | None, str], None]
USER = "simulated-annotator"
HELD_OUT = 0.2  # share of the matched items kept apart to measure the model on
MIN_HELD_OUT_POOL = 50  # below this many matched items nothing is held out (model quality is then not reported)
DEFAULT_ROUND_BUDGET = 120.0


@dataclass
class SimulationPlan:
    project: ProjectInfo
    truth: Truth
    task: Task
    model: str
    costs: CostModel
    strategies: list[str]
    seeds: list[int]
    start: int
    batch: int
    rounds: int | None  # None: until done
    round_budget: float
    target_precision: float | None
    out: Path | None = None
    held_out: float = HELD_OUT
    model_params: dict[str, Any] = field(default_factory=dict)  # the model kind's own options (`--set key=value`)
    grid: int | None = None  # label on grid pages of this many of the classifier's suggestions (4, 6 or 9)
    from_previous: bool = False  # each round fine-tunes the round before's model (kinds with `from`: the detector)

    def to_dict(self) -> dict[str, Any]:
        return {"project": self.project.name, "kind": self.project.kind.value, "task": self.task.name,
                "model": self.model, "strategies": self.strategies, "seeds": self.seeds, "start": self.start,
                "batch": self.batch, "rounds": self.rounds, "until_done": self.rounds is None,
                "round_budget_seconds": self.round_budget, "target_precision": self.target_precision,
                "held_out_share": self.held_out, "quality": self.task.quality, "quality_goal": self.task.quality_goal,
                "model_params": dict(self.model_params), "grid": self.grid, "from_previous": self.from_previous}


def _positive(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInput(f"{name} {value!r}: give a whole number >= {minimum}")
    return value


def plan_simulation(workspace, name: str, truth: str | Path, *, format: str = "auto", model: str | None = None,
                    strategy: str | None = None, compare: Sequence[str] | str | None = None, start: int = 20,
                    batch: int = 20, until_done: bool = False, rounds: int | None = None,
                    round_budget: str | float | None = None, target_precision: float | None = None,
                    seeds: Sequence[int] | str = (0,), cost_model: str | Path | None = "default",
                    out: str | Path | None = None, model_params: dict[str, Any] | None = None,
                    grid: int | None = None, from_previous: bool = False) -> SimulationPlan:
    """Check everything a simulation needs; raises InvalidInput (and changes nothing) on the first problem."""
    from labelloop.services.assist.model_kinds import get_model_kind
    from labelloop.services.assist.model_kinds.options import parse_duration

    with workspace.session() as session:
        project = get_project(session, name)
    task = task_for(project.kind)
    model = model or task.default_model
    kind = get_model_kind(model)
    if project.kind not in kind.project_kinds:
        raise InvalidInput(f"--model {model}: it serves {', '.join(k.value for k in kind.project_kinds)} projects; "
                           f"{project.name!r} is a {project.kind.value} project")
    if model == "micro" and not task.chains:
        raise InvalidInput(f"--model micro: the simulated annotator runs chains of micro-models on classification "
                           f"projects; {project.name!r} is a {project.kind.value} project")
    if isinstance(compare, str):
        compare = [c.strip() for c in compare.split(",") if c.strip()]
    default = project.settings.get("sampling")
    chosen = [strategy or (default if default not in (None, "shuffled", "sequential") else "random"),
              *(compare or [])]
    strategies = list(dict.fromkeys(check_strategy(s) for s in chosen))
    if isinstance(seeds, str):
        try:
            seeds = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            raise InvalidInput(f"--seeds {seeds!r}: give whole numbers separated by commas, e.g. 0,1,2") from None
    seeds = [_positive("--seeds", int(s), 0) for s in seeds]
    if not seeds:
        raise InvalidInput("--seeds: give at least one seed")
    _positive("--start", start, 0)
    _positive("--batch", batch)
    if grid is not None:
        from labelloop.services.assist.clusters import PAGE_SIZES

        if grid not in PAGE_SIZES:
            raise InvalidInput(f"--grid {grid}: a grid page holds {', '.join(map(str, PAGE_SIZES))} images")
        if not task.grids or model == "micro":
            raise InvalidInput(f"--grid: grid pages of suggestions serve the classifier on single-label "
                               f"classification projects; {project.name!r} is a {project.kind.value} project"
                               + (" and --model micro runs a chain" if task.grids else ""))
    if from_previous and not getattr(kind, "fine_tunes", False):
        raise InvalidInput(f"--from-previous: the {model} kind trains anew each time (it has no --from); the "
                           f"detector fine-tunes its previous version")
    if until_done and rounds is not None:
        raise InvalidInput("give --until-done or --rounds N, not both")
    if rounds is not None:
        _positive("--rounds", rounds)
    if target_precision is not None and not 0.5 <= float(target_precision) < 1:
        raise InvalidInput(f"--target-precision {target_precision}: must lie in [0.5, 1)")
    budget = DEFAULT_ROUND_BUDGET if round_budget is None else parse_duration(round_budget)
    model_params = _model_params(model_params, task)
    task.check_params(project, model, model_params)
    costs = load_cost_model(cost_model)
    truth_read = read_truth(workspace, project, truth, format)
    pool_size = len(truth_read.shapes) - _held_out_count(len(truth_read.shapes), HELD_OUT)
    if start > pool_size:
        raise InvalidInput(f"--start {start}: only {pool_size} items are in the pool (items with a truth, less the "
                           "held-out part)")
    return SimulationPlan(project, truth_read, task, model, costs, strategies, list(seeds), start, batch, rounds,
                          budget, None if target_precision is None else float(target_precision),
                          Path(out) if out else None, model_params=model_params, grid=grid,
                          from_previous=bool(from_previous))


def _model_params(params: dict[str, Any] | None, task: Task) -> dict[str, Any]:
    """The model kind's own options for every round's training; the ones the simulation sets itself are refused."""
    params = dict(params or {})
    own = {"seed": "--seeds", "target_precision": "--target-precision", "resume": None, "from": "--from-previous"}
    if task.budget_param:
        own[task.budget_param] = "--round-budget"
    taken = [k for k in params if k in own]
    if taken:
        hints = ", ".join(f"{k} ({'give ' + own[k] if own[k] else 'each round trains anew or from the last'})"
                          for k in taken)
        raise InvalidInput(f"--set {hints}: the simulation sets these itself")
    return params


def _held_out_count(matched: int, share: float) -> int:
    return int(round(matched * share)) if matched >= MIN_HELD_OUT_POOL else 0


@dataclass
class _Run:
    """One (strategy, seed) run's running totals."""

    human_seconds: float = 0.0
    human_items: int = 0
    actions: Counter = field(default_factory=Counter)
    human: dict[int, list] = field(default_factory=dict)  # scratch item id -> the person's shapes
    auto: dict[int, list] = field(default_factory=dict)  # item id -> the pre-label the rule accepts now
    pages: int = 0  # grid pages labelled (`grid`)

    @property
    def labels(self) -> dict[int, list]:
        """The dataset as an export would give it now: a person's label wins over a model's."""
        return {**self.auto, **self.human}


def run_simulation(workspace, plan: SimulationPlan, progress: Progress | None = None) -> dict[str, Any]:
    """Run every (strategy, seed) of the plan on scratch copies; returns the JSON-ready result."""
    from labelloop.services.assist.simulation.report import summarise
    from labelloop.services.assist.simulation.scratch import scratch_copy

    progress = progress or (lambda done, total, message: None)
    ctx = JobContext(0, {}, lambda d, t, m: None, log.info)
    started = time.perf_counter()
    matched = sorted(plan.truth.shapes)
    base = scratch_copy(workspace, plan.project, matched, [], {})  # the real workspace is read here, once
    try:
        prepare_started = time.perf_counter()
        progress(0, None, "preparing the scratch copy")
        plan.task.prepare(base.workspace, base.project, plan.model, ctx)
        prepare_seconds = time.perf_counter() - prepare_started
        truth = {base.item_map[i]: shapes for i, shapes in plan.truth.shapes.items()}
        runs, total, done = [], len(plan.strategies) * len(plan.seeds), 0
        for strategy in plan.strategies:
            for seed in plan.seeds:
                progress(done, total, f"{strategy}, seed {seed}")
                runs.append(_run_one(base, plan, truth, strategy, seed,
                                     lambda m, s=strategy, d=seed: progress(done, total, f"{s}, seed {d}: {m}")))
                done += 1
        progress(total, total, "done")
    finally:
        base.close()
    result = {"plan": plan.to_dict(), "cost_model": plan.costs.to_dict(), "truth": plan.truth.report(),
              "runs": runs, "summary": summarise(runs, plan),
              "timing": {"prepare_seconds": round(prepare_seconds, 2),
                         "wall_seconds": round(time.perf_counter() - started, 2)}}
    if plan.out is not None:
        from labelloop.services.assist.simulation.report import write_outputs

        result["files"] = write_outputs(result, plan.out)
    return result


def _run_one(base, plan: SimulationPlan, truth: dict[int, list], strategy: str, seed: int,
             say: Callable[[str], None]) -> dict[str, Any]:
    import numpy as np

    from labelloop.services.assist.simulation.scratch import scratch_copy
    from labelloop.services.labelling.users import create_user

    wall = time.perf_counter()
    rng = np.random.default_rng(seed)
    ids = sorted(truth)
    held_ids = sorted(rng.choice(ids, _held_out_count(len(ids), plan.held_out), replace=False).tolist())
    held = set(held_ids)
    pool_ids = [i for i in ids if i not in held]
    settings = {"sampling": strategy, "retrain_every": 0, "overlap": 1}
    if plan.target_precision is not None:
        settings["target_precision"] = plan.target_precision
    scratch = scratch_copy(base.workspace, base.project, pool_ids, held_ids, settings)
    try:
        ws, project = scratch.workspace, scratch.project
        pool_truth = {scratch.item_map[i]: truth[i] for i in pool_ids}
        held_truth = {scratch.item_map[i]: truth[i] for i in held_ids}
        with ws.session() as session:
            user = create_user(session, USER)
        run = _Run()
        task, costs = plan.task, plan.costs
        scratch_seconds, scratch_actions = 0.0, Counter()
        for t in pool_truth.values():
            outcome = task.scratch(t)
            scratch_seconds += outcome.seconds(costs)
            for action, quantity in outcome.actions:  # read after seconds(): a CheapestOutcome names its choice then
                scratch_actions[action] += quantity
        names = _source_names(ws, pool_truth)
        first = sorted(rng.choice(sorted(pool_truth), min(plan.start, len(pool_truth)), replace=False).tolist())
        for item_id in first:
            _label(ws, project, item_id, task.scratch(pool_truth[item_id]), user.id, run, costs)
        points, rounds_run, timings = [], 0, []
        model = None
        while True:
            open_items = [i for i in sorted(pool_truth) if i not in run.human]  # auto-accepted ones are asked again
            round_timing: dict[str, Any] = {}
            if open_items:
                model, note = _retrain(ws, project, plan, seed, open_items, run, round_timing, previous=model)
                if note:
                    say(note)
            quality = task.dataset_quality(run.labels, pool_truth)
            model_quality = (task.model_quality(ws, scratch.held_out, model, sorted(held_truth), held_truth)
                             if model is not None and held_truth else None)
            points.append({"round": rounds_run, "human_labelled": run.human_items, "auto_accepted": len(run.auto),
                           "human_seconds": round(run.human_seconds, 3), "dataset_quality": round(quality, 4),
                           "model_quality": None if model_quality is None else round(model_quality, 4),
                           "model": model.ref if model is not None else None, "actions": dict(sorted(run.actions.items()))})
            timings.append(round_timing)
            say(f"round {rounds_run}: {run.human_items} labelled by hand, {len(run.auto)} auto-accepted, "
                f"quality {quality:.3f}")
            if not _unlabelled(run, pool_truth) or (plan.rounds is not None and rounds_run >= plan.rounds):
                break
            taken = _label_batch(ws, project, plan, pool_truth, user.id, run)
            rounds_run += 1
            if not taken:  # the queue handed out nothing although items are open: nothing more a person can do
                break
        wrong_auto = sum(1 for i, shapes in run.auto.items()
                         if task.dataset_quality({i: shapes}, {i: pool_truth[i]}) < 1)
        final = points[-1]
        return {
            "strategy": strategy, "seed": seed, "pool": len(pool_truth), "held_out": len(held_truth),
            "start_items": [names[i] for i in first][:50],
            "human_seconds": final["human_seconds"], "scratch_seconds": round(scratch_seconds, 3),
            "effort_ratio": round(scratch_seconds / final["human_seconds"], 3) if final["human_seconds"] else None,
            "dataset_quality": final["dataset_quality"], "model_quality": final["model_quality"],
            "human_labelled": run.human_items, "auto_accepted": len(run.auto), "auto_accepted_wrong": wrong_auto,
            "grid_pages": run.pages,
            "unlabelled": len(_unlabelled(run, pool_truth)), "rounds": rounds_run,
            "actions": dict(sorted(run.actions.items())),
            "seconds_to_goal": _seconds_to(points, task.quality_goal),
            "cost_variants": {name: _repriced(variant, scratch_actions, points, task.quality_goal)
                              for name, variant in task.cost_variants(costs).items()},
            "curve": points,
            "timing": {"wall_seconds": round(time.perf_counter() - wall, 2), "rounds": timings},
        }
    finally:
        scratch.close()


def _repriced(costs: CostModel, scratch_actions: Counter, points: list[dict[str, Any]], goal: float
              ) -> dict[str, Any]:
    """A run's totals with the same actions priced by another cost model (the task's `cost_variants`)."""
    def price(actions) -> float:
        return round(sum(costs.cost(a) * n for a, n in actions.items()), 3)

    human, scratch = price(points[-1]["actions"]), price(scratch_actions)
    reached = next((p for p in points if p["dataset_quality"] >= goal), None)
    to_goal = price(reached["actions"]) if reached is not None else None
    return {"cost_model": costs.name, "seconds": dict(costs.seconds), "human_seconds": human,
            "scratch_seconds": scratch, "effort_ratio": round(scratch / human, 3) if human else None,
            "seconds_to_goal": to_goal, "effort_ratio_at_goal": round(scratch / to_goal, 3) if to_goal else None}


def _source_names(ws, truth: dict[int, list]) -> dict[int, str]:
    from sqlalchemy import select

    from labelloop.store.tables import ItemRow

    with ws.session() as session:
        return dict(session.execute(select(ItemRow.id, ItemRow.source).where(ItemRow.id.in_(list(truth)))).all())


def _seconds_to(points: list[dict[str, Any]], goal: float) -> float | None:
    """Human seconds at the first round whose dataset quality reached the goal; None if none did."""
    return next((p["human_seconds"] for p in points if p["dataset_quality"] >= goal), None)


def _unlabelled(run: _Run, truth: dict[int, list]) -> list[int]:
    """Items neither labelled by the simulated person nor accepted by the project's rule now."""
    return [i for i in sorted(truth) if i not in run.human and i not in run.auto]


def _label(ws, project, item_id: int, outcome: Outcome, user_id: int, run: _Run, costs: CostModel,
           *, leased: bool = False) -> None:
    """Store what the simulated annotator wrote, as a person's submission through the queue, and count its cost."""
    from labelloop.services.labelling import annotations, queue
    from labelloop.services.transactions import write_transaction

    with write_transaction(ws) as session:
        annotations.save(session, project, item_id, outcome.shapes, author=USER, base_version=None)
        queue.mark_done(session, project, item_id, user_id)
    run.human[item_id] = list(outcome.shapes)
    run.auto.pop(item_id, None)
    run.human_items += 1
    run.human_seconds += outcome.seconds(costs)
    for action, quantity in outcome.actions:
        run.actions[action] += quantity


def _label_batch(ws, project, plan: SimulationPlan, truth: dict[int, list], user_id: int, run: _Run) -> int:
    """Take up to `batch` items from the project's queue (as GET /next does) and label each."""
    from labelloop.services.assist.predictions import latest_predictions_for_items
    from labelloop.services.labelling.queue import next_item

    if plan.grid:
        taken = _label_pages(ws, project, plan, truth, user_id, run)
        if taken is not None:
            return taken
    taken = 0
    for _ in range(min(plan.batch, len(_unlabelled(run, truth)))):
        lease = next_item(ws, project, user_id)
        if lease is None or lease.item_id in run.human or lease.item_id in run.auto:
            break  # (the queue's safety-net refill can bring back an auto-accepted item once the queue is empty)
        with ws.session() as session:
            prediction = latest_predictions_for_items(session, [lease.item_id]).get(lease.item_id)
            shown = list(prediction.shapes) if prediction is not None else []
        _label(ws, project, lease.item_id, plan.task.annotate(shown, truth[lease.item_id]), user_id, run, plan.costs,
               leased=True)
        taken += 1
    return taken


def _label_pages(ws, project, plan: SimulationPlan, truth: dict[int, list], user_id: int, run: _Run) -> int | None:
    """Take grid pages of the classifier's suggestions (services/assist/grid_pages.py, the code behind the grid's
    GET /similar?suggest=true) until `batch` items are labelled (the last page is whole, so a round may take up to
    grid - 1 more); None when no classifier can suggest yet (the round then labels item by item)."""
    from labelloop.services.assist.grid_pages import suggested_page

    taken = 0
    while taken < plan.batch and _unlabelled(run, truth):
        try:
            page = suggested_page(ws, project, user_id, plan.grid)
        except InvalidInput:
            return None if taken == 0 else taken
        if page is None:
            break
        fresh = [i for i in page.item_ids if i not in run.human and i not in run.auto]
        if len(fresh) < len(page.item_ids):
            break  # (the queue's safety-net refill can bring back an auto-accepted item once the queue is empty)
        shown = [page.suggestions.get(i, (None, 0.0))[0] for i in fresh]
        for item_id, outcome in zip(fresh, plan.task.annotate_page(shown, [truth[i] for i in fresh])):
            _label(ws, project, item_id, outcome, user_id, run, plan.costs, leased=True)
        run.pages += 1
        taken += len(fresh)
    return taken


def _retrain(ws, project, plan: SimulationPlan, seed: int, open_items: list[int], run: _Run,
             timing: dict[str, Any], previous=None):
    """Train the model kind on the labels so far (within the round budget where the kind has a time option;
    with `from_previous`, fine-tuning `previous`, the round before's model, as `train --from` does),
    pre-label the open items (thresholds recalibrated on held-out labels at the target), auto-accept what the rule
    allows and rank the queue by the strategy. Returns (model or None, a note when no model could be trained)."""
    from labelloop.services.assist.predictions import latest_predictions_for_items
    from labelloop.services.assist.sampling import refresh_ranks
    from labelloop.services.labelling import queue
    from labelloop.services.transactions import write_transaction

    task = plan.task
    ctx = JobContext(0, {}, lambda d, t, m: None, log.info)
    params: dict[str, Any] = {**plan.model_params, "seed": seed}
    if plan.target_precision is not None:
        params["target_precision"] = plan.target_precision
    if task.budget_param:
        params[task.budget_param] = plan.round_budget
    if plan.from_previous and previous is not None:
        params["from"] = previous.ref
        timing["from"] = previous.ref
    started = time.perf_counter()
    try:
        model = task.train(ws, project, plan.model, params, ctx)
    except InvalidInput as exc:  # too few or too uniform labels yet: this round goes on without a model
        refresh_ranks(ws, project, model=None, seed=seed)
        return None, f"no model this round: {exc}"
    timing["train_seconds"] = round(time.perf_counter() - started, 3)
    timing["over_budget"] = timing["train_seconds"] > plan.round_budget
    started = time.perf_counter()
    task.predict(ws, project, model, open_items, ctx)
    with ws.session() as session:
        shown = {i: list(p.shapes) for i, p in latest_predictions_for_items(session, open_items).items()
                 if p.model_id == model.id}
    # The rule is applied afresh to the newest pre-labels each round, as an export would (a person's label wins):
    # accepted items leave the queue, items whose pre-label fell below the threshold come back into it. They are
    # not written as annotations, so the model never trains on its own auto-accepted labels.
    accepted = {i: shapes for i in open_items if (shapes := task.auto_accepted(shown.get(i, []))) is not None}
    dropped = [i for i in run.auto if i not in accepted]
    with write_transaction(ws) as session:
        if dropped:
            queue.reopen(session.connection(), dropped)
        if accepted:
            queue.close(session.connection(), list(accepted))
    run.auto = accepted
    refresh_ranks(ws, project, model=model, seed=seed)
    timing["predict_rank_seconds"] = round(time.perf_counter() - started, 3)
    return model, None


def effort_ratio(scratch_seconds: float, human_seconds: float) -> float | None:
    return scratch_seconds / human_seconds if human_seconds > 0 and math.isfinite(human_seconds) else None
