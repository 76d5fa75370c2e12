"""The browser UI's other pages and pictures: dashboard, class colours in settings, large images through tiles,
16-bit window/level, pre-label rejections that last, and the save/reload flow on PostgreSQL."""

from __future__ import annotations

import io
import time

import numpy as np
from PIL import Image
from ui_support import (browser, drag, logged_in, open_item, page, screen, screenshot, ui_server,  # noqa: F401
                        ui_server_postgres, wait_saved)

from labelloop import media
from labelloop.store.tables import PredictionRow


def project_with(server, name: str, picture: np.ndarray) -> tuple[int, int]:
    """A detection project holding one uploaded picture: (project id, item id)."""
    with server.api() as http:
        created = http.post("/api/projects", json={"name": name, "kind": "detection", "classes": ["cell"]})
        created.raise_for_status()
        pid = created.json()["id"]
        files = [("files", (f"{name}.png", media.encode_png(picture), "image/png"))]
        http.post(f"/api/projects/{pid}/items", files=files).raise_for_status()
        (item,) = http.get(f"/api/projects/{pid}/items").json()["items"]
    return pid, item["id"]


def map_pixels(tab) -> np.ndarray:
    """What the map shows, as an RGB array in client pixels (a screenshot of the map element)."""
    box = tab.locator("[data-testid=map]").bounding_box()
    png = tab.screenshot(clip=box)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int), box


def pixel_at(tab, x: float, y: float) -> np.ndarray:
    """The RGB shown at image pixel (x, y): the median of a 5×5 patch of the screen around it."""
    shown, box = map_pixels(tab)
    sx, sy = screen(tab, x, y)
    cx, cy = round(sx - box["x"]), round(sy - box["y"])
    return np.median(shown[cy - 2:cy + 3, cx - 2:cx + 3].reshape(-1, 3), axis=0)


