"""Job kinds register a function here; the runner finds them by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from labelloop.errors import InvalidInput


@dataclass
class JobContext:
    """What a running job function receives: its id, parameters and a progress reporter.

    `progress(done, total, message)` also raises Cancelled once the job was asked to stop, so long work
    that reports progress is cancellable without more code."""

    job_id: int
    params: dict[str, Any]
    progress: Callable[[int, int | None, str], None]
    log: Callable[[str], None]


JobFunction = Callable[[Any, JobContext], dict[str, Any]]  # (workspace, context) -> result
_KINDS: dict[str, JobFunction] = {}


def job_kind(name: str) -> Callable[[JobFunction], JobFunction]:
    def register(function: JobFunction) -> JobFunction:
        _KINDS[name] = function
        return function

    return register


def get_job_kind(name: str) -> JobFunction:
    if name not in _KINDS:
        raise InvalidInput(f"unknown job kind {name!r}; known: {', '.join(sorted(_KINDS)) or 'none'}")
    return _KINDS[name]
