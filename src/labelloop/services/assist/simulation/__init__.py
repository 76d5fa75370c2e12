"""`labelloop simulate`: a simulated annotator labels a scratch copy of a project from known true labels, with a
published cost model in seconds per action, so the human time labelloop saves (and each sampling strategy's share
of it) is measured against labelling everything by hand and against random sampling (docs/simulate.md)."""

from labelloop.services.assist.simulation.runner import SimulationPlan, plan_simulation, run_simulation  # noqa: F401
