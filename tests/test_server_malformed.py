"""Malformed requests get a 4xx with a clear message and change nothing."""

from __future__ import annotations

import json

from server_support import box, client, team  # noqa: F401  (fixtures)

from conftest import snapshot


def _assignments(workspace) -> int:
    from sqlalchemy import func, select

    from labelloop.store.tables import AssignmentRow

    with workspace.session() as session:
        return session.scalar(select(func.count()).select_from(AssignmentRow))


BAD_BODIES = [
    ({"shapes": [box()]}, 422, "base_version"),  # no base version
    ({"shapes": box(), "base_version": 0}, 422, "shapes"),  # not a list
    ({"shapes": [{"type": "box", "label": "cat", "x0": 1}], "base_version": 0}, 422, "y0"),
    ({"shapes": [{"type": "star", "label": "cat"}], "base_version": 0}, 422, "shapes.0"),
    ({"shapes": [box(x0="left")], "base_version": 0}, 422, "x0"),
    ({"shapes": [box(extra=1)], "base_version": 0}, 422, "extra"),
    ({"shapes": [box(x0=1e300)], "base_version": 0}, 422, "x0"),
    ({"shapes": [box()], "base_version": -1}, 422, "base_version"),
    ({"shapes": [box()], "base_version": 0, "state": "accepted"}, 422, "state"),
    ({"shapes": [box(x1=500)], "base_version": 0}, 400, "outside the 64×48 image"),
    ({"shapes": [box(x0=-30)], "base_version": 0}, 400, "outside"),
    ({"shapes": [box(x1=1)], "base_version": 0}, 400, "no area"),
    ({"shapes": [box("zebra")], "base_version": 0}, 400, "class 'zebra' is not in the project's classes"),
    ({"shapes": [{"type": "polygon", "label": "cat", "parts": [[[1, 1], [5, 1], [5, 5]]]}], "base_version": 0}, 400,
     "detection project takes box"),
    ({"shapes": [{"type": "mask", "label": "cat", "size": [48, 64], "counts": "\u00ff"}], "base_version": 0}, 422,
     "counts"),
    ([], 422, "body"),
]


def test_wrong_annotations_are_refused_and_nothing_changes(client, team):
    before = snapshot(team.workspace)
    for body, status, message in BAD_BODIES:
        response = client.post(f"/api/items/{team.item_ids[0]}/annotations", json=body, headers=team.auth("annotator"))
        assert response.status_code == status, (body, response.json())
        assert message in response.json()["detail"] or message in json.dumps(response.json()), response.json()
    assert snapshot(team.workspace) == before and _assignments(team.workspace) == 0


def test_nan_infinity_broken_json_and_huge_bodies(client, team):
    url = f"/api/items/{team.item_ids[0]}/annotations"
    before = snapshot(team.workspace)
    headers = {**team.auth("annotator"), "content-type": "application/json"}
    for literal in ("NaN", "Infinity", "-Infinity"):
        raw = '{"shapes": [{"type": "box", "label": "cat", "x0": %s, "y0": 1, "x1": 5, "y1": 5}], "base_version": 0}'
        response = client.post(url, content=raw % literal, headers=headers)
        assert response.status_code == 422 and "finite" in response.json()["detail"], literal
    broken = client.post(url, content=b'{"shapes": [', headers=headers)
    assert broken.status_code == 422 and "JSON" in broken.json()["detail"]
    big = json.dumps({"shapes": [box() for _ in range(50 * 1024 * 1024 // 70)], "base_version": 0}).encode()
    assert len(big) > 50 * 1000 * 1000
    response = client.post(url, content=big, headers=headers)
    assert response.status_code == 413 and "at most 16 MiB" in response.json()["detail"]
    chunked = client.post(url, content=iter([big[i:i + (1 << 20)] for i in range(0, len(big), 1 << 20)]), headers=headers)
    assert chunked.status_code == 413  # no Content-Length: counted while it streams in
    assert snapshot(team.workspace) == before


BAD_PATHS = [
    "/api/items/99999999999999999999/annotations",
    "/api/items/0",
    "/api/projects/abc",
    "/api/projects/1/items?limit=0",
    "/api/projects/1/items?limit=100000",
    "/api/projects/1/items?cursor=-5",
    "/api/projects/1/items?cursor=99999999999999999999",
    "/api/items/1/image?level=-1",
    "/api/items/1/image?window_centre=nan&window_width=4",
    "/api/items/1/image?window_centre=10&window_width=0",
]


def test_bad_paths_and_queries_are_4xx(client, team):
    for path in BAD_PATHS:
        response = client.get(path, headers=team.auth("admin"))
        assert 400 <= response.status_code < 500 and response.json()["detail"], (path, response.status_code)


def test_bad_project_and_review_bodies(client, team):
    before = snapshot(team.workspace)
    bad_projects = [{"name": "x"}, {"name": "bad name!", "kind": "detection"}, {"name": "p", "kind": "video"},
                    {"name": "p", "kind": "detection", "classes": ["a", "a"]},
                    {"name": "p", "kind": "detection", "colours": ["red"]}]
    for body in bad_projects:
        assert client.post("/api/projects", json=body, headers=team.auth("owner")).status_code in (400, 422), body
    item = team.item_ids[0]
    for body in ({"action": "bless", "version": 1}, {"action": "accept"}, {"action": "edit", "version": 1,
                                                                             "shapes": [box(x0=float("nan"))]}):
        assert client.post(f"/api/items/{item}/review", content=json.dumps(body),
                           headers={**team.auth("reviewer"), "content-type": "application/json"}).status_code == 422
    assert client.post("/api/auth/login", json={"name": "", "password": ""}).status_code == 422
    assert snapshot(team.workspace) == before
