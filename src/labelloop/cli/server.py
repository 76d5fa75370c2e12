"""Server commands: serve, user create/list/role, token create."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from labelloop.cli.common import DataDir, JsonFlag, open_workspace, out, print_json

user_app = typer.Typer(no_args_is_help=True, help="Create users and give them roles in projects.")
token_app = typer.Typer(no_args_is_help=True, help="API tokens for scripts.")


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; 0.0.0.0 exposes the server to the network."),
    port: int = typer.Option(8000, "--port"),
    workers: int = typer.Option(1, "--workers", help="Server processes (they share the workspace's database)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Threads per process that run requests' "
                                          "database work (default 8, or $LABELLOOP_REQUEST_THREADS)."),
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn log level: info shows every request."),
    data_dir: Optional[Path] = DataDir,
) -> None:
    """Run the labelling server (REST API, OpenAPI at /docs)."""
    import uvicorn

    from labelloop.server.protocol import NoDelayHTTPProtocol

    workspace = open_workspace(data_dir)  # fails early, with the usual message, when there is no workspace
    os.environ["LABELLOOP_DATA_DIR"] = str(workspace.root)
    if threads is not None:
        os.environ["LABELLOOP_REQUEST_THREADS"] = str(threads)  # read by each worker process's app
    workspace.close()
    out.print(f"labelloop server on http://{host}:{port} (API docs at /docs), workspace {workspace.root}")
    uvicorn.run("labelloop.server.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, timeout_graceful_shutdown=5, http=NoDelayHTTPProtocol)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return typer.prompt("password", hide_input=True, confirmation_prompt=True)


@user_app.command("create")
def user_create(
    name: str,
    admin: bool = typer.Option(False, "--admin", help="May do everything in every project."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from stdin (scripts)."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Create a user (prompts for the password unless --password-stdin)."""
    from labelloop.services.labelling.users import create_user

    password = _read_password(password_stdin)
    from labelloop.services.workspace import MARKER, resolve_data_dir

    # the first step on a fresh folder: a workspace is made here rather than failing with "run init first"
    new = not (resolve_data_dir(data_dir or os.environ.get("LABELLOOP_DATA_DIR")) / MARKER).exists()
    workspace = open_workspace(data_dir, create=True)
    with workspace.session() as session:
        user = create_user(session, name, password, admin=admin)
    if as_json:
        print_json({**user.to_dict(), "workspace_created": new})
    else:
        if new:
            out.print(f"created a labelloop workspace at {workspace.root}", highlight=False)
        out.print(f"user {user.name} created{' (admin)' if user.is_admin else ''}")


@user_app.command("list")
def user_list(data_dir: Optional[Path] = DataDir, as_json: bool = JsonFlag) -> None:
    """All users."""
    from labelloop.services.labelling.users import list_users

    workspace = open_workspace(data_dir)
    with workspace.session() as session:
        found = list_users(session, limit=100_000)
    if as_json:
        print_json([u.to_dict() for u in found])
    else:
        for user in found:
            out.print(f"{user.name}{' (admin)' if user.is_admin else ''}{'' if user.active else ' (inactive)'}")


@user_app.command("role")
def user_role(
    name: str,
    project: str,
    role: str = typer.Argument(..., help="owner, manager, annotator or reviewer"),
    data_dir: Optional[Path] = DataDir,
) -> None:
    """Give a user a role in a project."""
    from labelloop.services.projects import get_project
    from labelloop.services.labelling.users import set_role

    workspace = open_workspace(data_dir)
    with workspace.session() as session:
        set_role(session, get_project(session, project).id, name, role)
    out.print(f"{name} is {role} in {project}")


@token_app.command("create")
def token_create(
    name: str = typer.Argument(..., help="The user the token acts as."),
    label: str = typer.Option("cli", "--label", help="What the token is for."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Create an API token for a user and print it (it is shown only once)."""
    from labelloop.services.labelling.users import create_token, get_user

    workspace = open_workspace(data_dir)
    with workspace.session() as session:
        token, secret = create_token(session, get_user(session, name).id, label)
    if as_json:
        print_json({**token.to_dict(), "user": name, "token": secret})
    else:
        sys.stdout.write(secret + "\n")


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.add_typer(user_app, name="user")
    app.add_typer(token_app, name="token")
