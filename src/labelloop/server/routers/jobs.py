"""Background jobs: a project's list, one job's state and progress, cancel."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Request
from labelloop.server.auth import MAX_ID, Access, Principal, check_project, current_user, project_access, workspace_of
from labelloop.server.pagination import Page, PageParams, page
from labelloop.server.schemas import JobOut
from labelloop.services.labelling.dashboard import project_jobs
from labelloop.services.jobs import cancel_job, get_job
from labelloop.services.labelling.users import PermissionDenied

router = APIRouter(tags=["jobs"])
JobId = Path(ge=1, le=MAX_ID, description="The job's id.")


def _job_access(request: Request, principal: Principal, job_id: int, permission: str):
    job = get_job(workspace_of(request), job_id)
    if job.project_id is None:
        if not principal.user.is_admin:
            raise PermissionDenied(f"job {job_id} belongs to no project; only an admin may see it")
    else:
        check_project(request, principal.user, job.project_id, permission)
    return job


@router.get("/api/projects/{project_id}/jobs", response_model=Page[JobOut], summary="The project's jobs, newest first")
def list_jobs(request: Request, access: Access = Depends(project_access("view")), params: PageParams = Depends()):
    found = project_jobs(workspace_of(request), access.project.id, before=params.after, limit=params.limit)
    return page(found, params, lambda j: j["id"])


@router.get("/api/jobs/{job_id}", response_model=JobOut, summary="A job's state, progress and result")
def show(request: Request, job_id: int = JobId, principal: Principal = Depends(current_user)):
    return _job_access(request, principal, job_id, "view").to_dict()


@router.post("/api/jobs/{job_id}/cancel", response_model=JobOut,
             summary="Cancel a job: a queued one at once, a running one at its next progress report")
def cancel(request: Request, job_id: int = JobId, principal: Principal = Depends(current_user)):
    _job_access(request, principal, job_id, "manage")
    return cancel_job(workspace_of(request), job_id).to_dict()
