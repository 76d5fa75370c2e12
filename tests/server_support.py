"""A labelling team for server tests: users in every role, tokens, two projects with images."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from labelloop import media

PASSWORD = "correct horse battery"
ROLES = {"owner": "owner", "manager": "manager", "annotator": "annotator", "annotator2": "annotator",
         "reviewer": "reviewer"}


def write_images(folder: Path, count: int, *, width: int = 64, height: int = 48, start: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(start, start + count):
        pixels = ((np.arange(width * height).reshape(height, width) + 7 * n) % 251).astype(np.uint8)
        pixels[0, :4] = np.frombuffer(n.to_bytes(4, "little"), np.uint8)  # distinct content per image
        (folder / f"img{n:04d}.png").write_bytes(media.encode_png(pixels))
    return folder


@dataclass
class Team:
    workspace: object
    tokens: dict[str, str] = field(default_factory=dict)
    user_ids: dict[str, int] = field(default_factory=dict)
    project_id: int = 0
    other_project_id: int = 0
    item_ids: list[int] = field(default_factory=list)

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


def build_team(workspace, images: Path, *, items: int = 6, kind: str = "detection",
               classes: tuple[str, ...] = ("cat", "dog"), settings: dict | None = None) -> Team:
    """admin, owner, manager, annotator, annotator2, reviewer in project 'zoo'; outsider only in project 'other'."""
    from sqlalchemy import select

    from labelloop.services.labelling import users
    from labelloop.services.data.importing import import_path
    from labelloop.services.projects import create_project, get_row, update_settings
    from labelloop.store.tables import ItemRow

    team = Team(workspace)
    with workspace.session() as session:
        for name in ("admin", *ROLES, "outsider"):
            user = users.create_user(session, name, PASSWORD, admin=name == "admin")
            team.user_ids[name] = user.id
            team.tokens[name] = users.create_token(session, user.id, "tests")[1]
        project = create_project(session, "zoo", kind, list(classes))
        other = create_project(session, "other", kind, list(classes))
        if settings:
            update_settings(session, get_row(session, "zoo"), settings)
        for name, role in ROLES.items():
            users.set_role(session, project.id, name, role)
        users.set_role(session, other.id, "outsider", "annotator")
    team.project_id, team.other_project_id = project.id, other.id
    write_images(images, items)
    import_path(workspace, "zoo", images, format="images")
    import_path(workspace, "other", write_images(images.parent / "other-images", 2, start=1000), format="images")
    with workspace.session() as session:
        team.item_ids = list(session.scalars(select(ItemRow.id).where(ItemRow.project_id == project.id)
                                             .order_by(ItemRow.id)))
    return team


def box(label: str = "cat", x0: float = 1, y0: float = 2, x1: float = 20, y1: float = 30, **extra) -> dict:
    return {"type": "box", "label": label, "x0": x0, "y0": y0, "x1": x1, "y1": y1, **extra}


@pytest.fixture
def team(workspace, tmp_path):
    return build_team(workspace, tmp_path / "images")


@pytest.fixture
def client(team):
    from fastapi.testclient import TestClient

    from labelloop.server import create_app
    from labelloop.server.background import ThreadExecutor

    executor = ThreadExecutor(team.workspace)
    with TestClient(create_app(team.workspace, executor=executor)) as test_client:
        yield test_client
    executor.shutdown(wait=True)


def scribble_two_items(client, team) -> None:
    """Background and cell scribbles on the team's first two items (64×48), as the annotator: enough for pixel-rf."""
    from labelloop.geometry import rle

    for item in team.item_ids[:2]:
        marks = np.zeros((48, 64), np.uint8)
        marks[5:10, 5:30], marks[30:40, 20:50] = 1, 2
        shapes = []
        for index, label in ((1, "background"), (2, "cell")):
            size, counts = rle.encode(marks == index)
            shapes.append({"type": "scribble", "label": label, "size": list(size), "counts": counts})
        client.post(f"/api/items/{item}/annotations", json={"shapes": shapes, "base_version": 0},
                    headers=team.auth("annotator"))


def wait_for_job(client, job_id: int, team, timeout: float = 60) -> dict:
    """Poll a job through the API (as the manager) until it ends; its final JSON."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}", headers=team.auth("manager")).json()
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")
