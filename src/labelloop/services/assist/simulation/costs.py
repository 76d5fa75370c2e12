"""The cost model: seconds of expert time per annotation action, each with its published source.

Defaults follow issue 19 and the papers it cites (docs/simulate.md has the table). A JSON or YAML file overrides the
model as a whole: it must give every action a number of seconds >= 0 (so a run always says exactly which figures
it used); unknown actions and negative or missing costs are refused before anything runs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labelloop.errors import InvalidInput

# action -> (seconds, source)
DEFAULT_COSTS: dict[str, tuple[float, str]] = {
    "classify": (3.0, "classify an image from scratch (issue 19 default; image-level labels take seconds, "
                      "Papadopoulos et al. CVPR 2016 report ~1.6 s for a yes/no verification)"),
    "confirm_class": (1.0, "confirm a shown correct class (issue 19 default)"),
    "change_class": (3.0, "change a shown wrong class: as long as classifying from scratch (issue 19 default)"),
    "grid_page": (2.0, "look over a grid page of 4/6/9 similar images (issue 19 default)"),
    "grid_fix": (1.5, "per image of a grid page whose class differs (issue 19 default)"),
    "draw_box": (7.0, "draw a box by extreme clicking (Papadopoulos et al., ICCV 2017: 7.0 s per box)"),
    "draw_box_traditional": (35.0, "draw a box the traditional way (Papadopoulos et al., ICCV 2017, after Su et "
                                   "al. 2012: 34.5 s per box); reported beside draw_box"),
    "verify_box": (1.6, "verify a shown box (Papadopoulos et al., CVPR 2016: 1.6 s per yes/no verification)"),
    "adjust_box": (4.0, "adjust a shown box whose IoU with the truth is < 0.9 (issue 19 default)"),
    "delete_shape": (1.0, "delete a false shape (issue 19 default)"),
    "draw_mask": (91.0, "draw a polygon/mask of an object from scratch (COCO: ~79 s per polygon, Lin et al. 2014; "
                        "the SAM paper, Kirillov et al. 2023, reports its 14 s per mask as 6.5x faster: 91 s)"),
    "draw_mask_assisted": (34.0, "draw a mask with a modern assisted tool (SAM paper, first assisted-manual "
                                 "stage: 34 s per mask)"),
    "mask_correction_per_px": (0.05, "correct a mask: seconds per pixel of the wrong area's outline (issue 19: "
                                     "in proportion to the outline; 0.05 s/px = a 20 px/s tracing speed)"),
    "scribble_stroke": (2.0, "one corrective scribble stroke (issue 19 default)"),
}


@dataclass(frozen=True)
class CostModel:
    name: str
    seconds: dict[str, float]
    sources: dict[str, str] = field(default_factory=dict)

    def cost(self, action: str) -> float:
        return self.seconds[action]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "seconds": dict(self.seconds), "sources": dict(self.sources)}


def default_cost_model() -> CostModel:
    return CostModel("default", {k: v for k, (v, _) in DEFAULT_COSTS.items()},
                     {k: s for k, (_, s) in DEFAULT_COSTS.items()})


def load_cost_model(spec: str | Path | None) -> CostModel:
    """'default' (or None), or a JSON/YAML file {"name": ..., "seconds": {action: s}, "sources": {action: text}}
    (a flat {action: s} mapping works too) naming every action of the default model."""
    if spec is None or str(spec) == "default":
        return default_cost_model()
    path = Path(spec)
    if not path.is_file():
        raise InvalidInput(f"--cost-model {spec}: no such file; give 'default' or a JSON/YAML file")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - any parse error is the user's file
        raise InvalidInput(f"--cost-model {path}: not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"--cost-model {path}: expected a mapping of action -> seconds")
    seconds = data.get("seconds", data if "seconds" not in data else None)
    if not isinstance(seconds, dict):
        raise InvalidInput(f"--cost-model {path}: 'seconds' must map each action to a number of seconds")
    seconds = {k: v for k, v in seconds.items() if k not in ("name", "sources")}
    missing = [a for a in DEFAULT_COSTS if a not in seconds]
    unknown = [a for a in seconds if a not in DEFAULT_COSTS]
    if missing:
        raise InvalidInput(f"--cost-model {path}: missing cost for {', '.join(missing)} (every action needs one: "
                           f"{', '.join(DEFAULT_COSTS)})")
    if unknown:
        raise InvalidInput(f"--cost-model {path}: unknown action(s) {', '.join(unknown)}; known: "
                           f"{', '.join(DEFAULT_COSTS)}")
    bad = [f"{a}={v!r}" for a, v in seconds.items()
           if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 or v == float("inf")]
    if bad:
        raise InvalidInput(f"--cost-model {path}: costs must be finite numbers of seconds >= 0: {', '.join(bad)}")
    sources = data.get("sources") if isinstance(data.get("sources"), dict) else {}
    return CostModel(str(data.get("name") or path.name), {a: float(seconds[a]) for a in DEFAULT_COSTS},
                     {a: str(sources.get(a, f"{path.name}")) for a in DEFAULT_COSTS})
