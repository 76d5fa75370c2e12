"""labelloop: turn raw images into trustworthy labelled training data with a human in the loop.

    >>> import labelloop
    >>> ws = labelloop.open("labelloop-data", create=True)
    >>> mito = ws.create_project("mito", kind="semantic", classes=["mitochondrion"])
    >>> mito.import_("../shared/data/lucchi_mito/train", format="masks")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from labelloop.notebook import WorkspaceHandle


def open(data_dir: str | None = None, *, create: bool = False) -> WorkspaceHandle:  # noqa: A001 - mirrors io.open
    """Open the workspace at data_dir (else $LABELLOOP_HOME, else ./labelloop-data)."""
    from labelloop.notebook import WorkspaceHandle
    from labelloop.services.workspace import Workspace

    return WorkspaceHandle(Workspace.open(data_dir, create=create))