def region_mean(tab, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    shown, box = map_pixels(tab)
    (a, b), (c, d) = screen(tab, x0, y0), screen(tab, x1, y1)
    return shown[round(b - box["y"]):round(d - box["y"]), round(a - box["x"]):round(c - box["x"])].reshape(-1, 3).mean(0)


def wait_until(check, timeout: float = 15, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_dashboard_shows_progress_by_state_and_shapes_per_class(page, ui_server):
    pid, items = ui_server.project("counted", "detection", ["cat", "dog"], images=3)
    box = lambda label, x: {"type": "box", "label": label, "x0": x, "y0": 10, "x1": x + 20, "y1": 40}  # noqa: E731
    with ui_server.api() as http:
        http.post(f"/api/items/{items[0]}/annotations", json={"base_version": 0, "state": "submitted", "shapes": [
            box("cat", 10), box("cat", 60), box("dog", 110)]}).raise_for_status()
        http.post(f"/api/items/{items[1]}/annotations", json={"base_version": 0, "state": "submitted", "shapes": [
            box("cat", 10)]}).raise_for_status()
        stats = http.get(f"/api/projects/{pid}/stats").json()
    assert stats["per_class"]["cat"]["shapes"] == 3 and stats["per_class"]["dog"]["shapes"] == 1
    page.goto(f"/projects/{pid}")
    page.get_by_role("heading", name="Progress: 3 items").wait_for()
    states = page.locator("[data-testid=states]").inner_text()
    assert "submitted: 2" in states and "unlabelled: 1" in states
    chart = page.locator("svg[aria-label='Shapes per class']")
    labels = chart.locator("text").evaluate_all("ts => ts.map(t => t.textContent)")
    assert labels[0] == "Shapes per class" and labels[1:] == ["cat", "3", "dog", "1"]
    widths = [float(w) for w in chart.locator("rect").evaluate_all("rs => rs.map(r => r.getAttribute('width'))")]
    assert widths[0] == 3 * widths[1]  # bars to scale
    colours = chart.locator("rect").evaluate_all("rs => rs.map(r => r.getAttribute('fill'))")
    with ui_server.api() as http:
        classes = http.get(f"/api/projects/{pid}").json()["classes"]
    assert colours == [c["colour"] for c in classes]
    assert "alice" in page.locator("table.list").first.inner_text()
    screenshot(page, "dashboard")


def test_class_colour_changed_in_settings_is_drawn_after_reload(page, ui_server):
    pid, (item,) = ui_server.project("recoloured", "detection", ["cat", "dog"])
    with ui_server.api() as http:
        http.post(f"/api/items/{item}/annotations", json={"base_version": 0, "state": "draft", "shapes": [
            {"type": "box", "label": "cat", "x0": 60, "y0": 50, "x1": 260, "y1": 190}]}).raise_for_status()
    open_item(page, pid, item)
    before = region_mean(page, 80, 70, 240, 170)
    page.goto(f"/projects/{pid}/settings")
    page.fill("[data-testid=class-colour-cat]", "#00ff00")
    page.get_by_text("colour of cat changed").wait_for()
    page.reload()
    page.locator("[data-testid=classes] code").first.wait_for()
    assert page.locator("[data-testid=classes] code").first.inner_text() == "#00ff00"
    screenshot(page, "settings-colour")
    open_item(page, pid, item)
    after = region_mean(page, 80, 70, 240, 170)
    screenshot(page, "recoloured-box")
    # the box is filled with its class colour at 15 % over a grey picture: green now pulls G above R and B
    assert after[1] - after[0] > 25 and after[1] - after[2] > 25, after
    assert (after[1] - after[0]) - (before[1] - before[0]) > 25, (before, after)
    # a used class cannot be renamed: the page says why
    page.goto(f"/projects/{pid}/settings")
    page.fill("[data-testid=class-name-cat]", "kitten")
    page.click("[data-testid=rename-class-cat]")
    refusal = page.locator(".toast.error", has_text="cannot be renamed")
    refusal.wait_for()
    assert "class 'cat' is used by 1 annotation revision(s)" in refusal.inner_text()
    page.fill("[data-testid=class-name-dog]", "puppy")
    page.click("[data-testid=rename-class-dog]")
    page.get_by_text("dog renamed to puppy").wait_for()
    with ui_server.api() as http:
        assert [c["name"] for c in http.get(f"/api/projects/{pid}").json()["classes"]] == ["cat", "puppy"]


def test_a_large_image_loads_through_tiles_of_its_levels(page, ui_server):
    size = 3000
    pixels = np.full((size, size), 128, np.uint8)
    pixels[: size // 2, : size // 2] = 30  # dark top-left quarter
    pixels[size // 2:, size // 2:] = 230  # bright bottom-right quarter
    pid, item = project_with(ui_server, "large", pixels)
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/image" in r.url else None)
    open_item(page, pid, item)
    assert asked and all("tile_x=" in url and "tile_y=" in url for url in asked), asked
    fitted = {int(url.split("level=")[1].split("&")[0]) for url in asked}
    assert min(fitted) >= 2, fitted  # fitted to an 868-pixel-high view: a quarter-size level or smaller
    assert len(asked) <= 8  # only the tiles of the view, never the full-size picture
    assert pixel_at(page, 750, 750)[0] < 60 and pixel_at(page, 2250, 2250)[0] > 200
    assert abs(pixel_at(page, 2250, 750)[0] - 128) < 20
    screenshot(page, "large-fitted")
    asked.clear()
    page.evaluate("""() => { const v = window.__labelloop.editor.viewer.map.getView();
                             v.setCenter([1500, 1500]); v.setResolution(1); }""")
    page.wait_for_function("() => new Promise(r => window.__labelloop.editor.viewer.map.once('rendercomplete', () => r(true)))")
    wait_until(lambda: any("level=0&" in url for url in asked), what="full-size tiles")
    full = [url for url in asked if "level=0&" in url]
    assert full and all("tile_x=" in url for url in full)
    # a 1400×900 window at 1:1 around the centre needs a few 512-pixel tiles, not the 36 of the whole level
    assert len({url for url in full}) <= 12, len(full)
    assert pixel_at(page, 1400, 1400)[0] < 60 and pixel_at(page, 1600, 1600)[0] > 200
    screenshot(page, "large-full-size")


def test_window_level_changes_what_a_16_bit_image_shows(page, ui_server):
    width, height = 400, 200
    ramp = np.tile(np.linspace(0, 60000, width), (height, 1)).astype(np.uint16)  # value grows left to right
    pid, item = project_with(ui_server, "sixteen", ramp)
    open_item(page, pid, item)
    page.locator("[data-testid=window-centre]").wait_for()
    left, middle = pixel_at(page, 60, 100)[0], pixel_at(page, 200, 100)[0]
    assert 0 < middle < 255 and left < middle  # a visible ramp under the default window
    screenshot(page, "window-default")
    page.fill("[data-testid=window-centre]", "12000")
    page.fill("[data-testid=window-width]", "6000")  # 9000..15000: x < 60 black, x > 100 white
    page.click("[data-testid=window-apply]")
    wait_until(lambda: pixel_at(page, 200, 100)[0] > 250, what="the narrow window to whiten the middle")
    assert pixel_at(page, 30, 100)[0] < 5
    assert 30 < pixel_at(page, 80, 100)[0] < 225  # inside the window: still grey
    screenshot(page, "window-narrow")
    page.click("[data-testid=window-reset]")
    wait_until(lambda: abs(pixel_at(page, 200, 100)[0] - middle) < 8, what="the file's window back")


def test_an_annotators_rejected_prelabel_stays_gone_after_reload(browser, ui_server):
    pid, (item,) = ui_server.project("rejected", "detection", ["cat", "dog"])
    with ui_server.api() as http:
        http.put(f"/api/projects/{pid}/members/bob", json={"role": "annotator"}).raise_for_status()
    with ui_server.workspace.session() as session:
        row = PredictionRow(item_id=item, model_version="test:1", score=0.8, shapes=[
            {"type": "box", "label": "cat", "x0": 20, "y0": 20, "x1": 80, "y1": 80, "score": 0.9},
            {"type": "box", "label": "dog", "x0": 150, "y0": 100, "x1": 250, "y1": 200, "score": 0.6}])
        session.add(row)
        session.flush()
        prediction_id = row.id
    with logged_in(browser, ui_server, "bob", screenshot_name="prelabel-rejected") as tab:
        open_item(tab, pid, item)
        assert "pre-labels (2)" in tab.locator("[data-testid=prelabels]").inner_text().lower()
        tab.mouse.click(*screen(tab, 200, 150))
        tab.click("[data-testid=reject-prelabel]")
        assert "pre-labels (1)" in tab.locator("[data-testid=prelabels]").inner_text().lower()
        with ui_server.api() as http:
            url = f"/api/projects/{pid}/predictions"
            wait_until(lambda: _dismissed_by_bob(ui_server, prediction_id) == [1], what="the rejection kept")
            assert http.get(url, params={"state": "pending"}).json()["items"][0]["id"] == prediction_id  # no verdict
        tab.reload()
        tab.wait_for_selector("body[data-ready='1']")
        assert "pre-labels (1)" in tab.locator("[data-testid=prelabels]").inner_text().lower()
        tab.mouse.click(*screen(tab, 50, 50))
        tab.click("[data-testid=accept-prelabel]")
        wait_saved(tab)
        tab.reload()
        tab.wait_for_selector("body[data-ready='1']")
        assert tab.locator("[data-testid=prelabels]").count() == 0
        assert "box cat" in tab.locator("[data-testid=shapes]").inner_text()


def _dismissed_by_bob(server, prediction_id: int) -> list[int]:
    from labelloop.services.assist.predictions import dismissed

    with server.workspace.session() as session:
        return dismissed(session, [prediction_id], "bob").get(prediction_id, [])


def test_draw_save_and_reload_on_postgresql(browser, ui_server_postgres):
    server = ui_server_postgres
    pid, (item,) = server.project("pg-boxes", "instance", ["cell"])
    with logged_in(browser, server, screenshot_name="postgresql-reload") as tab:
        open_item(tab, pid, item)
        tab.keyboard.press("r")
        drag(tab, (40, 30), (120, 100))
        tab.keyboard.press("p")
        for x, y in [(200, 40), (280, 60), (260, 150)]:
            tab.mouse.click(*screen(tab, x, y))
        tab.keyboard.press("Enter")
        wait_saved(tab)
        tab.reload()
        tab.wait_for_selector("body[data-ready='1']")
        listed = tab.locator("[data-testid=shapes]").inner_text()
        assert "box cell" in listed and "polygon cell, 3 points" in listed
    assert server.workspace.database_url.startswith("postgresql")
    with server.api() as http:
        shapes = http.get(f"/api/items/{item}").json()["annotation"]["shapes"]
    box = next(s for s in shapes if s["type"] == "box")
    assert abs(box["x0"] - 40) < 2 and abs(box["y1"] - 100) < 2
