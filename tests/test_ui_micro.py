"""The dashboard's micro-model card: each class's state and the chain (browser test, see ui_support.py)."""

from __future__ import annotations

from ui_support import browser, logged_in, page, screenshot, ui_server  # noqa: F401


def test_dashboard_shows_each_class_micro_model_state_and_the_chain(page, ui_server):
    pid, items = ui_server.project("chained", "classification", ["cat", "dog"], images=2)
    with ui_server.api() as http:
        http.post(f"/api/items/{items[0]}/annotations", json={"base_version": 0, "state": "submitted", "shapes": [
            {"type": "class", "label": "cat"}]}).raise_for_status()
        assert http.get(f"/api/projects/{pid}/models").json()["micro_models"] is None
        http.put(f"/api/projects/{pid}/chain", json={"chain": ["micro:cat", "micro:dog"]}).raise_for_status()
    page.goto(f"/projects/{pid}")
    card = page.locator("[data-testid=micro-models]")
    card.get_by_role("heading", name="Micro-models").wait_for()
    text = card.inner_text()
    assert "Chain: micro:cat → micro:dog" in text
    rows = card.locator("tr").all_inner_texts()
    assert len(rows) == 3 and rows[1].split()[:2] == ["cat", "1"] and rows[2].split()[:2] == ["dog", "0"]
    assert "no: 1 labelled example(s) of 'cat', fewer than --min-examples 5; label 4 more" in rows[1]
    screenshot(page, "dashboard-micro-models")


def test_a_newcomer_trains_chains_and_runs_semantic_micro_models_from_the_dashboard(page, ui_server):
    from test_ui_loop import _scribbles

    pid, items = ui_server.project("micro-sem", "semantic", ["background", "cell"], images=4)
    shapes = _scribbles()
    with ui_server.api() as http:
        for item in items[:3]:
            http.post(f"/api/items/{item}/annotations", json={"base_version": 0, "shapes": shapes}).raise_for_status()
    page.goto(f"/projects/{pid}")
    page.select_option(".models-card select", "micro-models (one per class)")
    page.get_by_role("button", name="Train", exact=True).click()
    page.locator("td.job-message", has_text="cell: micro:cell:1 on 3 examples").wait_for(timeout=120_000)
    card = page.locator("[data-testid=micro-models]")
    card.get_by_role("heading", name="Micro-models").wait_for()
    rows = card.locator("tr").all_inner_texts()
    assert rows[0].split("\t") == ["class", "images", "micro-model", "ready", "precision", "recall", "IoU", "in chain",
                                   ""]  # the last column: each class's own Train button
    assert len(rows) == 2 and rows[1].startswith("cell\t3\tmicro:cell:1 (pixel-rf)")  # never the background
    card.locator("[data-testid=chain-trained]").click()
    card.get_by_text("Chain: micro:cell").wait_for()
    page.get_by_role("button", name="Pre-label", exact=True).click()
    message = page.locator("td.job-message", has_text="chain of 1 micro-model(s) pre-labelled").first
    message.wait_for(timeout=120_000)
    assert "of 1 item(s)" in message.inner_text()  # the one item nobody labelled
    screenshot(page, "dashboard-micro-models-semantic")


def test_a_detection_project_offers_micro_models_and_shows_each_class_by_its_images(page, ui_server):
    pid, items = ui_server.project("micro-boxes", "detection", ["car", "person"], images=2)
    with ui_server.api() as http:
        http.post(f"/api/items/{items[0]}/annotations", json={"base_version": 0, "shapes": [
            {"type": "box", "label": "car", "x0": 1, "y0": 1, "x1": 8, "y1": 8}]}).raise_for_status()
        http.put(f"/api/projects/{pid}/chain", json={"chain": ["micro:car", "micro:person"]}).raise_for_status()
    page.goto(f"/projects/{pid}")
    card = page.locator("[data-testid=micro-models]")
    card.get_by_role("heading", name="Micro-models").wait_for()
    assert page.locator(".models-card option[value='micro-models (one per class)']").count() == 1
    rows = card.locator("tr").all_inner_texts()
    assert rows[0].split("\t") == ["class", "images", "micro-model", "ready", "precision", "recall", "AP@0.5",
                                   "in chain", ""]
    assert rows[1].startswith("car\t1\t–\tno: 1 labelled image(s) hold a 'car' box, fewer than --min-examples 5")
    screenshot(page, "dashboard-micro-models-detection")
    # the base: a detector per class, or one shared by the classes; the choice reaches the training job
    base = card.locator("[data-testid=micro-base]")
    assert base.locator("option").all_inner_texts() == ["auto", "a detector per class", "one shared detector"]
    base.select_option("shared-detector")
    card.locator("[data-testid=micro-train-all]").click()
    page.locator("td.job-message", has_text="car: not trained").first.wait_for(timeout=60_000)
    with ui_server.api() as http:
        job = http.get(f"/api/projects/{pid}/jobs").json()["items"][0]
    assert job["kind"] == "micro-train" and job["params"]["base"] == "shared-detector", job


def test_a_class_is_trained_alone_from_its_row_with_the_options_the_card_offers(page, ui_server):
    pid, items = ui_server.project("micro-one", "classification", ["cat", "dog"], images=3)
    with ui_server.api() as http:  # two cats and a dog (what a cat is not)
        for item, label in zip(items, ("cat", "cat", "dog")):
            http.post(f"/api/items/{item}/annotations", json={"base_version": 0, "state": "submitted", "shapes": [
                {"type": "class", "label": label}]}).raise_for_status()
    page.goto(f"/projects/{pid}")
    start = page.locator("[data-testid=micro-start]")  # no micro-model yet: the options, folded away
    start.locator("summary").click()
    page.fill("[data-testid=micro-min-examples]", "2")  # two cats are enough for this project
    start.locator("[data-testid=micro-train-cat]").click()
    card = page.locator("[data-testid=micro-models]")
    message = page.locator("td.job-message", has_text="micro:cat:1").first
    message.wait_for(timeout=120_000)
    row = card.locator("tr", has_text="micro:cat:1")
    row.wait_for()
    assert row.inner_text().startswith("cat\t2\tmicro:cat:1")
    assert card.locator("[data-testid=micro-train-cat]").inner_text() == "Retrain"
    with ui_server.api() as http:  # dog was not asked for: no micro-model of it
        classes = {c["class"]: c for c in http.get(f"/api/projects/{pid}/models").json()["micro_models"]["classes"]}
    assert classes["cat"]["model"] == "micro:cat:1" and classes["dog"]["model"] is None
    assert page.input_value("[data-testid=micro-min-examples]") == "2"  # kept while the dashboard refreshed
    screenshot(page, "dashboard-micro-models-train-one")
