"""The REST API as scripts and the UI use it, with every denial, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from server_support import PASSWORD, box, client, team  # noqa: F401  (fixtures)

from labelloop import media


def test_openapi_and_docs_are_served(client):
    schema = client.get("/openapi.json").json()
    for path in ("/api/auth/login", "/api/auth/token", "/api/projects", "/api/projects/{project_id}",
                 "/api/projects/{project_id}/items", "/api/items/{item_id}", "/api/items/{item_id}/image",
                 "/api/projects/{project_id}/next", "/api/items/{item_id}/annotations",
                 "/api/projects/{project_id}/predictions", "/api/predictions/{prediction_id}/review",
                 "/api/projects/{project_id}/stats", "/api/projects/{project_id}/models",
                 "/api/projects/{project_id}/train", "/api/projects/{project_id}/predict", "/api/jobs/{job_id}",
                 "/api/jobs/{job_id}/cancel", "/api/projects/{project_id}/export"):
        assert path in schema["paths"], path
    assert client.get("/docs").status_code == 200


def test_login_sets_a_safe_cookie_and_unsafe_methods_need_the_csrf_token(client, team):
    assert client.post("/api/auth/login", json={"name": "annotator", "password": "wrong password"}).status_code == 401
    response = client.post("/api/auth/login", json={"name": "annotator", "password": PASSWORD})
    assert response.status_code == 200
    cookie = next(h for h in response.headers.get_list("set-cookie") if h.startswith("labelloop_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    csrf = response.json()["csrf_token"]
    assert client.get("/api/auth/me").json()["name"] == "annotator"
    item = team.item_ids[0]
    body = {"shapes": [box()], "base_version": 0}
    refused = client.post(f"/api/items/{item}/annotations", json=body)
    assert refused.status_code == 403 and "X-CSRF-Token" in refused.json()["detail"]
    assert client.post(f"/api/items/{item}/annotations", json=body, headers={"X-CSRF-Token": "forged"}).status_code == 403
    assert client.get(f"/api/items/{item}/annotations").json()["items"] == []
    assert client.post(f"/api/items/{item}/annotations", json=body, headers={"X-CSRF-Token": csrf}).status_code == 201
    assert client.post("/api/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
    client.cookies.clear()
    assert client.get("/api/auth/me").status_code == 401


def test_api_tokens_create_list_revoke(client, team):
    assert client.get("/api/auth/me").status_code == 401
    assert client.get("/api/auth/me", headers={"Authorization": "Bearer llt_nonsense"}).status_code == 401
    assert client.get("/api/auth/me", headers={"Authorization": "Basic abc"}).status_code == 401
    assert client.post("/api/auth/token", json={"name": "x", "user": "annotator", "password": "nope nope"}).status_code == 401
    made = client.post("/api/auth/token", json={"name": "script", "user": "annotator", "password": PASSWORD})
    assert made.status_code == 201
    secret = made.json()["token"]
    headers = {"Authorization": f"Bearer {secret}"}
    assert client.get("/api/auth/me", headers=headers).json()["name"] == "annotator"
    listed = client.get("/api/auth/tokens", headers=headers).json()["items"]
    assert {t["name"] for t in listed} == {"tests", "script"} and all("token" not in t or t["token"] is None for t in listed)
    more = client.post("/api/auth/token", json={"name": "second"}, headers=headers)  # while authenticated
    assert more.status_code == 201
    assert client.delete(f"/api/auth/tokens/{made.json()['id']}", headers=team.auth("reviewer")).status_code == 404
    revoked = client.delete(f"/api/auth/tokens/{made.json()['id']}", headers=headers)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert client.get("/api/auth/me", headers=headers).status_code == 401
    assert client.get("/api/auth/me", headers={"Authorization": f"Bearer {more.json()['token']}"}).status_code == 200


def test_users_are_managed_by_admins(client, team):
    assert client.get("/api/users", headers=team.auth("owner")).status_code == 403
    assert client.post("/api/users", json={"name": "eve"}, headers=team.auth("manager")).status_code == 403
    page = client.get("/api/users?limit=3", headers=team.auth("admin")).json()
    assert len(page["items"]) == 3 and page["next_cursor"]
    rest = client.get(f"/api/users?cursor={page['next_cursor']}", headers=team.auth("admin")).json()["items"]
    assert len(page["items"]) + len(rest) == 7
    made = client.post("/api/users", json={"name": "eve", "password": "long enough"}, headers=team.auth("admin"))
    assert made.status_code == 201 and made.json()["is_admin"] is False
    assert client.post("/api/users", json={"name": "eve"}, headers=team.auth("admin")).status_code == 409


def test_projects_are_visible_to_members_only(client, team):
    names = lambda who: [p["name"] for p in client.get("/api/projects", headers=team.auth(who)).json()["items"]]  # noqa: E731
    assert names("annotator") == ["zoo"] and names("outsider") == ["other"] and names("admin") == ["zoo", "other"]
    assert client.get(f"/api/projects/{team.project_id}", headers=team.auth("annotator")).json()["role"] == "annotator"
    denied = client.get(f"/api/projects/{team.project_id}", headers=team.auth("outsider"))
    assert denied.status_code == 403 and "not a member" in denied.json()["detail"]
    assert client.get("/api/projects/999999", headers=team.auth("admin")).status_code == 404
    made = client.post("/api/projects", json={"name": "mine", "kind": "classification", "classes": ["a", "b"]},
                       headers=team.auth("outsider"))
    assert made.status_code == 201 and made.json()["role"] == "owner"
    assert client.post("/api/projects", json={"name": "mine", "kind": "classification"},
                       headers=team.auth("outsider")).status_code == 409


def test_project_settings_classes_and_members(client, team):
    url = f"/api/projects/{team.project_id}"
    assert client.patch(url, json={"settings": {"overlap": 2}}, headers=team.auth("annotator")).status_code == 403
    changed = client.patch(url, json={"add_classes": ["bird"], "settings": {"overlap": 2, "lease_seconds": 60}},
                           headers=team.auth("manager"))
    assert changed.status_code == 200
    assert [c["name"] for c in changed.json()["classes"]] == ["cat", "dog", "bird"]
    assert changed.json()["settings"]["overlap"] == 2
    for bad in ({"overlap": 0}, {"overlap": "two"}, {"colour": "red"}, {"sampling": "astrology"}):
        assert client.patch(url, json={"settings": bad}, headers=team.auth("manager")).status_code == 400, bad
    members = client.get(f"{url}/members", headers=team.auth("annotator")).json()["items"]
    assert {"user": "reviewer", "role": "reviewer"} in members
    assert client.put(f"{url}/members/outsider", json={"role": "annotator"}, headers=team.auth("annotator")).status_code == 403
    assert client.put(f"{url}/members/outsider", json={"role": "owner"}, headers=team.auth("manager")).status_code == 403
    assert client.put(f"{url}/members/outsider", json={"role": "reviewer"}, headers=team.auth("manager")).status_code == 200
    assert client.get(url, headers=team.auth("outsider")).json()["role"] == "reviewer"
    assert client.put(f"{url}/members/nobody", json={"role": "reviewer"}, headers=team.auth("owner")).status_code == 404
    assert client.delete(f"{url}/members/outsider", headers=team.auth("owner")).status_code == 204
    assert client.get(url, headers=team.auth("outsider")).status_code == 403


def test_upload_list_show_and_image_levels(client, team):
    url = f"/api/projects/{team.project_id}/items"
    grey16 = (np.arange(300 * 200, dtype=np.uint32).reshape(200, 300) * 11 % 65535).astype(np.uint16)
    files = [("files", ("deep.png", media.encode_png(grey16), "image/png"))]
    assert client.post(url, files=files, headers=team.auth("annotator")).status_code == 403
    bad = [("files", ("a.png", media.encode_png(grey16), "image/png")), ("files", ("b.png", b"not an image", "image/png"))]
    refused = client.post(url, files=bad, headers=team.auth("manager"))
    assert refused.status_code == 400 and "nothing was imported" in refused.json()["detail"]
    uploaded = client.post(url, files=files, data={"split": "val"}, headers=team.auth("manager"))
    assert uploaded.status_code == 201 and uploaded.json()["items_added"] == 1
    first = client.get(f"{url}?limit=4", headers=team.auth("annotator")).json()
    second = client.get(f"{url}?limit=4&cursor={first['next_cursor']}", headers=team.auth("annotator")).json()
    assert len(first["items"]) == 4 and len(second["items"]) == 3 and second["next_cursor"] is None
    deep = second["items"][-1]
    assert (deep["width"], deep["height"], deep["dtype"], deep["split"]) == (300, 200, "uint16", "val")
    assert client.get(f"{url}?state=unlabelled", headers=team.auth("annotator")).json()["items"][0]["state"] == "unlabelled"
    assert client.get(f"{url}?state=bogus", headers=team.auth("annotator")).status_code == 400
    assert client.get(url, headers=team.auth("outsider")).status_code == 403
    shown = client.get(f"/api/items/{deep['id']}", headers=team.auth("reviewer")).json()
    assert shown["base_version"] == 0 and shown["image_levels"] == 10
    image = f"/api/items/{deep['id']}/image"
    full = media.decode_png(client.get(image, headers=team.auth("annotator")).content)
    assert full.shape == (200, 300) and full.dtype == np.uint8 and full.max() > 200  # 16-bit windowed to 8-bit
    half = media.decode_png(client.get(f"{image}?level=1", headers=team.auth("annotator")).content)
    assert half.shape == (100, 150)
    windowed = media.decode_png(client.get(f"{image}?window_centre=100&window_width=50",
                                           headers=team.auth("annotator")).content)
    assert windowed.shape == (200, 300) and set(np.unique(windowed)) - {0, 255}  # a narrow window saturates
    tile = media.decode_png(client.get(f"{image}?tile_x=0&tile_y=0&level=0", headers=team.auth("annotator")).content)
    assert tile.shape == (200, 300)
    assert client.get(f"{image}?tile_x=5&tile_y=0", headers=team.auth("annotator")).status_code == 400
    assert client.get(f"{image}?level=12", headers=team.auth("annotator")).status_code == 400
    assert client.get(f"{image}?window_centre=5", headers=team.auth("annotator")).status_code == 400
    assert client.get(image, headers=team.auth("outsider")).status_code == 403


def test_next_leases_drafts_submit_skip_and_stale_writes(client, team):
    next_url = f"/api/projects/{team.project_id}/next"
    first = client.get(next_url, headers=team.auth("annotator")).json()
    assert first["item"] and first["lease_expires_at"] and first["base_version"] == 0
    again = client.get(next_url, headers=team.auth("annotator")).json()
    assert again["item"]["id"] == first["item"]["id"]  # the lease holds until submit or skip
    other = client.get(next_url, headers=team.auth("annotator2")).json()
    assert other["item"]["id"] != first["item"]["id"]
    item = first["item"]["id"]
    url = f"/api/items/{item}/annotations"
    draft = client.post(url, json={"shapes": [box()], "base_version": 0, "state": "draft"}, headers=team.auth("annotator"))
    assert draft.status_code == 201 and draft.json()["state"] == "draft" and draft.json()["version"] == 1
    resumed = client.get(next_url, headers=team.auth("annotator")).json()
    assert resumed["annotation"]["state"] == "draft" and resumed["base_version"] == 1
    stale = client.post(url, json={"shapes": [box("dog")], "base_version": 0}, headers=team.auth("annotator"))
    assert stale.status_code == 409
    assert stale.json()["current"]["version"] == 1 and stale.json()["current"]["shapes"][0]["label"] == "cat"
    done = client.post(url, json={"shapes": [box("dog")], "base_version": 1}, headers=team.auth("annotator"))
    assert done.status_code == 201 and done.json()["version"] == 2 and done.json()["author"] == "annotator"
    history = client.get(url, headers=team.auth("reviewer")).json()["items"]
    assert [(a["version"], a["state"]) for a in history] == [(1, "draft"), (2, "submitted")]
    after = client.get(next_url, headers=team.auth("annotator")).json()["item"]["id"]
    assert after not in (item, other["item"]["id"])
    assert client.post(f"/api/items/{after}/skip", headers=team.auth("annotator")).status_code == 200
    seen = set()
    while (nxt := client.get(next_url, headers=team.auth("annotator")).json())["item"]:
        seen.add(nxt["item"]["id"])
        client.post(f"/api/items/{nxt['item']['id']}/annotations", json={"shapes": [], "base_version": 0},
                    headers=team.auth("annotator"))
    assert after not in seen and item not in seen and other["item"]["id"] not in seen
    assert nxt["message"]
    assert client.post(f"/api/items/{item}/skip", headers=team.auth("annotator")).status_code == 400
    assert client.get(next_url, headers=team.auth("reviewer")).status_code == 403
    assert client.get(next_url, headers=team.auth("outsider")).status_code == 403
    assert client.post(url, json={"shapes": [], "base_version": 2}, headers=team.auth("outsider")).status_code == 403
    assert client.post(url, json={"shapes": [], "base_version": 2}, headers=team.auth("reviewer")).status_code == 403
    assert client.post(url, json={"shapes": [], "base_version": 2}).status_code == 401


def test_an_abandoned_lease_expires(client, team):
    from sqlalchemy import update

    from labelloop.store.tables import AssignmentRow, utcnow

    url = f"/api/projects/{team.project_id}/next"
    client.patch(f"/api/projects/{team.project_id}", json={"settings": {"overlap": 1}}, headers=team.auth("owner"))
    taken = client.get(url, headers=team.auth("annotator")).json()["item"]["id"]
    with team.workspace.session() as session:
        session.execute(update(AssignmentRow).values(expires_at=utcnow()))
    handed = []
    while (nxt := client.get(url, headers=team.auth("annotator2")).json())["item"]:
        handed.append(nxt["item"]["id"])
        client.post(f"/api/items/{handed[-1]}/annotations", json={"shapes": [], "base_version": 0},
                    headers=team.auth("annotator2"))
    assert taken in handed and len(handed) == len(team.item_ids)


def test_review_of_submitted_annotations(client, team):
    item, second = team.item_ids[:2]
    for target in (item, second):
        client.post(f"/api/items/{target}/annotations", json={"shapes": [box()], "base_version": 0},
                    headers=team.auth("annotator"))
    queue_url = f"/api/projects/{team.project_id}/review"
    assert client.get(queue_url, headers=team.auth("annotator")).status_code == 403
    assert [a["item_id"] for a in client.get(queue_url, headers=team.auth("reviewer")).json()["items"]] == [item, second]
    url = f"/api/items/{item}/review"
    denied = client.post(url, json={"action": "accept", "version": 1}, headers=team.auth("annotator"))
    assert denied.status_code == 403 and "reviewer" in denied.json()["detail"]
    assert client.post(url, json={"action": "accept", "version": 7}, headers=team.auth("reviewer")).status_code == 409
    assert client.post(url, json={"action": "accept", "version": 1, "shapes": []},
                       headers=team.auth("reviewer")).status_code == 400
    accepted = client.post(url, json={"action": "accept", "version": 1}, headers=team.auth("reviewer"))
    assert accepted.status_code == 200
    verdict = accepted.json()
    assert verdict["reviewer"] == "reviewer" and verdict["reviewed_at"] and verdict["annotation"]["state"] == "accepted"
    assert verdict["annotation"]["author"] == "annotator" and verdict["annotation"]["version"] == 2
    assert client.post(url, json={"action": "reject", "version": 2}, headers=team.auth("reviewer")).status_code == 409
    rejected = client.post(f"/api/items/{second}/review", json={"action": "reject", "version": 1, "comment": "too loose"},
                           headers=team.auth("reviewer"))
    assert rejected.status_code == 200 and rejected.json()["annotation"] is None
    assert client.get(queue_url, headers=team.auth("reviewer")).json()["items"] == []
    handed = client.get(f"/api/projects/{team.project_id}/next", headers=team.auth("annotator")).json()["item"]["id"]
    assert handed != item  # accepted items are settled; the rejected one is back in the queue
    client.post(f"/api/items/{second}/annotations", json={"shapes": [box(x1=15)], "base_version": 1},
                headers=team.auth("annotator"))
    edited = client.post(f"/api/items/{second}/review",
                         json={"action": "edit", "version": 2, "shapes": [box("dog", x1=12)]}, headers=team.auth("owner"))
    assert edited.status_code == 200 and edited.json()["annotation"]["author"] == "owner"
    stats = client.get(f"/api/projects/{team.project_id}/stats", headers=team.auth("annotator")).json()
    assert stats["reviews"] == {"accept": 1, "edit": 1, "reject": 1}


def test_class_colours_change_and_used_classes_cannot_be_renamed_or_removed(client, team):
    url = f"/api/projects/{team.project_id}"
    patch = lambda who, **body: client.patch(url, json=body, headers=team.auth(who))  # noqa: E731
    assert patch("annotator", class_colours={"cat": "#123456"}).status_code == 403
    changed = patch("manager", class_colours={"cat": "#123456"})
    assert changed.status_code == 200
    assert [(c["name"], c["index"], c["colour"]) for c in changed.json()["classes"]][0] == ("cat", 1, "#123456")
    assert client.get(url, headers=team.auth("annotator")).json()["classes"][0]["colour"] == "#123456"
    assert patch("manager", class_colours={"cat": "red"}).status_code == 422
    unknown = patch("manager", class_colours={"cow": "#000000"})
    assert unknown.status_code == 400 and "cat, dog" in unknown.json()["detail"]

    item = team.item_ids[0]
    saved = client.post(f"/api/items/{item}/annotations", json={"shapes": [box("cat")], "base_version": 0},
                        headers=team.auth("annotator"))
    assert saved.status_code == 201
    _add_prediction(team, team.item_ids[1], [box("dog", score=0.7)])
    patch("manager", add_classes=["bird", "fish"])
    for body in ({"rename_classes": {"cat": "kitten"}}, {"remove_classes": ["cat"]}, {"remove_classes": ["dog"]}):
        refused = patch("owner", **body)
        assert refused.status_code == 409, body
        assert "used by 1 annotation revision(s) or prediction(s)" in refused.json()["detail"]
    assert patch("owner", rename_classes={"bird": "dog"}).status_code == 409  # taken
    assert patch("owner", rename_classes={"bird": "dog"}, remove_classes=["cat"]).status_code == 409  # nothing half-done
    renamed = patch("owner", rename_classes={"bird": "finch"}, remove_classes=["fish"],
                    class_colours={"bird": "#00ff00"})
    assert renamed.status_code == 200
    assert [(c["name"], c["index"], c["colour"]) for c in renamed.json()["classes"]] == [
        ("cat", 1, "#123456"), ("dog", 2, changed.json()["classes"][1]["colour"]), ("finch", 3, "#00ff00")]

    from labelloop.store.tables import ModelRow

    with team.workspace.session() as session:
        session.add(ModelRow(project_id=team.project_id, kind="pixel-rf", version=1, params={}, metrics={},
                             curves={}, item_ids=[]))
    patch("owner", add_classes=["spare"])
    refused = patch("owner", remove_classes=["spare"])
    assert refused.status_code == 409 and "trained model" in refused.json()["detail"]


def _add_prediction(team, item_id: int, shapes: list[dict]) -> int:
    from labelloop.store.tables import PredictionRow

    with team.workspace.session() as session:
        row = PredictionRow(item_id=item_id, model_version="test:1", shapes=shapes, score=0.8, review_state="pending")
        session.add(row)
        session.flush()
        return row.id


def test_review_of_predictions(client, team):
    ids = [_add_prediction(team, item, [box(score=0.9)]) for item in team.item_ids[:3]]
    url = f"/api/projects/{team.project_id}/predictions"
    assert [p["id"] for p in client.get(f"{url}?state=pending", headers=team.auth("reviewer")).json()["items"]] == ids
    assert client.get(f"{url}?state=maybe", headers=team.auth("reviewer")).status_code == 400
    assert client.get(url, headers=team.auth("outsider")).status_code == 403
    review = lambda pid, who, **body: client.post(f"/api/predictions/{pid}/review", json=body, headers=team.auth(who))  # noqa: E731
    assert review(ids[0], "annotator", action="accept").status_code == 403
    assert review(ids[0], "outsider", action="accept").status_code == 403
    accepted = review(ids[0], "reviewer", action="accept")
    assert accepted.status_code == 200
    # no score on labels; the accepted shape names the prediction it came from
    assert accepted.json()["annotation"]["shapes"] == [{**box(x0=1.0, y0=2.0, x1=20.0, y1=30.0),
                                                        "attributes": {"prediction": f"{ids[0]}:0"}}]
    again = review(ids[0], "manager", action="reject")
    assert again.status_code == 409 and again.json()["current"]["reviewer"] == "reviewer"
    assert review(ids[1], "reviewer", action="edit").status_code == 400
    edited = review(ids[1], "reviewer", action="edit", shapes=[box("dog", x1=10)])
    assert edited.json()["annotation"]["shapes"][0]["label"] == "dog"
    assert review(ids[2], "reviewer", action="reject").json()["annotation"] is None
    states = [p["review_state"] for p in client.get(url, headers=team.auth("reviewer")).json()["items"]]
    assert states == ["accepted", "edited", "rejected"]
    assert client.get(f"{url}?state=pending", headers=team.auth("reviewer")).json()["items"] == []
    assert review(999999, "reviewer", action="reject").status_code == 404


def test_predictions_of_one_item_and_pre_labels_dismissed_while_labelling(client, team):
    first, second = team.item_ids[:2]
    ids = [_add_prediction(team, first, [box(score=0.9), box("dog", x0=30, x1=40, score=0.4)]),
           _add_prediction(team, second, [box(score=0.8)]),
           _add_prediction(team, first, [box("dog", score=0.6)])]
    url = f"/api/projects/{team.project_id}/predictions"
    mine = client.get(url, params={"state": "pending", "item": first}, headers=team.auth("annotator")).json()
    assert [p["id"] for p in mine["items"]] == [ids[0], ids[2]] and mine["next_cursor"] is None
    paged = client.get(url, params={"item": first, "limit": 1}, headers=team.auth("annotator")).json()
    assert [p["id"] for p in paged["items"]] == [ids[0]] and paged["next_cursor"]
    rest = client.get(url, params={"item": first, "limit": 1, "cursor": paged["next_cursor"]}, headers=team.auth("annotator"))
    assert [p["id"] for p in rest.json()["items"]] == [ids[2]]
    other_project_item = client.get(f"/api/projects/{team.other_project_id}/items", headers=team.auth("outsider")).json()
    assert client.get(url, params={"item": other_project_item["items"][0]["id"]},
                      headers=team.auth("annotator")).json()["items"] == []
    assert client.get(url, params={"item": 0}, headers=team.auth("annotator")).status_code == 422

    dismiss = lambda pid, who, shapes: client.post(f"/api/predictions/{pid}/dismiss", json={"shapes": shapes},  # noqa: E731
                                                   headers=team.auth(who))
    assert dismiss(ids[0], "outsider", [1]).status_code == 403
    assert dismiss(ids[0], "annotator", [2]).status_code == 400
    assert dismiss(ids[0], "annotator", []).status_code == 422
    done = dismiss(ids[0], "annotator", [1])
    assert done.status_code == 200 and done.json()["dismissed"] == [1] and done.json()["review_state"] == "pending"
    assert dismiss(ids[0], "annotator", [1, 1]).json()["dismissed"] == [1]  # again: no change
    assert dismiss(ids[0], "reviewer", [0]).json()["dismissed"] == [0]  # reviewers may too, each for themselves
    seen = {who: {p["id"]: p["dismissed"] for p in client.get(url, params={"item": first},
                                                              headers=team.auth(who)).json()["items"]}
            for who in ("annotator", "annotator2", "reviewer")}
    assert seen == {"annotator": {ids[0]: [1], ids[2]: []}, "annotator2": {ids[0]: [], ids[2]: []},
                    "reviewer": {ids[0]: [0], ids[2]: []}}
    queue = client.get(url, params={"state": "pending"}, headers=team.auth("reviewer")).json()["items"]
    assert [p["id"] for p in queue] == ids  # a dismissal is not a verdict
    assert dismiss(999999, "annotator", [0]).status_code == 404


def test_dashboard_models_curves_and_jobs(client, team):
    from labelloop.services.jobs import create_job
    from labelloop.store.tables import ModelRow

    client.post(f"/api/items/{team.item_ids[0]}/annotations", json={"shapes": [box(), box("dog")], "base_version": 0},
                headers=team.auth("annotator"))
    with team.workspace.session() as session:
        model = ModelRow(project_id=team.project_id, kind="pixel-rf", version=1, params={}, metrics={"iou": 0.7},
                         curves={"loss": [1.0, 0.5, 0.3], "iou": {"x": [1, 2, 3], "y": [0.2, 0.5, 0.7]}}, item_ids=[])
        session.add(model)
        session.flush()
        model_id = model.id
    stats = client.get(f"/api/projects/{team.project_id}/stats", headers=team.auth("annotator")).json()
    assert stats["items_per_state"] == {"unlabelled": 5, "submitted": 1, "accepted": 0}
    assert stats["per_annotator"]["annotator"] == {"newest_revisions": 1, "queue_items_done": 1}
    assert stats["per_class"]["dog"] == {"items": 1, "shapes": 1}
    assert stats["models"][0]["metrics"] == {"iou": 0.7} and stats["models"][0]["curves_png"]
    assert client.get(f"/api/projects/{team.project_id}/stats", headers=team.auth("outsider")).status_code == 403
    models = client.get(f"/api/projects/{team.project_id}/models", headers=team.auth("reviewer")).json()["items"]
    assert models[0]["ref"] == "pixel-rf:1"
    png = client.get(f"/api/models/{model_id}/curves.png", headers=team.auth("reviewer"))
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert client.get(f"/api/models/{model_id}/curves.png", headers=team.auth("outsider")).status_code == 403

    train = f"/api/projects/{team.project_id}/train"
    assert client.post(train, json={"model": "pixel-rf"}, headers=team.auth("annotator")).status_code == 403
    assert client.post(train, json={"model": "no-such-model"}, headers=team.auth("manager")).status_code == 400
    assert client.post(train, json={"model": "pixel-rf"}, headers=team.auth("manager")).status_code == 400  # detection
    assert client.post(f"/api/projects/{team.project_id}/predict", json={"model": "pixel-rf"},
                       headers=team.auth("manager")).status_code == 400
    queued = create_job(team.workspace, "export", {"project": "zoo", "out": "/nonexistent/x", "format": "coco"},
                        team.project_id)
    assert client.get(f"/api/jobs/{queued}", headers=team.auth("annotator")).json()["state"] == "queued"
    assert client.get(f"/api/jobs/{queued}", headers=team.auth("outsider")).status_code == 403
    assert client.post(f"/api/jobs/{queued}/cancel", headers=team.auth("annotator")).status_code == 403
    cancelled = client.post(f"/api/jobs/{queued}/cancel", headers=team.auth("manager"))
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert client.post(f"/api/jobs/{queued}/cancel", headers=team.auth("manager")).status_code == 400
    jobs = client.get(f"/api/projects/{team.project_id}/jobs", headers=team.auth("reviewer")).json()["items"]
    assert [j["id"] for j in jobs] == [queued]
    assert client.get("/api/jobs/999999", headers=team.auth("admin")).status_code == 404


def test_train_and_predict_run_as_background_jobs(workspace, tmp_path):
    """A semantic project with scribbles: train answers 202 at once, the job runs, predictions appear."""
    from fastapi.testclient import TestClient
    from server_support import build_team, scribble_two_items, wait_for_job

    from labelloop.server import create_app
    from labelloop.server.background import ThreadExecutor

    team = build_team(workspace, tmp_path / "images", items=3, kind="semantic", classes=("background", "cell"))
    executor = ThreadExecutor(workspace)
    with TestClient(create_app(workspace, executor=executor)) as client:
        scribble_two_items(client, team)
        started = client.post(f"/api/projects/{team.project_id}/train", json={"model": "pixel-rf", "params": {"trees": 5}},
                              headers=team.auth("manager"))
        assert started.status_code == 202 and started.json()["state"] in ("queued", "running", "done")
        job = wait_for_job(client, started.json()["id"], team)
        assert job["state"] == "done", job
        predicted = client.post(f"/api/projects/{team.project_id}/predict", json={"model": "pixel-rf"},
                                headers=team.auth("manager"))
        assert wait_for_job(client, predicted.json()["id"], team)["state"] == "done"
        pending = client.get(f"/api/projects/{team.project_id}/predictions?state=pending", headers=team.auth("reviewer"))
        assert len(pending.json()["items"]) == 1  # the one item nobody annotated
    executor.shutdown()



def test_export_is_a_streamed_zip(client, team):
    client.post(f"/api/items/{team.item_ids[0]}/annotations", json={"shapes": [box()], "base_version": 0},
                headers=team.auth("annotator"))
    url = f"/api/projects/{team.project_id}/export?format=coco"
    assert client.get(url, headers=team.auth("annotator")).status_code == 403
    assert client.get(f"/api/projects/{team.project_id}/export?format=nope", headers=team.auth("manager")).status_code == 400
    response = client.get(url + "&images=true", headers=team.auth("manager"))
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    names = archive.namelist()
    assert "annotations.json" in names and sum(n.endswith(".png") for n in names) == 1  # the one labelled item
    assert b'"cat"' in archive.read("annotations.json")
    assert response.headers["x-labelloop-exported-items"] == "1"
    assert response.headers["x-labelloop-left-out"] == f"{len(team.item_ids) - 1} not labelled"
    everything = client.get(url + "&images=true&unlabelled=true", headers=team.auth("manager"))
    names = zipfile.ZipFile(io.BytesIO(everything.content)).namelist()
    assert sum(n.endswith(".png") for n in names) == len(team.item_ids)
    assert everything.headers["x-labelloop-left-out"] == ""


def test_overlap_gives_each_item_to_two_annotators_and_measures_agreement(client, team):
    client.patch(f"/api/projects/{team.project_id}", json={"settings": {"overlap": 2}}, headers=team.auth("owner"))
    got: dict[str, list[int]] = {"annotator": [], "annotator2": []}
    for who in got:
        while (nxt := client.get(f"/api/projects/{team.project_id}/next", headers=team.auth(who)).json())["item"]:
            item = nxt["item"]["id"]
            assert nxt["annotation"] is None and nxt["base_version"] == 0  # blind: nobody else's work shows
            shapes = [box()] if who == "annotator" or item != team.item_ids[0] else [box("dog")]
            saved = client.post(f"/api/items/{item}/annotations", json={"shapes": shapes, "base_version": 0},
                                headers=team.auth(who))
            assert saved.status_code == 201, saved.json()
            got[who].append(item)
    assert sorted(got["annotator"]) == sorted(got["annotator2"]) == team.item_ids
    mine = client.get(f"/api/items/{team.item_ids[0]}/annotations", headers=team.auth("annotator2")).json()["items"]
    assert {a["author"] for a in mine} == {"annotator2"}
    assert client.get(f"/api/projects/{team.project_id}/agreement", headers=team.auth("annotator")).status_code == 403
    agreement = client.get(f"/api/projects/{team.project_id}/agreement", headers=team.auth("reviewer")).json()
    assert agreement["items_compared"] == len(team.item_ids)
    assert agreement["mean"] == pytest.approx((len(team.item_ids) - 1) / len(team.item_ids))
    assert agreement["least_agreement"][0] == {"item_id": team.item_ids[0], "authors": ["annotator", "annotator2"],
                                               "score": 0.0}


def test_cli_user_and_token_commands(tmp_path, capsys, monkeypatch):
    import json as jsonlib

    from fastapi.testclient import TestClient

    from labelloop.cli.main import main
    from labelloop.server import create_app

    def run(*args: str) -> str:
        try:
            main(list(args))
        except SystemExit as exc:
            assert not exc.code, capsys.readouterr().err
        return capsys.readouterr().out

    data = str(tmp_path / "ws")
    run("init", "--data-dir", data)
    monkeypatch.setattr("sys.stdin", io.StringIO("long enough password\n"))
    assert "created (admin)" in run("user", "create", "bob", "--admin", "--password-stdin", "--data-dir", data)
    token = jsonlib.loads(run("token", "create", "bob", "--json", "--data-dir", data))["token"]
    with TestClient(create_app(data, resume_jobs=False)) as client:
        assert client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"}).json()["is_admin"] is True
        assert client.post("/api/auth/login", json={"name": "bob", "password": "long enough password"}).status_code == 200


def test_tiles_of_one_level_decode_the_image_once(workspace, tmp_path, monkeypatch):
    from labelloop.services.data import items as items_service
    from labelloop.services.data.importing import import_path
    from labelloop.services.projects import create_project
    from labelloop.store.tables import ItemRow

    folder = tmp_path / "big"
    folder.mkdir()
    pixels = (np.arange(1100 * 700) % 251).astype(np.uint8).reshape(700, 1100)
    (folder / "big.png").write_bytes(media.encode_png(pixels))
    with workspace.session() as session:
        create_project(session, "tiles", "detection", ["cat"])
    import_path(workspace, "tiles", folder, format="images")
    monkeypatch.setattr(items_service, "_LEVELS", items_service._LevelCache(64 << 20))
    decodes = []
    real_render = media.render
    monkeypatch.setattr(items_service.media, "render", lambda *a, **k: decodes.append(1) or real_render(*a, **k))
    with workspace.session() as session:
        row = session.query(ItemRow).one()
    tiles = [media.decode_png(items_service.render_item(workspace, row, tile=(c, r))) for r in (0, 1) for c in (0, 1, 2)]
    assert len(decodes) == 1
    np.testing.assert_array_equal(tiles[0], pixels[:512, :512])
    np.testing.assert_array_equal(tiles[5], pixels[512:, 1024:])
    items_service.render_item(workspace, row, level=1)
    items_service.render_item(workspace, row, level=1, tile=(0, 0))
    assert len(decodes) == 2  # one more decode for level 1, then cached


def test_similar_grid_pages_come_from_cached_embeddings(client, team):
    from labelloop.ml.embeddings import DEFAULT_MODEL
    from labelloop.store.tables import EmbeddingRow

    url = f"/api/projects/{team.project_id}/similar?size=4"
    fallback = client.get(url, headers=team.auth("annotator"))
    assert fallback.status_code == 200
    assert fallback.json()["similar"] is False and "embed" in fallback.json()["reason"]
    assert client.get(url, headers=team.auth("outsider")).status_code == 403
    assert client.get(f"/api/projects/{team.project_id}/similar?size=5", headers=team.auth("annotator")).status_code == 400
    # two tight groups of three items: the page holds the first item's own group
    rng = np.random.default_rng(0)
    centres = np.eye(8, dtype=np.float32)[:2]
    groups = {item: n % 2 for n, item in enumerate(team.item_ids)}
    with team.workspace.session() as session:
        for item, group in groups.items():
            vector = (centres[group] + rng.normal(0, 0.01, 8)).astype("<f4")
            session.add(EmbeddingRow(item_id=item, encoder=DEFAULT_MODEL, dim=8, vector=vector.tobytes()))
    page = client.get(url, headers=team.auth("annotator")).json()
    assert page["similar"] is True and page["item_ids"]
    assert len({groups[i] for i in page["item_ids"]}) == 1 and len(page["item_ids"]) == 3


def test_live_pixel_classifier_refuses_malformed_scribbles_and_paints_an_overlay(workspace, tmp_path):
    from fastapi.testclient import TestClient

    from labelloop.geometry import rle
    from labelloop.server import create_app
    from labelloop.server.background import ThreadExecutor
    from server_support import build_team

    team = build_team(workspace, tmp_path / "images", items=2, kind="semantic", classes=("background", "cell"))
    item = team.item_ids[0]
    strokes = np.zeros((48, 64), bool), np.zeros((48, 64), bool)
    strokes[0][2:6, 2:40] = True
    strokes[1][30:34, 10:60] = True
    scribbles = [{"type": "scribble", "label": label, "size": [48, 64], "counts": rle.encode(mask)[1]}
                 for label, mask in zip(("background", "cell"), strokes)]
    with TestClient(create_app(workspace, executor=ThreadExecutor(workspace))) as client:
        url = f"/api/items/{item}/live"
        overrun = [{**scribbles[0], "counts": rle.encode(np.ones((96, 64), bool))[1]}, scribbles[1]]
        refused = client.post(url, json={"scribbles": overrun}, headers=team.auth("annotator"))
        assert refused.status_code == 400 and "malformed RLE" in refused.text
        painted = client.post(url, json={"scribbles": scribbles}, headers=team.auth("annotator"))
        assert painted.status_code == 200 and painted.headers["content-type"] == "image/png"
        assert media.decode_png(painted.content).shape == (48, 64, 4)
