"""The suspects queue (label errors, duplicates, outliers, spot-checks), the actions on a suspect, quality runs
and the spot-check report."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field

from labelloop.server.auth import MAX_ID, Access, project_access, workspace_of
from labelloop.server.pagination import Page, PageParams
from labelloop.services.quality import actions, runs, spot_checks
from labelloop.services.quality.suspects import KINDS, STATES, list_suspects

router = APIRouter(tags=["quality"])


class SuspectOut(BaseModel):
    id: int
    item_id: int
    file: str | None = None
    kind: str
    check: str
    score: float
    reason: str
    group: str | None = None
    state: str
    details: dict[str, Any]
    decided_by: str | None = None
    decided_at: str | None = None


class SuspectActionIn(BaseModel):
    action: Literal["keep", "fix", "drop", "exclude"]
    labels: list[str] | None = Field(None, max_length=200, description="fix: the right label(s)")


@router.get("/api/projects/{project_id}/suspects", response_model=Page[SuspectOut],
            summary="Suspects to review, most suspect first (?kind=label|duplicate|outlier|spot_check, ?state=open)")
def get_suspects(request: Request, kind: str | None = Query(None, description=", ".join(KINDS)),
                 state: str = Query("open", description=", ".join(STATES)),
                 access: Access = Depends(project_access("view")), params: PageParams = Depends()):
    # The cursor is the offset into the score order (opaque to clients, as every cursor).
    with workspace_of(request).session() as session:
        found, total = list_suspects(session, access.project.id, kind=kind, states=[state], offset=params.after,
                                     limit=params.limit)
    end = params.after + len(found)
    return {"items": found, "next_cursor": str(end) if end < total else None}


@router.post("/api/projects/{project_id}/suspects/{suspect_id}/action", response_model=SuspectOut,
             summary="Keep, fix the label, drop the duplicate or exclude the item (reviewer, manager, owner)")
def act_on_suspect(body: SuspectActionIn, request: Request, suspect_id: int = Path(ge=1, le=MAX_ID),
                   access: Access = Depends(project_access("review"))):
    return actions.decide(workspace_of(request), access.project, suspect_id, body.action, user=access.user.name,
                          labels=body.labels)


@router.post("/api/projects/{project_id}/quality",
             summary="Run the quality checks now (?kind= one of them); unchanged inputs are not re-scored")
def run_quality(request: Request, kind: Literal["label", "duplicate", "outlier"] | None = Query(None),
                access: Access = Depends(project_access("manage"))) -> dict[str, Any]:
    return runs.run_checks(workspace_of(request), access.project, kind)


@router.post("/api/projects/{project_id}/quality/jobs",
             summary="Run the quality checks as a background job (?kind= one of them); poll GET /api/jobs/{id}")
def start_quality_job(request: Request, kind: Literal["label", "duplicate", "outlier"] | None = Query(None),
                      force: bool = Query(False, description="Re-score even when nothing changed"),
                      access: Access = Depends(project_access("manage"))) -> dict[str, Any]:
    from labelloop.server.routers.models import start_job

    return start_job(request, "quality", {"project": access.project.name, "kind": kind, "force": force},
                     access.project.id)


@router.get("/api/projects/{project_id}/spot-checks",
            summary="Precision of the auto-accepted pre-labels from the reviewed spot-checks, with its interval")
def spot_check_report(request: Request, access: Access = Depends(project_access("view"))) -> dict[str, Any]:
    return spot_checks.spot_check_report(workspace_of(request), access.project, apply=False)


@router.post("/api/projects/{project_id}/spot-checks",
             summary="Draw the spot-check sample (seeded) and apply what the reviewed ones say (manager, owner)")
def draw_spot_checks(request: Request, width: float = Query(spot_checks.WIDTH, gt=0, lt=0.5),
                     confidence: float = Query(spot_checks.CONFIDENCE, ge=0.5, lt=1),
                     access: Access = Depends(project_access("manage"))) -> dict[str, Any]:
    workspace = workspace_of(request)
    drawn = spot_checks.draw_spot_checks(workspace, access.project, width=width, confidence=confidence)
    return {"drawn": drawn, **spot_checks.spot_check_report(workspace, access.project)}
