"""What the effort benchmarks (benchmarks/effort_*.py) print alike: a figure's mean and range over seeds, each
strategy against random, and `--set KEY=VALUE` options as the model kind's parameters."""

from __future__ import annotations


def spread(figure, pattern: str = "{:.0f}") -> str:
    """A summary figure as "mean (min-max)" over seeds, the mean alone when they agree, "-" when absent."""
    if figure is None:
        return "-"
    if figure["n"] == 1 or figure["min"] == figure["max"]:
        return pattern.format(figure["mean"])
    return f"{pattern.format(figure['mean'])} ({pattern.format(figure['min'])}-{pattern.format(figure['max'])})"


def versus_random(summary: dict, goal: str) -> list[str]:
    """One markdown line per strategy against random: seconds saved to `goal` (e.g. "quality 0.98") and whether
    the gap is beyond the spread over seeds."""
    lines = []
    for strategy, versus in summary["versus_random"].items():
        if versus["compared"]:
            lines.append(f"- {strategy} vs random: {versus['seconds_saved_vs_random']:+.0f} s to {goal} "
                         f"({versus['share_saved_vs_random']:+.1%}), "
                         f"{'beyond' if versus['beyond_seed_spread'] else 'within'} the spread over seeds")
        else:
            lines.append(f"- {strategy} vs random: not compared ({versus['reason']})")
    return lines


def model_params(pairs: list[str]) -> dict[str, str]:
    """`--set KEY=VALUE` options (repeatable) as a dict, as `labelloop simulate --set` reads them."""
    params = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        params[key.strip()] = value.strip()
    return params
