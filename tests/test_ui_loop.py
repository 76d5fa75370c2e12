"""The model-assisted loop in the browser, as a new user meets it (issue 24): no label that is not a label, no job
that says "done" and hides what it did, no silent mode, and the rough edges a newcomer hits."""

from __future__ import annotations

import io
import time
import zipfile

import numpy as np
import pytest
from pycocotools import mask as cocomask
from ui_support import (browser, drag, open_item, page, screen, screenshot, ui_server,  # noqa: F401
                        write_images)

from labelloop.geometry import rle
from labelloop.store.tables import PredictionRow


def _scribbles(item_width: int = 320, item_height: int = 240) -> list[dict]:
    marks = np.zeros((item_height, item_width), np.uint8)
    marks[10:30, 10:300] = 1
    marks[150:200, 100:220] = 2
    shapes = []
    for index, label in ((1, "background"), (2, "cell")):
        size, counts = rle.encode(marks == index)
        shapes.append({"type": "scribble", "label": label, "size": list(size), "counts": counts})
    return shapes


def _mask(rows: slice, cols: slice, label: str, score: float = 0.8) -> dict:
    region = np.zeros((240, 320), np.uint8, order="F")
    region[rows, cols] = 1
    return {"type": "mask", "label": label, "size": [240, 320], "counts": cocomask.encode(region)["counts"].decode(),
            "score": score}


def _job_message(page, pattern: str, timeout: float = 180_000) -> str:
    """Wait until a job row of the dashboard says `pattern`; returns that row's message."""
    cell = page.locator("td.job-message", has_text=pattern).first
    cell.wait_for(timeout=timeout)
    return cell.inner_text()


def test_an_empty_classification_prelabel_is_not_offered_for_review(page, ui_server):
    pid, (empty, bee) = ui_server.project("no-answer", "classification", ["ant", "bee"], images=2)
    with ui_server.workspace.session() as session:
        session.add_all([PredictionRow(item_id=empty, model_version="classifier:1", score=0.55, shapes=[]),
                         PredictionRow(item_id=bee, model_version="classifier:1", score=0.97, shapes=[
                             {"type": "class", "label": "bee", "score": 0.97, "attributes": {"prelabel": True}}])])
    page.goto(f"/projects/{pid}/review")
    page.get_by_text("Waiting for review (1)").wait_for()
    assert f"item {bee}" in page.locator("[data-testid=review-list]").inner_text()
    page.click("[data-testid=review-accept]")
    page.get_by_text("Nothing to review.").wait_for()
    with ui_server.api() as http:
        assert http.get(f"/api/items/{empty}").json()["annotation"] is None  # never "accepted with no class"
        assert http.get(f"/api/items/{bee}").json()["annotation"]["shapes"][0]["label"] == "bee"


def test_the_export_dialog_says_what_it_leaves_out_and_downloads_only_labelled_items(page, ui_server):
    pid, items = ui_server.project("exported", "detection", ["cat"], images=3)
    with ui_server.api() as http:
        http.post(f"/api/items/{items[0]}/annotations", json={"base_version": 0, "shapes": [
            {"type": "box", "label": "cat", "x0": 10, "y0": 10, "x1": 60, "y1": 50}]}).raise_for_status()
    page.goto(f"/projects/{pid}")
    page.click("[data-testid=export-open]")
    preview = page.locator("[data-testid=export-preview]")
    page.wait_for_function("document.querySelector('[data-testid=export-preview]').textContent.includes('will be')")
    assert preview.inner_text() == "1 item(s) will be exported; left out: 2 not labelled (they have no label to export)"
    page.select_option("[data-testid=export-format]", "voc")
    screenshot(page, "export-dialog")
    page.check("[data-testid=export-unlabelled]")
    page.wait_for_function("document.querySelector('[data-testid=export-preview]').textContent.startsWith('3 item')")
    page.uncheck("[data-testid=export-unlabelled]")
    page.wait_for_function("document.querySelector('[data-testid=export-preview]').textContent.startsWith('1 item')")
    with page.expect_download() as download:
        page.click("[data-testid=export-download]")
    archive = zipfile.ZipFile(io.BytesIO(open(download.value.path(), "rb").read()))
    with ui_server.api() as http:
        source = http.get(f"/api/items/{items[0]}").json()["item"]["source"]
    stem = source.rsplit(".", 1)[0]
    assert [n for n in archive.namelist() if n.endswith(".xml")] == [f"Annotations/{stem}.xml"]


