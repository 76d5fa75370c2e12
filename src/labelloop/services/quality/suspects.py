"""The suspects queue: what a quality check found, stored with the decision a person made about it.

A run replaces the project's open suspects of its kind; a decision (keep, fix, drop, exclude) stays as long as
what it was made on (`basis`: the label revision, the group's members, the image) is unchanged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from labelloop.errors import InvalidInput, NotFound
from labelloop.store.tables import ItemRow, QualityRunRow, SuspectRow, utcnow

KINDS = ("label", "duplicate", "outlier", "spot_check")
STATES = ("open", "kept", "fixed", "dropped", "excluded")
# Items a person took out of the data: exports leave them out.
REMOVED = ("dropped", "excluded")


@dataclass
class Found:
    """One suspect as a check found it, before it is stored."""

    item_id: int
    check: str
    score: float
    reason: str
    basis: str
    details: dict[str, Any] = field(default_factory=dict)
    group_key: str | None = None


def fingerprint(*parts: Any) -> str:
    """A short stable hash of a run's inputs."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def check_kind(kind: str | None) -> str | None:
    if kind is not None and kind not in KINDS:
        raise InvalidInput(f"suspect kind {kind!r}: choose one of {', '.join(KINDS)}")
    return kind


def last_run(session: Session, project_id: int, kind: str) -> QualityRunRow | None:
    return session.scalars(select(QualityRunRow).where(QualityRunRow.project_id == project_id,
                                                       QualityRunRow.kind == kind)).first()


def store_run(session: Session, project_id: int, kind: str, found: Sequence[Found], run_fingerprint: str,
              summary: dict[str, Any]) -> dict[str, int]:
    """Write a run's suspects: new ones added, known ones updated (a decision made on another basis reopens),
    ones no longer found marked inactive. Returns counts."""
    existing = {(r.item_id, r.check): r for r in session.scalars(
        select(SuspectRow).where(SuspectRow.project_id == project_id, SuspectRow.kind == kind))}
    counts = {"new": 0, "updated": 0, "reopened": 0, "gone": 0}
    seen = set()
    for f in found:
        key = (f.item_id, f.check)
        seen.add(key)
        row = existing.get(key)
        if row is None:
            session.add(SuspectRow(project_id=project_id, item_id=f.item_id, kind=kind, check=f.check,
                                   score=float(f.score), reason=f.reason, details=f.details, group_key=f.group_key,
                                   basis=f.basis, active=True, state="open"))
            counts["new"] += 1
            continue
        if row.basis != f.basis and row.state != "open":
            row.state, row.decided_by, row.decided_at = "open", None, None
            counts["reopened"] += 1
        row.score, row.reason, row.details, row.group_key = float(f.score), f.reason, f.details, f.group_key
        row.basis, row.active = f.basis, True
        counts["updated"] += 1
    for key, row in existing.items():
        if key not in seen and row.active:
            row.active = False
            counts["gone"] += 1
    run = last_run(session, project_id, kind)
    if run is None:
        session.add(QualityRunRow(project_id=project_id, kind=kind, fingerprint=run_fingerprint, summary=summary))
    else:
        run.fingerprint, run.summary, run.finished_at = run_fingerprint, summary, utcnow()
    return counts


def suspect_dict(row: SuspectRow, source: str | None = None) -> dict[str, Any]:
    return {"id": row.id, "item_id": row.item_id, "file": source, "kind": row.kind, "check": row.check,
            "score": round(row.score, 4), "reason": row.reason, "group": row.group_key, "state": row.state,
            "details": row.details, "decided_by": row.decided_by,
            "decided_at": row.decided_at.isoformat() if row.decided_at else None}


def list_suspects(session: Session, project_id: int, *, kind: str | None = None, states: Iterable[str] = ("open",),
                  offset: int = 0, limit: int = 50) -> tuple[list[dict[str, Any]], int]:
    """(a page of the active suspects, most suspect first; how many there are in all)."""
    check_kind(kind)
    states = list(states)
    bad = [s for s in states if s not in STATES]
    if bad:
        raise InvalidInput(f"suspect state {bad[0]!r}: choose among {', '.join(STATES)}")
    if offset < 0 or not 1 <= limit <= 1000:
        raise InvalidInput("offset must be >= 0 and limit between 1 and 1000")
    where = [SuspectRow.project_id == project_id, SuspectRow.active.is_(True), SuspectRow.state.in_(states)]
    if kind is not None:
        where.append(SuspectRow.kind == kind)
    total = session.scalar(select(func.count()).select_from(SuspectRow).where(*where)) or 0
    rows = session.execute(select(SuspectRow, ItemRow.source).join(ItemRow, ItemRow.id == SuspectRow.item_id)
                           .where(*where).order_by(SuspectRow.score.desc(), SuspectRow.id)
                           .offset(offset).limit(limit)).all()
    return [suspect_dict(row, source) for row, source in rows], int(total)


def counts(session: Session, project_id: int) -> dict[str, dict[str, int]]:
    """Active suspects per kind and state."""
    result: dict[str, dict[str, int]] = {k: {} for k in KINDS}
    for kind, state, n in session.execute(
            select(SuspectRow.kind, SuspectRow.state, func.count()).where(
                SuspectRow.project_id == project_id, SuspectRow.active.is_(True))
            .group_by(SuspectRow.kind, SuspectRow.state)):
        result.setdefault(kind, {})[state] = n
    return result


def get_suspect(session: Session, project_id: int, suspect_id: int) -> SuspectRow:
    """The suspect, only if it belongs to this project (another project's id is not found, not forbidden)."""
    row = session.get(SuspectRow, suspect_id)
    if row is None or row.project_id != project_id:
        raise NotFound(f"no suspect {suspect_id} in this project")
    return row


def removed_item_ids(session: Session, project_id: int) -> set[int]:
    """Items a person dropped as a duplicate or excluded in quality review."""
    return set(session.scalars(select(SuspectRow.item_id).where(
        SuspectRow.project_id == project_id, SuspectRow.state.in_(REMOVED))))


def export_exclusions(session: Session, project_id: int, *, duplicates: bool) -> dict[int, str]:
    """{item id: why it stays out of an export}: items dropped or excluded in quality review, and with
    `duplicates` every member of a duplicate group but one (the group's first member still in the data)."""
    out: dict[int, str] = {}
    for item_id, state in session.execute(select(SuspectRow.item_id, SuspectRow.state).where(
            SuspectRow.project_id == project_id, SuspectRow.state.in_(REMOVED))):
        out[item_id] = "dropped as a duplicate" if state == "dropped" else "excluded in quality review"
    if duplicates:
        groups: dict[str, list[int]] = {}
        for key, item_id in session.execute(select(SuspectRow.group_key, SuspectRow.item_id).where(
                SuspectRow.project_id == project_id, SuspectRow.kind == "duplicate", SuspectRow.active.is_(True))):
            groups.setdefault(key, []).append(item_id)
        for members in groups.values():
            left = sorted(i for i in members if i not in out)
            for item_id in left[1:]:
                out[item_id] = "a duplicate of an exported item"
    return out
