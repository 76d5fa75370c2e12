"""Users, their roles per project, API tokens and browser sessions.

Passwords are hashed with argon2id. API tokens and session cookies are 256-bit random secrets, so a plain
SHA-256 of each is what the database keeps (a slow hash adds nothing to a secret that cannot be guessed)."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import bindparam, delete, select
from sqlalchemy.orm import Session

from labelloop.errors import Conflict, InvalidInput, LabelloopError, NotFound
from labelloop.store.tables import ApiTokenRow, MembershipRow, ProjectRow, UserRow, WebSessionRow, utcnow

ROLES = ("owner", "manager", "annotator", "reviewer")
# What each role may do in its project; a global admin may do everything everywhere.
PERMISSIONS: dict[str, frozenset[str]] = {
    "view": frozenset(ROLES),
    "annotate": frozenset({"owner", "manager", "annotator"}),
    "review": frozenset({"owner", "manager", "reviewer"}),
    "manage": frozenset({"owner", "manager"}),
    "own": frozenset({"owner"}),
}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
MIN_PASSWORD = 8
TOKEN_PREFIX = "llt_"
# OWASP's argon2id baseline (19 MiB, 2 passes): ~20 ms a login on a laptop core.
_hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)


class NotAuthenticated(LabelloopError):
    """No valid credentials came with the request (HTTP 401)."""


class PermissionDenied(LabelloopError):
    """The user is known but may not do this (HTTP 403)."""


@dataclass(frozen=True)
class UserInfo:
    id: int
    name: str
    is_admin: bool
    active: bool

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "is_admin": self.is_admin, "active": self.active}


@dataclass(frozen=True)
class TokenInfo:
    id: int
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "prefix": self.prefix, "created_at": self.created_at.isoformat(),
                "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None}


def _user(row: UserRow) -> UserInfo:
    return UserInfo(row.id, row.name, row.is_admin, row.active)


def _token(row: ApiTokenRow) -> TokenInfo:
    return TokenInfo(row.id, row.name, row.prefix, row.created_at, row.revoked_at)


def digest(secret: str) -> str:
    """What the database keeps of a token or session secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"the password needs at least {MIN_PASSWORD} characters")
    if len(password) > 1000:
        raise InvalidInput("the password is too long (at most 1000 characters)")


def create_user(session: Session, name: str, password: str | None = None, *, admin: bool = False) -> UserInfo:
    if not NAME_RE.match(name or ""):
        raise InvalidInput(f"user name {name!r} is not valid: 1-100 letters, digits, '.', '_', '@' or '-'")
    if password is not None:
        _check_password(password)
    if session.scalar(select(UserRow.id).where(UserRow.name == name)) is not None:
        raise Conflict(f"a user named {name!r} already exists")
    row = UserRow(name=name, password_hash=_hasher.hash(password) if password is not None else None,
                  is_admin=admin, active=True)
    session.add(row)
    session.flush()
    return _user(row)


def get_user(session: Session, name: str) -> UserInfo:
    row = session.scalar(select(UserRow).where(UserRow.name == name))
    if row is None:
        raise NotFound(f"no user named {name!r}; create one with `labelloop user create {name}`")
    return _user(row)


def list_users(session: Session, *, after: int = 0, limit: int = 100) -> list[UserInfo]:
    rows = session.scalars(select(UserRow).where(UserRow.id > after).order_by(UserRow.id).limit(limit))
    return [_user(r) for r in rows]


def set_password(session: Session, name: str, password: str) -> None:
    _check_password(password)
    row = session.scalar(select(UserRow).where(UserRow.name == name))
    if row is None:
        raise NotFound(f"no user named {name!r}")
    row.password_hash = _hasher.hash(password)


def authenticate(session: Session, name: str, password: str) -> UserInfo:
    """The user whose name and password these are; one message for every failure, so names cannot be probed."""
    row = session.scalar(select(UserRow).where(UserRow.name == name))
    failure = NotAuthenticated("wrong user name or password")
    if row is None or not row.active or row.password_hash is None:
        _hasher.hash(password or "x")  # same work either way: the response time does not reveal the name
        raise failure
    try:
        _hasher.verify(row.password_hash, password)
    except (VerificationError, InvalidHashError):
        raise failure from None
    if _hasher.check_needs_rehash(row.password_hash):
        row.password_hash = _hasher.hash(password)
    return _user(row)


# --- API tokens ---


def create_token(session: Session, user_id: int, name: str) -> tuple[TokenInfo, str]:
    """A new token; the secret is returned once and never stored."""
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise InvalidInput("a token needs a name of 1-200 characters (say what it is for, e.g. 'training script')")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiTokenRow(user_id=user_id, name=name, secret_sha256=digest(secret), prefix=secret[:10])
    session.add(row)
    session.flush()
    return _token(row), secret


def list_tokens(session: Session, user_id: int) -> list[TokenInfo]:
    rows = session.scalars(select(ApiTokenRow).where(ApiTokenRow.user_id == user_id).order_by(ApiTokenRow.id))
    return [_token(r) for r in rows]


