"""A Label Studio ML backend over one labelloop project: `labelloop serve-ml NAME`.

The routes and JSON are those of Label Studio's ML-backend protocol (label-studio-ml-backend's
`label_studio_ml/api.py`): GET /health (and /), POST /setup, POST /predict, POST /webhook, GET /metrics. Errors
answer `{"status": "error", "error": <one line>}` with 400 (bad request), 404 (project, item or image not found) or
409; nothing is changed by a request that fails. The work lives in services/assist/label_studio_backend.py.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from base64 import b64decode
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from labelloop.errors import LabelloopError
from labelloop.server.errors import _status

log = logging.getLogger(__name__)
MAX_BODY = 64 << 20  # bytes of JSON per request


def create_ml_backend(workspace, project_name: str, *, access=None, basic_auth: tuple[str, str] | None = None
                      ) -> FastAPI:
    """The app; an unknown project (or one of a kind the backend does not serve) raises here, before serving."""
    from labelloop.services.assist.label_studio_backend import LabelStudioBackend

    backend = LabelStudioBackend(workspace, project_name, access)
    app = FastAPI(title=f"labelloop ML backend: {project_name}", version="1",
                  description="Label Studio's ML-backend protocol over one labelloop project")
    app.state.backend = backend

    @app.exception_handler(LabelloopError)
    async def _error(request: Request, exc: LabelloopError) -> JSONResponse:
        return _error_response(_status(exc), str(exc))

    @app.middleware("http")
    async def _basic_auth(request: Request, call_next):
        # Label Studio's model settings offer basic auth (user and password) for ML backends.
        if basic_auth is not None and not _authorised(request.headers.get("authorization"), basic_auth):
            return JSONResponse({"status": "error", "error": "unauthorised: give the backend's basic-auth user and "
                                 "password in Label Studio's model settings"}, status_code=401,
                                headers={"WWW-Authenticate": 'Basic realm="labelloop"'})
        return await call_next(request)

    @app.get("/")
    @app.get("/health")
    def health() -> dict[str, Any]:
        return backend.health()

    @app.get("/metrics")
    def metrics() -> dict[str, Any]:
        return {}

    @app.post("/setup")
    async def setup(request: Request):
        return await run_in_threadpool(backend.setup, await _payload(request))

    @app.post("/predict")
    async def predict(request: Request):
        return await run_in_threadpool(backend.predict, await _payload(request))

    @app.post("/webhook")
    async def webhook(request: Request):
        answer = await run_in_threadpool(backend.webhook, await _payload(request))
        # Label Studio's own backends answer 201 to a handled event, 200 to one they ignore.
        return JSONResponse(answer, status_code=201 if answer.get("status") == "ok" else 200)

    return app


def _error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"status": "error", "error": message}, status_code=status)


async def _payload(request: Request) -> dict[str, Any]:
    from labelloop.errors import InvalidInput

    body = await request.body()
    if len(body) > MAX_BODY:
        raise InvalidInput(f"the request body is larger than {MAX_BODY >> 20} MiB")
    try:
        payload = json.loads(body or b"null")
    except ValueError as exc:
        raise InvalidInput(f"the request body is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise InvalidInput("the request body must be a JSON object")
    return payload


def _authorised(header: str | None, expected: tuple[str, str]) -> bool:
    if not header or not header.lower().startswith("basic "):
        return False
    try:
        user, _, password = b64decode(header[6:]).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return False
    return hmac.compare_digest(user, expected[0]) & hmac.compare_digest(password, expected[1])


def basic_auth_from_env() -> tuple[str, str] | None:
    """$LABELLOOP_ML_BASIC_AUTH = user:password, as Label Studio's backends read BASIC_AUTH_USER/PASS."""
    value = os.environ.get("LABELLOOP_ML_BASIC_AUTH")
    if not value:
        return None
    user, sep, password = value.partition(":")
    return (user, password) if sep and user and password else None
