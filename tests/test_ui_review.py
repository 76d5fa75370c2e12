"""The browser UI beyond one item: grid classification, the review page, the dashboard, live scribble prediction."""

from __future__ import annotations

from ui_support import browser, drag, open_item, page, screenshot, ui_server  # noqa: F401

from labelloop.store.tables import PredictionRow


def test_grid_tags_images_with_number_keys(page, ui_server):
    pid, items = ui_server.project("grid", "classification", ["cat", "dog"], images=4)
    page.goto(f"/projects/{pid}/grid?n=4")
    # the server's first /similar call loads the encoder's description: seconds on a busy machine
    page.locator("[data-testid=grid] figure").nth(3).wait_for(timeout=60_000)
    page.keyboard.press("1")
    page.keyboard.press("2")
    page.locator("[data-testid=grid] figure.done").nth(1).wait_for()
    screenshot(page, "grid")
    with ui_server.api() as http:
        labels = {i: (http.get(f"/api/items/{i}").json()["annotation"] or {}).get("shapes") for i in items}
    assert sorted(str(v) for v in labels.values() if v) == ["[{'type': 'class', 'label': 'cat'}]",
                                                            "[{'type': 'class', 'label': 'dog'}]"]


def test_review_page_accepts_a_prediction_and_an_annotation(page, ui_server):
    pid, (first, second) = ui_server.project("review", "detection", ["cat"], images=2)
    with ui_server.workspace.session() as session:
        session.add(PredictionRow(item_id=first, model_version="test:1", score=0.7, shapes=[
            {"type": "box", "label": "cat", "x0": 10, "y0": 10, "x1": 60, "y1": 60, "score": 0.7}]))
    with ui_server.api() as http:
        http.post(f"/api/items/{second}/annotations", json={"base_version": 0, "state": "submitted", "shapes": [
            {"type": "box", "label": "cat", "x0": 5, "y0": 5, "x1": 50, "y1": 40}]}).raise_for_status()
    page.goto(f"/projects/{pid}/review")
    page.get_by_text("Waiting for review (2)").wait_for()
    page.get_by_role("heading", name="Prediction #").wait_for()
    screenshot(page, "review")
    page.click("[data-testid=review-accept]")
    page.get_by_text("Waiting for review (1)").wait_for()
    page.get_by_role("heading", name="Annotation v1").wait_for()
    page.click("[data-testid=review-accept]")
    page.get_by_text("Nothing to review.").wait_for()
    with ui_server.api() as http:
        assert http.get(f"/api/projects/{pid}/predictions", params={"state": "accepted"}).json()["items"]
        for item in (first, second):
            assert http.get(f"/api/items/{item}").json()["annotation"]["state"] == "accepted"
        stats = http.get(f"/api/projects/{pid}/stats").json()
    assert stats["items_per_state"]["accepted"] == 2
    page.goto(f"/projects/{pid}")
    assert "accepted: 2" in page.locator("[data-testid=states]").inner_text()


def test_scribbles_drive_the_live_pixel_classifier(page, ui_server):
    pid, (item,) = ui_server.project("live", "semantic", ["background", "cell"])
    open_item(page, pid, item)
    page.keyboard.press("b")
    page.keyboard.press("s")  # paint scribbles, not masks
    page.check("[data-testid=live-prediction]")
    page.keyboard.press("1")
    drag(page, (20, 20), (100, 40))
    page.keyboard.press("2")
    drag(page, (200, 180), (300, 200))
    page.wait_for_function("window.__labelloop.editor.live !== null", timeout=60_000)
    screenshot(page, "live")
    page.wait_for_function("!window.__labelloop.saver.dirty")
    with ui_server.api() as http:
        shapes = http.get(f"/api/items/{item}").json()["annotation"]["shapes"]
    assert sorted((s["type"], s["label"]) for s in shapes) == [("scribble", "background"), ("scribble", "cell")]
