"""`labelloop serve-ml NAME`: a Label Studio ML backend (pre-labels, labels back by webhook) over one project."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from labelloop.cli.common import DataDir, open_workspace, out


def serve_ml(
    name: str = typer.Argument(..., help="The labelloop project whose models answer Label Studio."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; 0.0.0.0 when Label Studio runs on another "
                             "machine or in a container."),
    port: int = typer.Option(9090, "--port", help="Port (9090 is the usual one of Label Studio ML backends)."),
    local_files: Optional[Path] = typer.Option(
        None, "--local-files", help="Folder of images that tasks may name by path (default: "
        "$LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT); no other local file is read."),
    basic_auth: Optional[str] = typer.Option(
        None, "--basic-auth", help="user:password that Label Studio must send (default: $LABELLOOP_ML_BASIC_AUTH)."),
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn log level: info shows every request."),
    data_dir: Optional[Path] = DataDir,
) -> None:
    """Serve a project's calibrated pre-labels to Label Studio (enter http://HOST:PORT in its Model settings)."""
    import uvicorn

    from labelloop.errors import InvalidInput
    from labelloop.server.ml_backend import basic_auth_from_env, create_ml_backend
    from labelloop.services.assist.ls_images import LabelStudioAccess

    auth = basic_auth_from_env()
    if basic_auth is not None:
        user, sep, password = basic_auth.partition(":")
        if not (sep and user and password):
            raise InvalidInput("--basic-auth: give user:password")
        auth = (user, password)
    workspace = open_workspace(data_dir)
    app = create_ml_backend(workspace, name, access=LabelStudioAccess.from_env(local_files), basic_auth=auth)
    backend = app.state.backend
    backend.predictor.warm_up(backend.project())
    out.print(f"labelloop ML backend for project {name} on http://{host}:{port}: enter this URL in Label Studio's "
              f"project Settings → Model → Connect model", highlight=False)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)


def register(app: typer.Typer) -> None:
    app.command("serve-ml")(serve_ml)
