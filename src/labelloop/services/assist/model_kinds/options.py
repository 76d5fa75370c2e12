"""Reading model options given on the command line or with --set (durations, numbers), with clear refusals."""

from __future__ import annotations

import re
from typing import Any

from labelloop.errors import InvalidInput

_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*$")


def parse_duration(value: Any) -> float:
    """'20m', '90s', '1h30m' or a number of seconds -> seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match or not any(match.groups()):
            raise InvalidInput(f"--time-budget {value!r}: give a duration such as 20m, 90s or 1h30m")
        hours, minutes, secs = (float(g) if g else 0.0 for g in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    if seconds <= 0:
        raise InvalidInput(f"--time-budget {value!r}: the budget must be more than 0 seconds")
    return seconds


def number(name: str, value: Any, kind: type):
    try:
        result = kind(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{name} {value!r}: expected a {'whole ' if kind is int else ''}number") from None
    if isinstance(value, float) and kind is int and value != result:
        raise InvalidInput(f"{name} {value!r}: expected a whole number")
    return result
