"""Service exceptions to HTTP answers: one line the user can act on, in `detail`."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from labelloop.errors import Conflict, InvalidInput, LabelloopError, NotFound
from labelloop.services.labelling.users import NotAuthenticated, PermissionDenied

log = logging.getLogger(__name__)
STATUS: list[tuple[type[LabelloopError], int]] = [
    (NotAuthenticated, 401),
    (PermissionDenied, 403),
    (NotFound, 404),
    (Conflict, 409),
    (InvalidInput, 400),
    (LabelloopError, 400),
]


def _status(exc: LabelloopError) -> int:
    return next(code for kind, code in STATUS if isinstance(exc, kind))


async def _labelloop_error(request: Request, exc: LabelloopError) -> JSONResponse:
    status = _status(exc)
    body: dict = {"detail": str(exc)}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if isinstance(exc, Conflict):
        current = exc.current.to_dict() if hasattr(exc.current, "to_dict") else exc.current
        body["current"] = jsonable_encoder(current)
    return JSONResponse(body, status_code=status, headers=headers)


def _place(loc) -> str:
    return ".".join(str(p) for p in loc if p not in ("body",)) or "body"


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    summary = f"{_place(first.get('loc', ()))}: {first.get('msg', 'invalid')}"
    if len(errors) > 1:
        summary += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    details = [{"loc": list(map(str, e.get("loc", ()))), "msg": e.get("msg"), "type": e.get("type")} for e in errors[:50]]
    return JSONResponse({"detail": summary, "errors": details}, status_code=422)


def install(app: FastAPI) -> None:
    app.add_exception_handler(LabelloopError, _labelloop_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
