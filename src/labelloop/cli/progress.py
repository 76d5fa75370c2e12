"""A rich progress bar that appears only for work that lasts over a second."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

DELAY = 1.0


class DelayedProgress:
    def __init__(self, console: Console, enabled: bool = True):
        self.console = console
        self.enabled = enabled
        self.started = time.monotonic()
        self.progress: Progress | None = None
        self.task = None

    def __call__(self, done: int, total: int | None, message: str) -> None:
        if not self.enabled or time.monotonic() - self.started < DELAY:
            return
        if self.progress is None:
            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                TimeRemainingColumn(), console=self.console, transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task(message, total=total)
        self.progress.update(self.task, completed=done, total=total, description=message)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def __enter__(self) -> DelayedProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
