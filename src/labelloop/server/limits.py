"""Refuse oversized request bodies with 413 before they are read into memory (pure ASGI middleware)."""

from __future__ import annotations

import json


class _TooLarge(Exception):
    pass


async def _reply(send, status: int, message: str) -> None:
    body = json.dumps({"detail": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def _message(upload: bool, limit: int) -> str:
    what = "an upload" if upload else "a request body"
    return f"{what} may be at most {limit // (1 << 20)} MiB; split it into smaller requests"


class BodyLimit:
    """Multipart uploads may be large; any other body (JSON) is capped much lower."""

    def __init__(self, app, *, max_json_bytes: int, max_upload_bytes: int):
        self.app, self.max_json, self.max_upload = app, max_json_bytes, max_upload_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        upload = chunked = False
        declared = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
            elif name == b"content-type":
                upload = value.startswith(b"multipart/")
            elif name == b"transfer-encoding":
                chunked = True
        limit = self.max_upload if upload else self.max_json
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                return await _reply(send, 400, "the Content-Length header is not a number")
            if size > limit:
                return await _reply(send, 413, _message(upload, limit))
        if not chunked and (declared is not None or scope.get("http_version") in ("1.0", "1.1")):
            # An HTTP/1 server delivers exactly Content-Length bytes (none without the header): nothing to count.
            return await self.app(scope, receive, send)
        message = _message(upload, limit)
        received = 0
        exceeded = replied = False

        async def counting_receive():
            nonlocal received, exceeded
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _TooLarge()
            return event

        async def guarded_send(event):
            # The framework may turn the error raised while it reads the body into its own 400: answer 413 instead.
            nonlocal replied
            if exceeded:
                if not replied:
                    replied = True
                    await _reply(send, 413, message)
                return
            await send(event)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _TooLarge:
            if not replied:
                replied = True
                await _reply(send, 413, message)
