"""Exceptions that carry a message a user can act on."""


class LabelloopError(Exception):
    """Base class: the message is shown to the user as one line."""


class InvalidInput(LabelloopError):
    """The user's input (a file, a field, an argument) is wrong; nothing was changed."""


class NotFound(LabelloopError):
    """A named project, item, model or job does not exist."""


class Conflict(LabelloopError):
    """The write is based on a stale version or clashes with existing data."""

    def __init__(self, message: str, current: object = None):
        super().__init__(message)
        self.current = current  # the newer state the caller should look at, when there is one


class Cancelled(LabelloopError):
    """A job was cancelled by the user."""
