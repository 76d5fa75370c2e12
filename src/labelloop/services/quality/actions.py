"""What a person does with a suspect: keep it as it is, fix the label, drop the duplicate, or exclude the item."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from labelloop.domain import ClassLabel, ProjectKind
from labelloop.errors import InvalidInput
from labelloop.services.labelling import annotations
from labelloop.services.projects import ProjectInfo
from labelloop.services.quality.suspects import get_suspect, suspect_dict
from labelloop.store.tables import PredictionRow, SuspectRow, utcnow

ACTIONS = ("keep", "fix", "drop", "exclude")
STATE_OF = {"keep": "kept", "fix": "fixed", "drop": "dropped", "exclude": "excluded"}


def decide(workspace, project: ProjectInfo, suspect_id: int, action: str, *, user: str,
           labels: Sequence[str] | None = None) -> dict[str, Any]:
    """Apply one action; nothing changes when it does not fit the suspect (checked before any write)."""
    if action not in ACTIONS:
        raise InvalidInput(f"action {action!r}: choose one of {', '.join(ACTIONS)}")
    with workspace.session() as session:
        row = get_suspect(session, project.id, suspect_id)
        if action == "drop" and row.kind != "duplicate":
            raise InvalidInput("only a duplicate can be dropped; use exclude to leave an item out")
        if action == "drop" and row.state not in ("dropped", "excluded") and _group_left(session, row) <= 1:
            raise InvalidInput(f"item {row.item_id} is the last one kept of its duplicate group; keep it")
        if action == "fix":
            if row.kind not in ("label", "spot_check"):
                raise InvalidInput("only a label suspect or a spot-check has a label to fix")
            if project.kind not in (ProjectKind.classification, ProjectKind.multilabel):
                raise InvalidInput("fixing a label here covers class labels; edit other shapes on the item")
            labels = list(labels or [])
            unknown = [name for name in labels if name not in project.class_names()]
            if unknown or not labels:
                raise InvalidInput(f"give the right label(s) among {', '.join(project.class_names())}"
                                   + (f"; unknown: {', '.join(unknown)}" if unknown else ""))
            if project.kind is ProjectKind.classification and len(labels) != 1:
                raise InvalidInput("a classification item takes exactly one label")
            current = annotations.latest(session, row.item_id, include_drafts=True)
            annotations.save(session, project, row.item_id, [ClassLabel(name) for name in labels], author=user,
                             base_version=current.version if current is not None else 0, state="accepted",
                             source="review")
        if row.kind == "spot_check":
            prediction = session.get(PredictionRow, int(row.details["prediction_id"]))
            if prediction is not None and prediction.review_state == "pending":
                prediction.review_state = "accepted" if action == "keep" else "edited" if action == "fix" else "rejected"
                prediction.reviewer, prediction.reviewed_at = user, utcnow()
        row.state, row.decided_by, row.decided_at = STATE_OF[action], user, utcnow()
        session.flush()
        return suspect_dict(row)


def _group_left(session, row: SuspectRow) -> int:
    """Members of the row's duplicate group still in the data."""
    members = session.scalars(select(SuspectRow).where(SuspectRow.project_id == row.project_id,
                                                       SuspectRow.kind == "duplicate",
                                                       SuspectRow.group_key == row.group_key,
                                                       SuspectRow.active.is_(True))).all()
    return sum(m.state not in ("dropped", "excluded") for m in members)