def revoke_token(session: Session, token_id: int, user: UserInfo) -> TokenInfo:
    row = session.get(ApiTokenRow, token_id)
    if row is None or (row.user_id != user.id and not user.is_admin):
        raise NotFound(f"you have no token {token_id}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return _token(row)


def user_for_token(session: Session, secret: str) -> UserInfo | None:
    row = session.execute(principal_query("token"), {"secret": digest(secret)}).first()
    return user_from_row(row) if row is not None else None


# --- browser sessions ---


def create_session(session: Session, user_id: int, ttl: timedelta) -> tuple[str, str]:
    """(cookie secret, CSRF token) of a new browser session; expired sessions are cleared on the way."""
    now = utcnow()
    session.execute(delete(WebSessionRow).where(WebSessionRow.expires_at < now))
    secret, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    session.add(WebSessionRow(user_id=user_id, secret_sha256=digest(secret), csrf_token=csrf, expires_at=now + ttl))
    return secret, csrf


def user_for_session(session: Session, secret: str) -> tuple[UserInfo, str] | None:
    row = session.execute(principal_query("session"), {"secret": digest(secret)}).first()
    if row is None or session_expired(row.expires_at):
        return None
    return user_from_row(row), row.csrf_token


def session_expired(expires: datetime) -> bool:
    if expires.tzinfo is None:  # SQLite hands back naive datetimes
        expires = expires.replace(tzinfo=utcnow().tzinfo)
    return expires < utcnow()


# --- who is asking: one statement per request ---

CREDENTIALS = ("token", "session")
_USER_COLUMNS = (UserRow.id.label("user_id"), UserRow.name.label("user_name"), UserRow.is_admin, UserRow.active)


def principal_query(via: str):
    """The active user behind a credential's digest (bound as `secret`): a token that is not revoked, or a browser
    session (with its CSRF token and expiry). Callers join the project or item the request names onto it."""
    if via == "token":
        return (select(*_USER_COLUMNS).select_from(ApiTokenRow).join(UserRow, UserRow.id == ApiTokenRow.user_id)
                .where(ApiTokenRow.secret_sha256 == bindparam("secret"), ApiTokenRow.revoked_at.is_(None),
                       UserRow.active.is_(True)))
    return (select(*_USER_COLUMNS, WebSessionRow.csrf_token, WebSessionRow.expires_at).select_from(WebSessionRow)
            .join(UserRow, UserRow.id == WebSessionRow.user_id)
            .where(WebSessionRow.secret_sha256 == bindparam("secret"), UserRow.active.is_(True)))


def user_from_row(row) -> UserInfo:
    return UserInfo(row.user_id, row.user_name, row.is_admin, row.active)


def end_session(session: Session, secret: str) -> None:
    session.execute(delete(WebSessionRow).where(WebSessionRow.secret_sha256 == digest(secret)))


# --- roles ---


def role_in(session: Session, project_id: int, user_id: int) -> str | None:
    return session.scalar(select(MembershipRow.role).where(
        MembershipRow.project_id == project_id, MembershipRow.user_id == user_id))


def authorize(user: UserInfo, project_id: int, role: str | None, permission: str) -> None:
    """Raise PermissionDenied unless a user with this role (None: not a member) may `permission` the project."""
    if user.is_admin:
        return
    if role is None:
        raise PermissionDenied(f"you are not a member of project {project_id}; ask its owner to add you")
    if role not in PERMISSIONS[permission]:
        allowed = ", ".join(r for r in ROLES if r in PERMISSIONS[permission])
        raise PermissionDenied(f"this needs the role {allowed} in project {project_id}; you are {role}")


def check_permission(session: Session, user: UserInfo, project_id: int, permission: str) -> str | None:
    """The user's role in the project (None for an admin who is not a member); raises PermissionDenied."""
    if session.get(ProjectRow, project_id) is None:
        raise NotFound(f"no project {project_id}")
    role = role_in(session, project_id, user.id)
    authorize(user, project_id, role, permission)
    return role


def with_role(query, user: UserInfo):
    """Add the user's role in the query's project (ProjectRow must be in it) as one more column."""
    return query.add_columns(MembershipRow.role).outerjoin(
        MembershipRow, (MembershipRow.project_id == ProjectRow.id) & (MembershipRow.user_id == user.id))


def set_role(session: Session, project_id: int, user_name: str, role: str) -> None:
    if role not in ROLES:
        raise InvalidInput(f"role {role!r} is not one of {', '.join(ROLES)}")
    user = get_user(session, user_name)
    row = session.scalar(select(MembershipRow).where(
        MembershipRow.project_id == project_id, MembershipRow.user_id == user.id))
    if row is None:
        session.add(MembershipRow(project_id=project_id, user_id=user.id, role=role))
    else:
        row.role = role
    session.flush()


def remove_member(session: Session, project_id: int, user_name: str) -> None:
    user = get_user(session, user_name)
    removed = session.execute(delete(MembershipRow).where(
        MembershipRow.project_id == project_id, MembershipRow.user_id == user.id)).rowcount
    if not removed:
        raise NotFound(f"{user_name!r} is not a member of project {project_id}")


def members(session: Session, project_id: int) -> list[dict[str, Any]]:
    rows = session.execute(select(UserRow.name, MembershipRow.role).join(MembershipRow, MembershipRow.user_id == UserRow.id)
                           .where(MembershipRow.project_id == project_id).order_by(UserRow.name))
    return [{"user": name, "role": role} for name, role in rows]


def project_roles(session: Session, user: UserInfo, *, after: int = 0, limit: int = 100) -> list[tuple[ProjectRow, str | None]]:
    """The projects this user may see (all of them for an admin) with the user's role, in id order."""
    query = select(ProjectRow, MembershipRow.role).outerjoin(
        MembershipRow, (MembershipRow.project_id == ProjectRow.id) & (MembershipRow.user_id == user.id))
    if not user.is_admin:
        query = query.where(MembershipRow.role.is_not(None))
    return list(session.execute(query.where(ProjectRow.id > after).order_by(ProjectRow.id).limit(limit)))