@pytest.mark.slow
def test_a_semantic_loop_shows_its_model_card_and_prelabelling_twice_queues_each_item_once(page, ui_server):
    pid, items = ui_server.project("loop-sem", "semantic", ["background", "cell"], images=3)
    with ui_server.api() as http:
        http.post(f"/api/items/{items[0]}/annotations", json={"base_version": 0, "shapes": _scribbles()}).raise_for_status()
    page.goto(f"/projects/{pid}")
    page.select_option(".models-card select", "pixel-rf")
    page.get_by_role("button", name="Train", exact=True).click()
    message = _job_message(page, "pixel-rf:1 ready")
    assert "scribbled pixels" in message
    card = page.locator("[data-testid=model-pixel-rf-1]")
    card.wait_for()
    assert "scribbled pixels" in card.inner_text() and "no held-out score" in card.inner_text()
    assert card.locator("img").count() == 0  # no picture to show: no broken image either
    for run in (1, 2):
        page.get_by_role("button", name="Pre-label", exact=True).click()
        page.locator("td.job-message", has_text="predicted 2 item(s)").nth(run - 1).wait_for(timeout=120_000)
    page.goto(f"/projects/{pid}/review")
    page.get_by_text("Waiting for review (3)").wait_for()  # the scribbled item, and 2 pre-labelled twice: once each
    entries = page.locator("[data-testid=review-list] li").all_inner_texts()
    assert sorted(e.split(" · ")[1] for e in entries if e.startswith("prediction")) == [f"item {i}" for i in items[1:]]
    screenshot(page, "review-after-two-runs")


@pytest.mark.slow
def test_classification_prelabelling_says_what_it_did_and_follows_the_target_set_in_settings(page, ui_server):
    pid, items = ui_server.project("loop-cls", "classification", ["ant", "bee"], images=12)
    with ui_server.api() as http:
        for n, item in enumerate(items[:8]):
            http.post(f"/api/items/{item}/annotations", json={"base_version": 0, "shapes": [
                {"type": "class", "label": "ant" if n % 2 else "bee"}]}).raise_for_status()
    page.goto(f"/projects/{pid}")
    page.get_by_role("button", name="Train", exact=True).click()
    _job_message(page, "classifier:1 ready")
    card = page.locator("[data-testid=model-classifier-1]")
    card.wait_for()
    text = card.inner_text()
    for figure in ("target precision", "held-out accuracy", "labelled items", "unlabelled items pre-labelled"):
        assert figure in text
    classes = card.locator("[data-testid=model-classes]").inner_text()
    assert "ant" in classes and "bee" in classes and "too few held-out examples" in classes
    card.locator("img").wait_for()
    page.wait_for_function("[...document.querySelectorAll('.models img')].every(i => i.complete && i.naturalWidth > 0)")
    screenshot(page, "dashboard-model-cards")

    page.get_by_role("button", name="Pre-label", exact=True).click()
    outcome = _job_message(page, "pre-label(s) on 4 item(s)")
    assert "at target precision 0.95" in outcome and "thresholds for 0 of 2 classes" in outcome
    assert "ant: " in outcome and "too few held-out examples" in outcome

    with ui_server.api() as http:  # a new target in Settings: the next pre-label run uses it without retraining
        http.patch(f"/api/projects/{pid}", json={"settings": {"target_precision": 0.8}}).raise_for_status()
    page.reload()
    page.get_by_role("button", name="Pre-label", exact=True).click()
    outcome = _job_message(page, "at target precision 0.8")
    with ui_server.api() as http:
        models = http.get(f"/api/projects/{pid}/models").json()["items"]
    assert len(models) == 1 and models[0]["metrics"]["target_precision"] == 0.8  # the card's figures follow

    page.select_option("[data-testid=classifier-head]", "finetune")  # the network's last stage, cross-fitted too
    page.get_by_role("button", name="Train", exact=True).click()
    _job_message(page, "classifier:2 ready")
    card = page.locator("[data-testid=model-classifier-2]")
    card.wait_for()
    assert "trained head" in card.inner_text() and "finetune" in card.inner_text()
    with ui_server.api() as http:
        models = {m["version"]: m for m in http.get(f"/api/projects/{pid}/models").json()["items"]}
    assert models[2]["params"]["head"] == "finetune" and models[2]["metrics"]["held_out_items"] == 8


