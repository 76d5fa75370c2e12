"""Log in and out, who am I, API tokens."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Request, Response

from labelloop.server.auth import (
    CSRF_COOKIE, MAX_ID, SESSION_COOKIE, Principal, cookie_scheme, current_user, optional_user, workspace_of,
)
from labelloop.server.pagination import Page, PageParams, page
from labelloop.server.schemas import LoginIn, LoginOut, TokenIn, TokenOut, UserOut
from labelloop.services.labelling import users
from labelloop.services.transactions import write_transaction
from labelloop.services.labelling.users import NotAuthenticated

router = APIRouter(prefix="/api/auth", tags=["auth"])


def _secure(request: Request) -> bool:
    configured = request.app.state.config.secure_cookies
    return request.url.scheme == "https" if configured is None else configured


@router.post("/login", response_model=LoginOut, summary="Log in: sets the session cookie, returns the CSRF token")
def login(body: LoginIn, request: Request, response: Response):
    config = request.app.state.config
    with write_transaction(workspace_of(request)) as session:
        user = users.authenticate(session, body.name, body.password)
        secret, csrf = users.create_session(session, user.id, config.session_lifetime)
    age = int(config.session_lifetime.total_seconds())
    secure = _secure(request)
    response.set_cookie(SESSION_COOKIE, secret, max_age=age, httponly=True, samesite="strict", secure=secure)
    response.set_cookie(CSRF_COOKIE, csrf, max_age=age, httponly=False, samesite="strict", secure=secure)
    return {"user": user.to_dict(), "csrf_token": csrf}


@router.post("/logout", status_code=204, summary="End this browser session")
def logout(request: Request, principal: Principal = Depends(current_user), cookie: str | None = Depends(cookie_scheme)):
    if principal.via == "session" and cookie:
        with write_transaction(workspace_of(request)) as session:
            users.end_session(session, cookie)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE)
    response.delete_cookie(CSRF_COOKIE)
    return response


@router.get("/me", response_model=UserOut, summary="The user these credentials belong to")
def me(principal: Principal = Depends(current_user)):
    return principal.user.to_dict()


@router.post("/token", response_model=TokenOut, status_code=201,
             summary="Create an API token (logged in, or with user and password in the body)")
def create_token(body: TokenIn, request: Request, principal: Principal | None = Depends(optional_user)):
    with write_transaction(workspace_of(request)) as session:
        if body.user is not None or body.password is not None:
            user = users.authenticate(session, body.user or "", body.password or "")
        elif principal is not None:
            user = principal.user
        else:
            raise NotAuthenticated("log in first, or send user and password with the request")
        token, secret = users.create_token(session, user.id, body.name)
    return {**token.to_dict(), "token": secret}


@router.get("/tokens", response_model=Page[TokenOut], summary="Your API tokens (secrets are never shown again)")
def list_tokens(request: Request, principal: Principal = Depends(current_user), params: PageParams = Depends()):
    with workspace_of(request).session() as session:
        found = [t.to_dict() for t in users.list_tokens(session, principal.user.id) if t.id > params.after]
    return page(found[: params.limit], params, lambda t: t["id"])


@router.delete("/tokens/{token_id}", response_model=TokenOut, summary="Revoke an API token")
def revoke_token(request: Request, token_id: int = Path(ge=1, le=MAX_ID), principal: Principal = Depends(current_user)):
    with write_transaction(workspace_of(request)) as session:
        return users.revoke_token(session, token_id, principal.user).to_dict()
