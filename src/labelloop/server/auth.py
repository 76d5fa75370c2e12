"""Who is asking, and may they: bearer tokens for scripts, a session cookie plus CSRF token for browsers.

A request costs one query for its credentials and, where the path names a project or an item, that project's
row and the user's role in it: `project_access` and `item_access` join all of it into a single SELECT."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from fastapi import Depends, Path, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Connection, bindparam, select

from labelloop.errors import NotFound
from labelloop.services.labelling import users
from labelloop.services.projects import ProjectInfo, info
from labelloop.services.labelling.users import NotAuthenticated, PermissionDenied, UserInfo
from labelloop.store.tables import ItemRow, MembershipRow, ProjectRow, UserRow

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


@dataclass(frozen=True)
class ItemAccess:
    access: Access
    item: Any  # the item's columns, named as ItemRow's attributes (id, width, height, blob_sha256, meta, ...)


@dataclass(frozen=True)
class Credential:
    """What the request presented, not yet checked against the database."""

    via: str  # "token" or "session"
    secret: str


def workspace_of(request: Request):
    return request.app.state.workspace


async def credential(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer_scheme),
                     cookie: str | None = Depends(cookie_scheme)) -> Credential | None:
    """The bearer token or session cookie sent (no database work, so no worker thread)."""
    if credentials is not None:
        return Credential("token", credentials.credentials.strip())
    if request.headers.get("authorization"):
        raise NotAuthenticated("send the API token as 'Authorization: Bearer <token>'")
    if cookie:
        return Credential("session", cookie)
    return None


def _lookup(request: Request, found: Credential, query=None, params: dict[str, Any] | None = None,
            connection: Connection | None = None):
    """Run `query` (default: just the user) for the credential's user, on `connection` if given, else on a
    reader of its own; raises unless the credential is valid."""
    query = query if query is not None else _USER_QUERIES[found.via]
    values = {"secret": users.digest(found.secret), **(params or {})}
    if connection is None:
        with workspace_of(request).reader() as reader:
            row = reader.execute(query, values).first()
    else:
        row = connection.execute(query, values).first()
    if row is None:
        raise NotAuthenticated("the API token is unknown or was revoked; create a new one with POST /api/auth/token"
                               if found.via == "token" else "your session has ended; log in again")
    if found.via == "session":
        if users.session_expired(row.expires_at):
            raise NotAuthenticated("your session has ended; log in again")
        if request.method not in SAFE_METHODS:
            sent = request.headers.get(CSRF_HEADER, "")
            if not sent or not hmac.compare_digest(sent.encode(), row.csrf_token.encode()):
                raise PermissionDenied(f"missing or wrong {CSRF_HEADER} header: send the csrf_token that "
                                       "POST /api/auth/login returned")
    return row


def _required(found: Credential | None) -> Credential:
    if found is None:
        raise NotAuthenticated("log in (POST /api/auth/login) or send 'Authorization: Bearer <token>'")
    return found


def optional_user(request: Request, found: Credential | None = Depends(credential)) -> Principal | None:
    if found is None:
        return None
    return Principal(users.user_from_row(_lookup(request, found)), found.via)


async def current_user(principal: Principal | None = Depends(optional_user)) -> Principal:
    if principal is None:
        _required(None)
    return principal


async def admin_user(principal: Principal = Depends(current_user)) -> Principal:
    if not principal.user.is_admin:
        raise PermissionDenied("only an admin may do this")
    return principal


# The credential's user, a project (or an item and its project) and the user's role there, in one statement of
# plain columns (no ORM objects: this runs on every request).
# Only the columns used: on PostgreSQL the driver builds a description object per column of every result.
_PROJECT = tuple(ProjectRow.__table__.c[key].label(f"p_{key}") for key in ("id", "name", "kind", "classes", "settings"))
_ITEM = tuple(c.label("meta") if c.key == "metadata" else c for c in ItemRow.__table__.c)
_ITEM_KEY = (ItemRow.id, ItemRow.project_id)  # enough for an endpoint that reads the item itself
_USER_QUERIES = {via: users.principal_query(via) for via in users.CREDENTIALS}
_MEMBER = (MembershipRow.project_id == ProjectRow.id) & (MembershipRow.user_id == UserRow.id)
_PROJECT_QUERIES = {via: users.principal_query(via).add_columns(*_PROJECT, MembershipRow.role)
                    .outerjoin(ProjectRow, ProjectRow.id == bindparam("project_id")).outerjoin(MembershipRow, _MEMBER)
                    for via in users.CREDENTIALS}


def _item_query(via: str, item_columns):
    return (users.principal_query(via).add_columns(*item_columns, *_PROJECT, MembershipRow.role)
            .outerjoin(ItemRow, ItemRow.id == bindparam("item_id"))
            .outerjoin(ProjectRow, ProjectRow.id == ItemRow.project_id).outerjoin(MembershipRow, _MEMBER))


_ITEM_QUERIES = {via: _item_query(via, _ITEM) for via in users.CREDENTIALS}
_ITEM_KEY_QUERIES = {via: _item_query(via, _ITEM_KEY) for via in users.CREDENTIALS}


def _project_info(row) -> ProjectInfo:
    return info(SimpleNamespace(id=row.p_id, name=row.p_name, kind=row.p_kind, classes=row.p_classes,
                                settings=row.p_settings))


def _project_access(request: Request, found: Credential, project_id: int, permission: str,
                    connection: Connection | None = None) -> Access:
    row = _lookup(request, found, _PROJECT_QUERIES[found.via], {"project_id": project_id}, connection)
    user = users.user_from_row(row)
    if row.p_id is None:
        raise NotFound(f"no project {project_id}")
    users.authorize(user, project_id, row.role, permission)
    return Access(user, _project_info(row), row.role)


def _item_access(request: Request, found: Credential, item_id: int, permission: str,
                 connection: Connection | None = None, queries=_ITEM_QUERIES) -> ItemAccess:
    row = _lookup(request, found, queries[found.via], {"item_id": item_id}, connection)
    user = users.user_from_row(row)
    if row.id is None:
        raise NotFound(f"no item {item_id}")
    users.authorize(user, row.project_id, row.role, permission)
    return ItemAccess(Access(user, _project_info(row), row.role), row)


def check_project(request: Request, user: UserInfo, project_id: int, permission: str, *alternatives: str) -> Access:
    """For a project found on the way (a model's, a job's): its row and the user's role; raises unless the role
    has `permission` (or one of the `alternatives`; the error names the first)."""
    query = users.with_role(select(ProjectRow).where(ProjectRow.id == project_id), user)
    with workspace_of(request).session() as session:
        found = session.execute(query).first()
    if found is None:
        raise NotFound(f"no project {project_id}")
    project, role = found
    for other in alternatives:
        try:
            users.authorize(user, project_id, role, other)
            return Access(user, info(project), role)
        except PermissionDenied:
            pass
    users.authorize(user, project_id, role, permission)
    return Access(user, info(project), role)


def check_item(request: Request, user: UserInfo, item_id: int, permission: str) -> tuple[Access, ItemRow]:
    """One query: the item, its project and the user's role there."""
    query = users.with_role(select(ItemRow, ProjectRow).join(ProjectRow, ProjectRow.id == ItemRow.project_id)
                            .where(ItemRow.id == item_id), user)
    with workspace_of(request).session() as session:
        found = session.execute(query).first()
    if found is None:
        raise NotFound(f"no item {item_id}")
    item, project, role = found
    users.authorize(user, project.id, role, permission)
    return Access(user, info(project), role), item