def test_live_prediction_turns_scribbles_on_and_shortcuts_work_after_clicking_a_checkbox(page, ui_server):
    pid, (item,) = ui_server.project("scribble-trap", "semantic", ["background", "cell"])
    open_item(page, pid, item)
    mode = page.locator("[data-testid=paint-mode]")
    assert "paints masks" in mode.inner_text()
    page.check("[data-testid=live-prediction]")
    assert page.locator("[data-testid=scribble-mode]").is_checked()
    assert "paints scribbles" in mode.inner_text()
    assert "Scribble at least 2 classes (0 so far" in page.locator("[data-testid=live-hint]").inner_text()
    page.click("[data-testid=show-predictions]")  # the checkbox keeps focus
    page.keyboard.press("2")
    assert page.locator("[data-testid=class-cell]").get_attribute("aria-pressed") == "true"
    page.keyboard.press("b")
    assert "active" in page.locator("[data-testid=tool-brush]").get_attribute("class")
    drag(page, (20, 20), (120, 30))
    page.wait_for_function("document.querySelector('[data-testid=live-hint]').textContent.includes('(1 so far')")
    page.keyboard.press("?")
    page.locator("[data-testid=shortcuts]").get_by_text("Keyboard shortcuts").wait_for()
    page.click("[data-testid=shortcuts-close]")
    screenshot(page, "scribble-mode")


def test_mask_prelabels_are_selected_accepted_and_edited_from_the_image(page, ui_server):
    pid, (item,) = ui_server.project("mask-review", "semantic", ["background", "cell", "debris"])
    with ui_server.workspace.session() as session:
        session.add(PredictionRow(item_id=item, model_version="test:1", score=0.8, shapes=[
            _mask(slice(40, 120), slice(20, 120), "cell"), _mask(slice(140, 220), slice(180, 300), "debris")]))
    open_item(page, pid, item)
    assert "pre-labels (2)" in page.locator("[data-testid=prelabels]").inner_text().lower()
    page.mouse.click(*screen(page, 70, 80))  # inside the cell pre-label
    page.locator("[data-testid=prelabels] li.selected", has_text="cell").wait_for()
    screenshot(page, "mask-prelabel-selected")
    page.keyboard.press("Enter")
    page.locator("[data-testid=shapes]", has_text="mask cell").wait_for()
    page.mouse.click(*screen(page, 240, 180))  # inside the debris pre-label
    page.locator("[data-testid=prelabels] li.selected", has_text="debris").wait_for()
    page.keyboard.press("e")  # edit, not the eraser: the brush in the pre-label's class
    page.wait_for_function("!document.querySelector('[data-testid=prelabels]')")
    assert "active" in page.locator("[data-testid=tool-brush]").get_attribute("class")
    assert page.locator("[data-testid=class-debris]").get_attribute("aria-pressed") == "true"
    with ui_server.api() as http:
        deadline = time.monotonic() + 10
        while (state := http.get(f"/api/projects/{pid}/predictions").json()["items"][0]["review_state"]) == "pending":
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert state == "edited"


def test_an_upload_with_an_unreadable_file_names_it_and_can_skip_it(page, ui_server, tmp_path):
    pid, _ = ui_server.project("mixed-upload", "detection", ["cat"], images=1)
    good = write_images(tmp_path / "good", 2, start=900)
    bad = tmp_path / "scan-notes.png"
    bad.write_text("these are my notes, not a picture")
    page.goto(f"/projects/{pid}")
    page.set_input_files("[data-testid=upload-files]", [str(good[0]), str(bad)])
    page.click("[data-testid=upload]")
    banner = page.locator("[data-testid=upload-error]")
    banner.wait_for()
    text = banner.inner_text()
    assert "scan-notes.png" in text and "it holds text" in text and "skip unreadable files" in text
    assert "b'" not in text and "--skip-bad" not in text.replace("--skip-bad in the CLI", "")
    page.check("[data-testid=upload-skip-bad]")
    page.click("[data-testid=upload]")
    page.wait_for_function("document.querySelector('[data-testid=upload-error]').textContent.includes('were skipped')")
    assert "scan-notes.png" in banner.inner_text()
    page.locator("[data-testid=items] tr").nth(1).wait_for()
    page.uncheck("[data-testid=upload-skip-bad]")
    page.set_input_files("[data-testid=upload-files]", [str(good[1])])
    page.click("[data-testid=upload]")
    page.locator("[data-testid=items] tr").nth(2).wait_for()
    assert banner.is_hidden()  # cleared by the next success


