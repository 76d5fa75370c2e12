"""The one exception the media package raises for a file it cannot use."""

from __future__ import annotations

from labelloop.errors import InvalidInput


class MediaError(InvalidInput):
    """An image file cannot be read or is refused; the message starts with the file name."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason

    def __reduce__(self):
        # Keep the two-argument constructor picklable (jobs pass errors between processes).
        return (type(self), (self.name, self.reason))
