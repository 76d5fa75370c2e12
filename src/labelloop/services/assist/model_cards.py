"""A model card: the figures a user decides by, in words, for the dashboard and the API."""

from __future__ import annotations

from typing import Any

from labelloop.services.assist.model_kinds import get_model_kind


def _shown(value: Any, how: str) -> str | None:
    if value is None or value == "":
        return None
    if how == "share" and isinstance(value, (int, float)):
        return f"{100 * value:.1f} %"
    if how == "seconds" and isinstance(value, (int, float)):
        return f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min"
    if how == "count" and isinstance(value, (int, float)):
        return f"{int(value):,}"
    if how == "number" and isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value < 1 else f"{value:.3g}"
    return str(value)


def _classes(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Per class (classifiers): threshold, held-out precision and recall at it, coverage, or why it has none."""
    rows = []
    for name, c in (metrics.get("classes") or {}).items():
        if not isinstance(c, dict):
            continue
        rows.append({"class": name, "threshold": c.get("threshold"), "precision": c.get("precision"),
                     "recall": c.get("recall"), "coverage": c.get("coverage"), "prelabelled": c.get("prelabelled"),
                     "held_out": c.get("held_out"), "rule": c.get("method"),
                     "reason": c.get("reason") if c.get("threshold") is None else ""})
    return rows


def model_card(model, effort: dict[str, Any] | None = None) -> dict[str, Any]:
    """`figures`: [{name, value}] in the kind's order, then what reviewing its pre-labels showed (`effort`);
    `classes`: per-class rows; `note`: how to read them."""
    kind = get_model_kind(model.kind)
    figures = []
    for key, words, how in getattr(kind, "figures", ()):
        value = _shown(model.metrics.get(key), how)
        if value is not None:
            figures.append({"name": words, "value": value})
    if effort and effort.get("shown"):
        figures.append({"name": "pre-labels accepted unedited",
                        "value": f"{_shown(effort['accepted_unedited'], 'share')} of {effort['shown']:,} "
                                 f"({effort['adjusted']} adjusted, {effort['rejected']} rejected, "
                                 f"{effort['added']} added by hand; {effort['reviewed']} reviewed)"})
    return {"figures": figures, "classes": _classes(model.metrics), "note": getattr(kind, "card_note", "")}