def test_class_names_are_shown_as_the_field_splits_them_and_long_ones_are_explained(page, ui_server):
    page.goto("/projects")
    page.fill("input[name=classes]", "t-shirt, long sleeve,shirt")
    assert page.locator("[data-testid=classes-preview]").inner_text().startswith("3 classes: t-shirt")
    page.fill("input[name=name]", "too-long")
    page.fill("input[name=classes]", "x" * 120)
    assert "is 120 characters long; a class name has at most 100" in page.locator("[data-testid=classes-problem]").inner_text()
    long_name = "a very long class name " * 4 + "end"  # 95 characters
    pid, items = ui_server.project("long-names", "classification", [long_name, "short"], images=1)
    with ui_server.api() as http:
        http.post(f"/api/items/{items[0]}/annotations", json={"base_version": 0, "shapes": [
            {"type": "class", "label": long_name}]}).raise_for_status()
        answer = http.post("/api/projects", json={"name": "refused", "kind": "classification", "classes": ["y" * 101]})
    assert answer.status_code == 400 and "is 101 characters long" in answer.json()["detail"]
    page.goto(f"/projects/{pid}")
    chart = page.locator("svg[aria-label='Shapes per class']")
    first = chart.locator("text").nth(1).text_content()
    assert first.endswith("…") and len(first) <= 18
    assert chart.locator("title").first.text_content() == long_name
    box = chart.bounding_box()
    card = page.locator("section.card", has=chart).bounding_box()
    assert box["x"] + box["width"] <= card["x"] + card["width"] + 1


def test_the_login_page_shows_no_error_before_anything_is_typed(browser, ui_server):
    context = browser.new_context(base_url=ui_server.url)
    tab = context.new_page()
    try:
        tab.goto("/projects")
        tab.wait_for_url("**/login**")
        tab.locator("form.login").wait_for()
        time.sleep(0.5)  # the projects page's late 401 must not write into the login page
        assert tab.locator(".error").all_inner_texts() in ([], [""])
        assert "Bearer" not in tab.content()
    finally:
        context.close()


def test_the_grid_saves_one_revision_per_change(page, ui_server):
    pid, items = ui_server.project("grid-once", "classification", ["ant", "bee"], images=4)
    page.goto(f"/projects/{pid}/grid?n=4")
    page.locator("[data-testid=grid] figure").nth(3).wait_for()
    assert "moves to the next one" in page.locator("[data-testid=grid-help]").inner_text()
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    for _ in range(5):  # the last tile: the same key again and again
        page.keyboard.press("2")
    last = page.locator("[data-testid=grid] figure").nth(3).get_attribute("data-testid").split("-")[1]
    with ui_server.api() as http:
        deadline = time.monotonic() + 10
        while not (revisions := http.get(f"/api/items/{last}/annotations").json()["items"]):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(1)
        revisions = http.get(f"/api/items/{last}/annotations").json()["items"]
    assert len(revisions) == 1
    assert [(x["type"], x["label"]) for x in revisions[0]["shapes"]] == [("class", "bee")]


@pytest.mark.slow
def test_a_detector_is_trained_from_the_form_and_pre_labels_only_the_selected_images(page, ui_server):
    pid, items = ui_server.project("smart-boxes", "detection", ["thing"], images=6)
    with ui_server.api() as http:
        for n, item in enumerate(items[:4]):
            http.post(f"/api/items/{item}/annotations", json={"base_version": 0, "shapes": [
                {"type": "box", "label": "thing", "x0": 20 + 10 * n, "y0": 30, "x1": 120 + 10 * n, "y1": 150}]}
            ).raise_for_status()
    page.goto(f"/projects/{pid}")
    page.locator("[data-testid=detector-form] summary").click()
    for name, default in (("time_budget", "15m"), ("batch_size", "4"), ("lr", "0.01"), ("gamma", "0.1"),
                          ("rois_per_image", "128"), ("eval_period", "2"), ("test_fraction", "0.2"),
                          ("min_size", "416"), ("calibration_folds", "auto")):
        assert page.locator(f"[data-testid=train-{name}]").input_value() == default  # the defaults, filled in
    page.fill("[data-testid=train-epochs]", "2")
    page.fill("[data-testid=train-time_budget]", "")
    page.fill("[data-testid=train-min_size]", "160")
    page.fill("[data-testid=train-eval_period]", "1")
    screenshot(page, "detector-train-form")
    page.click("[data-testid=train-detector]")
    _job_message(page, "detector:1 ready")
    card = page.locator("[data-testid=model-detector-1]")
    assert "mAP@0.5 (test images)" in card.inner_text() and "test images" in card.inner_text()
    assert "threshold chosen on" in card.inner_text() and "1 held-out images" in card.inner_text()
    chosen = items[4:6]
    for item in chosen:
        page.check(f"[data-testid=select-{item}]")
    assert page.locator("[data-testid=selected-count]").inner_text() == "2 selected"
    page.click("[data-testid=prelabel-selected]")
    _job_message(page, "on 2 image(s)")
    with ui_server.api() as http:
        predicted = {p["item_id"] for p in http.get(f"/api/projects/{pid}/predictions").json()["items"]}
    assert predicted == set(chosen)