ProjectId = Path(ge=1, le=MAX_ID, description="The project's id.")
ItemId = Path(ge=1, le=MAX_ID, description="The item's id.")


def project_access(permission: str):
    """A dependency: the project named by the path, if the user may `permission` it."""

    def dependency(request: Request, project_id: int = ProjectId, found: Credential | None = Depends(credential)) -> Access:
        return _project_access(request, _required(found), project_id, permission)

    return dependency


def item_access(permission: str):
    """A dependency: the item named by the path, its project and the user's role, if they may `permission` it."""

    def dependency(request: Request, item_id: int = ItemId, found: Credential | None = Depends(credential)) -> ItemAccess:
        return _item_access(request, _required(found), item_id, permission)

    return dependency


@dataclass(frozen=True)
class DeferredAccess:
    """The credential and the project or item a request names, checked by the endpoint inside its own transaction.

    The labelling loop's endpoints (next, save) use this instead of `project_access` / `item_access`: the check
    then shares the endpoint's connection and worker thread, where a checking dependency would take a second
    connection and a second hop through the thread pool for every request."""

    request: Request
    credential: Credential
    target_id: int
    permission: str

    def project(self, connection: Connection) -> Access:
        return _project_access(self.request, self.credential, self.target_id, self.permission, connection)

    def item(self, connection: Connection) -> ItemAccess:
        """The item access with only the item's id and project_id (the endpoint reads what else it needs)."""
        return _item_access(self.request, self.credential, self.target_id, self.permission, connection,
                            _ITEM_KEY_QUERIES)


def deferred_project_access(permission: str):
    """A dependency (no database work, so no worker thread): `.project(connection)` checks it later."""

    async def dependency(request: Request, project_id: int = ProjectId,
                         found: Credential | None = Depends(credential)) -> DeferredAccess:
        return DeferredAccess(request, _required(found), project_id, permission)

    return dependency


def deferred_item_access(permission: str):
    """A dependency (no database work, so no worker thread): `.item(connection)` checks it later."""

    async def dependency(request: Request, item_id: int = ItemId,
                         found: Credential | None = Depends(credential)) -> DeferredAccess:
        return DeferredAccess(request, _required(found), item_id, permission)

    return dependency
