"""Who is asking, and may they: bearer tokens for scripts, a session cookie plus CSRF token for browsers."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Depends, Path, Request
from sqlalchemy import select
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from labelloop.errors import NotFound
from labelloop.services import users
from labelloop.services.projects import ProjectInfo, info
from labelloop.services.users import NotAuthenticated, PermissionDenied, UserInfo
from labelloop.store.tables import ItemRow, ProjectRow

SESSION_COOKIE = "labelloop_session"
CSRF_COOKIE = "labelloop_csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_ID = 2**31 - 1

bearer_scheme = HTTPBearer(auto_error=False, description="An API token from `POST /api/auth/token` or "
                                                         "`labelloop token create`.")
cookie_scheme = APIKeyCookie(name=SESSION_COOKIE, auto_error=False,
                             description=f"Set by `POST /api/auth/login`; unsafe methods also need the {CSRF_HEADER} header.")


@dataclass(frozen=True)
class Principal:
    user: UserInfo
    via: str  # "token" or "session"


@dataclass(frozen=True)
class Access:
    user: UserInfo
    project: ProjectInfo
    role: str | None  # None: an admin who is not a member


def workspace_of(request: Request):
    return request.app.state.workspace


def _resolve(request: Request, credentials: HTTPAuthorizationCredentials | None, cookie: str | None) -> Principal | None:
    workspace = workspace_of(request)
    if credentials is not None:
        with workspace.session() as session:
            user = users.user_for_token(session, credentials.credentials.strip())
        if user is None:
            raise NotAuthenticated("the API token is unknown or was revoked; create a new one with POST /api/auth/token")
        return Principal(user, "token")
    if request.headers.get("authorization"):
        raise NotAuthenticated("send the API token as 'Authorization: Bearer <token>'")
    if cookie:
        with workspace.session() as session:
            found = users.user_for_session(session, cookie)
        if found is None:
            raise NotAuthenticated("your session has ended; log in again")
        user, csrf = found
        if request.method not in SAFE_METHODS:
            sent = request.headers.get(CSRF_HEADER, "")
            if not sent or not hmac.compare_digest(sent.encode(), csrf.encode()):
                raise PermissionDenied(f"missing or wrong {CSRF_HEADER} header: send the csrf_token that "
                                       "POST /api/auth/login returned")
        return Principal(user, "session")
    return None


def optional_user(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer_scheme),
                  cookie: str | None = Depends(cookie_scheme)) -> Principal | None:
    return _resolve(request, credentials, cookie)


def current_user(principal: Principal | None = Depends(optional_user)) -> Principal:
    if principal is None:
        raise NotAuthenticated("log in (POST /api/auth/login) or send 'Authorization: Bearer <token>'")
    return principal


def admin_user(principal: Principal = Depends(current_user)) -> Principal:
    if not principal.user.is_admin:
        raise PermissionDenied("only an admin may do this")
    return principal


def check_project(request: Request, user: UserInfo, project_id: int, permission: str) -> Access:
    """One query: the project and the user's role in it; raises unless the role allows `permission`."""
    query = users.with_role(select(ProjectRow).where(ProjectRow.id == project_id), user)
    with workspace_of(request).session() as session:
        found = session.execute(query).one_or_none()
        if found is None:
            raise NotFound(f"no project {project_id}")
        project, role = found
        users.authorize(user, project_id, role, permission)
        return Access(user, info(project), role)


def check_item(request: Request, user: UserInfo, item_id: int, permission: str) -> tuple[Access, ItemRow]:
    """One query: the item, its project and the user's role there."""
    query = users.with_role(select(ItemRow, ProjectRow).join(ProjectRow, ProjectRow.id == ItemRow.project_id)
                            .where(ItemRow.id == item_id), user)
    with workspace_of(request).session() as session:
        found = session.execute(query).one_or_none()
        if found is None:
            raise NotFound(f"no item {item_id}")
        item, project, role = found
        users.authorize(user, project.id, role, permission)
        return Access(user, info(project), role), item


ProjectId = Path(ge=1, le=MAX_ID, description="The project's id.")
ItemId = Path(ge=1, le=MAX_ID, description="The item's id.")


def project_access(permission: str):
    """A dependency: the project named by the path, if the user may `permission` it."""

    def dependency(request: Request, project_id: int = ProjectId, principal: Principal = Depends(current_user)) -> Access:
        return check_project(request, principal.user, project_id, permission)

    return dependency
