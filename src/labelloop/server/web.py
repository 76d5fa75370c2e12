"""The browser UI: the Vite build of web/ (in web_dist/), served beside the API.

Hashed assets live under /assets and are cached for good; every other GET outside the API answers index.html,
so client routes (/projects/3/label) survive a reload. Without a build, those routes explain how to make one."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

WEB_DIST = Path(__file__).with_name("web_dist")
API_PREFIXES = ("api/", "docs", "redoc", "openapi.json")
NOT_BUILT = ("<!doctype html><title>labelloop</title><p>The browser UI is not built. Run "
             "<code>bash scripts/setup.sh</code> (or <code>npm ci && npm run build</code> in <code>web/</code>), "
             "then reload. The API is at <a href=\"/docs\">/docs</a>.</p>")


class _ImmutableStatic(StaticFiles):
    async def get_response(self, path: str, scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code == 200:
            response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        return response


def mount_web(app: FastAPI, dist: Path = WEB_DIST) -> None:
    """Serve the built UI on `app`; call after the API routers so they match first."""
    assets = dist / "assets"
    if assets.is_dir():
        app.mount("/assets", _ImmutableStatic(directory=assets), name="web-assets")

    @app.get("/{path:path}", include_in_schema=False)
    def web_page(path: str, request: Request) -> Response:
        if path.startswith(API_PREFIXES):
            raise HTTPException(404, f"no such API path: /{path}")
        index = dist / "index.html"
        if not index.is_file():
            return HTMLResponse(NOT_BUILT, status_code=503)
        candidate = (dist / path).resolve()
        if path and candidate.is_file() and candidate.is_relative_to(dist.resolve()):
            return FileResponse(candidate)
        return FileResponse(index, headers={"Cache-Control": "no-cache"})
