"""The browser UI end to end: log in, create a project, upload, label every kind, reload, pre-labels, conflicts."""

from __future__ import annotations

import time

import numpy as np
from pycocotools import mask as cocomask
from ui_support import browser, drag, open_item, page, screen, screenshot, ui_server, wait_saved, write_images  # noqa: F401

from labelloop.store.tables import PredictionRow


def latest(server, item_id: int) -> dict:
    with server.api() as http:
        detail = http.get(f"/api/items/{item_id}").json()
    return detail["annotation"] or {"shapes": [], "version": 0}


def test_log_in_create_project_and_upload(page, ui_server, tmp_path):
    page.get_by_text("New project").wait_for()
    page.fill("input[name=name]", "pets")
    page.select_option("select[name=kind]", "detection")
    page.fill("input[name=classes]", "cat, dog")
    page.click("form button[type=submit]")
    page.wait_for_url("**/projects/*")
    images = write_images(tmp_path / "upload", 2)
    page.set_input_files("[data-testid=upload-files]", [str(p) for p in images])
    page.click("[data-testid=upload]")
    page.locator("[data-testid=items] tr").nth(1).wait_for()
    assert page.locator("[data-testid=items] tr").count() == 2
    assert "unlabelled: 2" in page.locator("[data-testid=states]").inner_text()
    page.goto("/projects")
    assert "pets" in page.locator("[data-testid=projects]").inner_text()


def test_draw_box_and_polygon_then_reload(page, ui_server):
    pid, (item,) = ui_server.project("cells", "instance", ["cell", "debris"])
    open_item(page, pid, item)
    page.keyboard.press("r")
    drag(page, (40, 30), (120, 100))
    page.keyboard.press("2")  # the new box is selected: relabel it as debris (and draw debris from now on)
    page.keyboard.press("Escape")
    page.keyboard.press("1")  # nothing selected: only picks the class for the next shape
    page.keyboard.press("p")
    for x, y in [(200, 40), (280, 60), (260, 150), (190, 120)]:
        page.mouse.click(*screen(page, x, y))
    page.keyboard.press("Enter")
    wait_saved(page)
    screenshot(page, "box-and-polygon")
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    listed = page.locator("[data-testid=shapes]").inner_text()
    assert "box debris" in listed and "polygon cell, 4 points" in listed
    shapes = {s["type"]: s for s in latest(ui_server, item)["shapes"]}
    box = shapes["box"]
    assert abs(box["x0"] - 40) < 2 and abs(box["y0"] - 30) < 2 and abs(box["x1"] - 120) < 2 and abs(box["y1"] - 100) < 2
    points = shapes["polygon"]["parts"][0]
    assert len(points) == 4 and abs(points[0][0] - 200) < 2 and abs(points[0][1] - 40) < 2


def test_move_resize_undo_redo(page, ui_server):
    pid, (item,) = ui_server.project("moving", "detection", ["cat"])
    open_item(page, pid, item)
    page.keyboard.press("r")
    drag(page, (50, 50), (100, 100))
    page.keyboard.press("v")
    drag(page, (75, 75), (95, 85))  # move by (20, 10)
    drag(page, (120, 110), (140, 130))  # the moved box is selected: drag its bottom-right corner
    wait_saved(page)
    box = latest(ui_server, item)["shapes"][0]
    assert [round(box[k]) for k in ("x0", "y0", "x1", "y1")] == [70, 60, 140, 130]
    page.keyboard.press("Control+z")
    wait_saved(page)
    box = latest(ui_server, item)["shapes"][0]
    assert [round(box[k]) for k in ("x0", "y0", "x1", "y1")] == [70, 60, 120, 110]
    page.keyboard.press("Control+Shift+z")
    wait_saved(page)
    assert round(latest(ui_server, item)["shapes"][0]["x1"]) == 140


def test_paint_mask_then_reload(page, ui_server):
    pid, (item,) = ui_server.project("regions", "semantic", ["background", "cell"])
    open_item(page, pid, item)
    page.keyboard.press("2")
    page.keyboard.press("b")
    page.locator("[data-testid=brush-size]").fill("20")
    drag(page, (60, 120), (200, 120), steps=12)
    wait_saved(page)
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    assert "mask cell 320×240" in page.locator("[data-testid=shapes]").inner_text()
    screenshot(page, "mask")
    (mask,) = latest(ui_server, item)["shapes"]
    pixels = cocomask.decode({"size": mask["size"], "counts": mask["counts"].encode()}).astype(bool)
    assert pixels.shape == (240, 320)
    assert pixels[120, 130] and not pixels[60, 130] and not pixels[120, 250]
    rows, cols = np.nonzero(pixels)
    assert abs(rows.min() - 110) <= 3 and abs(rows.max() - 129) <= 3 and abs(cols.min() - 50) <= 3


def test_classify_with_a_key(page, ui_server):
    pid, items = ui_server.project("kinds", "classification", ["cat", "dog", "bird"], images=2)
    page.goto(f"/projects/{pid}/label")
    page.wait_for_selector("body[data-ready='1']")
    page.keyboard.press("3")
    wait_saved(page)
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    assert page.get_attribute("[data-testid=class-bird]", "aria-pressed") == "true"
    labelled = [i for i in items if latest(ui_server, i)["shapes"]]
    assert len(labelled) == 1 and latest(ui_server, labelled[0])["shapes"] == [{"type": "class", "label": "bird"}]


