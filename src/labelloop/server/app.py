"""The FastAPI application: one router per resource over the services, no state in process memory."""

from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager
from pathlib import Path

from anyio import to_thread
from fastapi import FastAPI
from sqlalchemy import select

from labelloop.jobs.worker_watch import end_orphan_workers
from labelloop.server import errors, live_router
from labelloop.server.background import make_executor
from labelloop.server.config import ServerConfig
from labelloop.server.limits import BodyLimit
from labelloop.server.routers import annotations, auth, exports, items, jobs, models, predictions, projects, users
from labelloop.server.routers import simulations
from labelloop.server.routers import quality
from labelloop.server.web import mount_web
from labelloop.services.workspace import Workspace
from labelloop.store.tables import JobRow

log = logging.getLogger(__name__)
# Routes are matched in this order: the labelling loop's own (next, save) first, so the busiest requests match soonest.
ROUTERS = (items, annotations, auth, users, projects, predictions, models, jobs, exports, simulations, quality)


def _resume_queued_jobs(app: FastAPI) -> None:
    """Jobs queued before a restart run now; claiming is atomic, so several server processes may all try."""
    workspace = app.state.workspace
    with workspace.session() as session:
        queued = session.scalars(select(JobRow.id).where(JobRow.state == "queued").order_by(JobRow.id)).all()
    for job_id in queued:
        app.state.executor.submit(job_id)


def create_app(workspace_or_dir: Workspace | str | Path, *, executor=None, config: ServerConfig | None = None,
               resume_jobs: bool = True) -> FastAPI:
    """The server over one workspace; `executor` runs train/predict jobs (default: a local process pool)."""
    workspace = workspace_or_dir if isinstance(workspace_or_dir, Workspace) else Workspace.open(workspace_or_dir)
    config = config or ServerConfig()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        to_thread.current_default_thread_limiter().total_tokens = config.request_threads
        ended = end_orphan_workers(workspace.root)  # workers of a server that was killed, before any job starts
        if ended:
            log.warning("ended %d job worker(s) left running by a server that is gone: %s", len(ended), ended)
        if resume_jobs:
            _resume_queued_jobs(app)
        yield
        app.state.executor.shutdown(wait=False)

    app = FastAPI(title="labelloop", version="1", lifespan=lifespan,
                  description="Human-in-the-loop image labelling. Authenticate with `Authorization: Bearer <token>` "
                              "(scripts) or the session cookie from `POST /api/auth/login` plus the `X-CSRF-Token` "
                              "header on unsafe methods (browsers). Lists are paginated: pass `next_cursor` back "
                              "as `cursor`.")
    app.state.workspace = workspace
    app.state.config = config
    app.state.executor = executor or make_executor(workspace, max_workers=config.job_workers)
    errors.install(app)
    for module in ROUTERS:
        app.include_router(module.router)
    app.include_router(live_router.router)  # live pixel classifier for the labelling view (issue 7)
    mount_web(app)  # the browser UI (web/ built into server/web_dist); after the API so the API matches first
    app.add_middleware(BodyLimit, max_json_bytes=config.max_json_bytes, max_upload_bytes=config.max_upload_bytes)
    return app


def app_from_env() -> FastAPI:
    """For `uvicorn --factory` and several worker processes: the workspace comes from the environment."""
    return create_app(os.environ.get("LABELLOOP_DATA_DIR") or os.environ.get("LABELLOOP_HOME"))
