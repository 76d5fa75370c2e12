"""Users (admins manage them) and project members (owners and managers manage them)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Request

from labelloop.server.auth import Access, Principal, admin_user, project_access, workspace_of
from labelloop.server.pagination import Page, PageParams, page
from labelloop.server.schemas import MemberIn, MemberOut, UserIn, UserOut
from labelloop.services.labelling import users
from labelloop.services.transactions import write_transaction
from labelloop.services.labelling.users import PermissionDenied

router = APIRouter(tags=["users"])
UserName = Path(min_length=1, max_length=200, description="The user's name.")


@router.get("/api/users", response_model=Page[UserOut], summary="All users (admin)")
def list_users(request: Request, _: Principal = Depends(admin_user), params: PageParams = Depends()):
    with workspace_of(request).session() as session:
        found = [u.to_dict() for u in users.list_users(session, after=params.after, limit=params.limit)]
    return page(found, params, lambda u: u["id"])


@router.post("/api/users", response_model=UserOut, status_code=201, summary="Create a user (admin)")
def create_user(body: UserIn, request: Request, _: Principal = Depends(admin_user)):
    with write_transaction(workspace_of(request)) as session:
        return users.create_user(session, body.name, body.password, admin=body.admin).to_dict()


@router.get("/api/projects/{project_id}/members", response_model=Page[MemberOut], summary="Who works on the project")
def list_members(request: Request, access: Access = Depends(project_access("view")), params: PageParams = Depends()):
    with workspace_of(request).session() as session:
        found = users.members(session, access.project.id)
    chunk = found[params.after: params.after + params.limit]
    return {"items": chunk, "next_cursor": str(params.after + params.limit) if len(chunk) == params.limit else None}


def _may_change(access: Access, role_now: str | None, role_new: str | None) -> None:
    """Managers handle annotators and reviewers; only owners (and admins) hand out or take away owner/manager."""
    if access.user.is_admin or access.role == "owner":
        return
    if {role_now, role_new} & {"owner", "manager"}:
        raise PermissionDenied("only the project's owner may grant or change the owner and manager roles")


@router.put("/api/projects/{project_id}/members/{user_name}", response_model=MemberOut,
            summary="Give a user a role in the project")
def set_member(body: MemberIn, request: Request, user_name: str = UserName,
               access: Access = Depends(project_access("manage"))):
    with write_transaction(workspace_of(request)) as session:
        current = users.role_in(session, access.project.id, users.get_user(session, user_name).id)
        _may_change(access, current, body.role)
        users.set_role(session, access.project.id, user_name, body.role)
    return {"user": user_name, "role": body.role}


@router.delete("/api/projects/{project_id}/members/{user_name}", status_code=204,
               summary="Remove a user from the project")
def remove_member(request: Request, user_name: str = UserName, access: Access = Depends(project_access("manage"))):
    with write_transaction(workspace_of(request)) as session:
        _may_change(access, users.role_in(session, access.project.id, users.get_user(session, user_name).id), None)
        users.remove_member(session, access.project.id, user_name)