def test_accept_and_edit_prelabels(page, ui_server):
    pid, (item,) = ui_server.project("suggested", "detection", ["cat", "dog"])
    with ui_server.workspace.session() as session:
        row = PredictionRow(item_id=item, model_version="test:1", score=0.8, shapes=[
            {"type": "box", "label": "cat", "x0": 20, "y0": 20, "x1": 80, "y1": 80, "score": 0.9},
            {"type": "box", "label": "dog", "x0": 150, "y0": 100, "x1": 250, "y1": 200, "score": 0.6}])
        session.add(row)
        session.flush()
        prediction_id = row.id
    open_item(page, pid, item)
    assert "pre-labels (2)" in page.locator("[data-testid=prelabels]").inner_text().lower()
    screenshot(page, "prelabels")
    page.mouse.click(*screen(page, 50, 50))
    page.click("[data-testid=accept-prelabel]")
    page.mouse.click(*screen(page, 200, 150))
    page.keyboard.press("e")  # edit: it becomes mine and selected; move it
    drag(page, (200, 150), (210, 160))
    page.wait_for_function("!document.querySelector('[data-testid=prelabels]')")
    wait_saved(page)
    with ui_server.api() as http:
        reviewed = http.get(f"/api/projects/{pid}/predictions", params={"state": "edited"}).json()["items"]
    assert [p["id"] for p in reviewed] == [prediction_id]
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator("[data-testid=prelabels]").count() == 0
    boxes = sorted(latest(ui_server, item)["shapes"], key=lambda s: s["x0"])
    assert [(b["label"], b["x0"], b["y0"]) for b in boxes][0] == ("cat", 20, 20)
    assert boxes[1]["label"] == "dog" and abs(boxes[1]["x0"] - 160) < 2 and abs(boxes[1]["y1"] - 210) < 2
    assert all("score" not in b for b in boxes)


def test_editing_a_mask_prelabel_is_recorded_as_an_edit_with_provenance(page, ui_server):
    """A semantic pre-label taken and then painted on: the prediction is 'edited' (not 'rejected') and the saved
    mask still names the prediction it came from."""
    pid, (item,) = ui_server.project("mask-suggested", "semantic", ["background", "cell"])
    region = np.zeros((240, 320), np.uint8, order="F")
    region[80:160, 40:140] = 1
    encoded = cocomask.encode(region)
    with ui_server.workspace.session() as session:
        row = PredictionRow(item_id=item, model_version="test:1", score=0.8, shapes=[
            {"type": "mask", "label": "cell", "size": [240, 320], "counts": encoded["counts"].decode(), "score": 0.8}])
        session.add(row)
        session.flush()
        prediction_id = row.id
    open_item(page, pid, item)
    page.locator("[data-testid=prelabels] li").first.click()
    page.click("[data-testid=edit-prelabel]")
    page.keyboard.press("2")
    page.keyboard.press("b")
    page.locator("[data-testid=brush-size]").fill("20")
    drag(page, (140, 120), (260, 120), steps=12)  # grow the predicted region to the right
    wait_saved(page)
    page.wait_for_function("!document.querySelector('[data-testid=prelabels]')")
    with ui_server.api() as http:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            state = http.get(f"/api/projects/{pid}/predictions").json()["items"][0]["review_state"]
            if state != "pending":
                break
            time.sleep(0.1)
    assert state == "edited"
    (mask,) = latest(ui_server, item)["shapes"]
    assert mask["attributes"]["prediction"] == f"{prediction_id}:0"
    pixels = cocomask.decode({"size": mask["size"], "counts": mask["counts"].encode()}).astype(bool)
    assert pixels[120, 60] and pixels[120, 240] and not pixels[20, 60]  # the prediction, plus the stroke


def test_stale_edit_shows_the_conflict_dialog(page, ui_server):
    pid, (item,) = ui_server.project("shared", "detection", ["cat"])
    open_item(page, pid, item)
    with ui_server.api() as http:  # someone else saves while the page is open
        saved = http.post(f"/api/items/{item}/annotations", json={"base_version": 0, "state": "submitted", "shapes": [
            {"type": "box", "label": "cat", "x0": 200, "y0": 10, "x1": 300, "y1": 60}]})
        assert saved.status_code == 201
    page.keyboard.press("r")
    drag(page, (20, 20), (90, 90))
    dialog = page.locator("[data-testid=conflict-dialog]")
    dialog.wait_for()
    assert "box cat (20, 20)–(90, 90)" in dialog.locator("[data-testid=conflict-mine]").inner_text()
    assert "box cat (200, 10)–(300, 60)" in dialog.locator("[data-testid=conflict-theirs]").inner_text()
    screenshot(page, "conflict")
    page.click("[data-testid=keep-mine]")
    wait_saved(page)
    current = latest(ui_server, item)
    assert current["version"] == 2 and current["shapes"][0]["x0"] == 20


def test_leaving_with_unsaved_changes_warns(page, ui_server):
    pid, (item,) = ui_server.project("careful", "detection", ["cat"])
    open_item(page, pid, item)
    page.evaluate("window.__labelloop.saver.edit({shapes: [], state: 'draft'})")  # an edit not saved yet
    asked = []
    page.once("dialog", lambda d: (asked.append(d.message), d.dismiss()))
    page.click("nav.subnav a:has-text('Dashboard')")
    assert asked and "unsaved" in asked[0]
    assert f"/items/{item}" in page.url
