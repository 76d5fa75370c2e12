"""The dashboard's simulation card: a simulation on the project's own labels, its figures per strategy and the
effort PNG, shown again after a reload; a bad input shows the server's message and starts nothing.

The classifier learns synthetic embeddings written straight into the cache (two well separated blobs, as
tests/simulate_support.py does): no encoder runs, so every round trains in a moment."""

from __future__ import annotations

import re

import numpy as np
from ui_support import browser, page, screenshot, ui_server  # noqa: F401

from labelloop.ml.pretrained import DEFAULT_MODEL
from labelloop.services.assist.model_kinds.classifier import DEFAULT_ENCODER
from labelloop.store.tables import EmbeddingRow


def _labelled_project(server, name: str, images: int = 24) -> int:
    """A classification project whose every item is labelled, with an embedding per item near its class's centre."""
    pid, items = server.project(name, "classification", ["ants", "bees"], images=images)
    truth = {item: ("ants", "bees")[n % 2] for n, item in enumerate(items)}
    rng = np.random.default_rng(0)
    centres = {label: rng.normal(0, 1, 32) for label in ("ants", "bees")}
    with server.workspace.session() as session:
        for item, label in truth.items():
            vector = (centres[label] + rng.normal(0, 0.35, 32)).astype("<f4")
            for encoder in {DEFAULT_ENCODER, DEFAULT_MODEL}:
                session.add(EmbeddingRow(item_id=item, encoder=encoder, dim=32, vector=vector.tobytes()))
    with server.api() as http:
        # synthetic vectors do not fit the ImageNet head: the classifier reads them as they are
        http.patch(f"/api/projects/{pid}", json={"settings": {"classifier_features": "pooled"}}).raise_for_status()
        for item, label in truth.items():
            http.post(f"/api/items/{item}/annotations", json={"base_version": 0, "state": "submitted", "shapes": [
                {"type": "class", "label": label}]}).raise_for_status()
    return pid


def _simulations(server, pid: int) -> list[dict]:
    with server.api() as http:
        return [j for j in http.get(f"/api/projects/{pid}/jobs").json()["items"] if j["kind"] == "simulate"]


def _fill(page, **values: str) -> None:
    for name, value in values.items():
        page.fill(f"[data-testid=simulation-{name}]", value)


def test_a_simulation_started_from_the_dashboard_shows_its_figures_and_effort_png(page, ui_server):
    pid = _labelled_project(ui_server, "simulate-ui")
    page.goto(f"/projects/{pid}")
    card = page.locator("[data-testid=simulation-card]")
    card.locator("summary", has_text="Simulate labelling with labelloop").click()
    assert "uses the labels people have already given as the truth" in card.inner_text().lower()
    assert card.locator("[data-testid=simulation-grid] option").all_inner_texts()[1:] == [
        "4 per page", "6 per page", "9 per page"]

    _fill(page, start="99", batch="6", seeds="0")  # more than the pool: the server's sentence, no job
    page.click("[data-testid=simulation-submit]")
    error = page.locator("[data-testid=simulation-error]")
    error.wait_for()
    assert "--start 99: only 24 items are in the pool" in error.inner_text(), error.inner_text()
    _fill(page, seeds="0,x")  # checked in the browser before anything is sent
    page.click("[data-testid=simulation-submit]")
    page.wait_for_function("document.querySelector('[data-testid=simulation-error]').textContent.includes('x is not')")
    assert _simulations(ui_server, pid) == []

    _fill(page, start="6", seeds="0")
    page.uncheck("[data-testid=simulation-until-done]")
    _fill(page, rounds="2")
    page.check("[data-testid=simulation-compare-random]")
    page.select_option("[data-testid=simulation-strategy]", "margin")
    page.click("[data-testid=simulation-submit]")
    card.locator("[data-testid=simulation-status]", has_text="Simulation #").wait_for()  # its progress while it runs
    assert error.is_hidden()
    ratio = card.locator("[data-testid=simulation-row-margin] [data-testid=effort-ratio]")
    ratio.wait_for(timeout=120_000)
    assert re.fullmatch(r"\d+\.\d\d×", ratio.inner_text()), ratio.inner_text()
    assert card.locator("[data-testid=simulation-row-random]").count() == 1
    assert "vs random" in card.locator("[data-testid=simulation-versus]").first.inner_text()
    (job,) = _simulations(ui_server, pid)
    assert job["state"] == "done" and job["params"]["start"] == 6 and job["params"]["rounds"] == 2
    assert job["params"]["compare"] == ["random"]
    figure = card.locator("[data-testid=simulation-figure]")
    assert figure.get_attribute("src") == f"/api/projects/{pid}/simulations/{job['id']}/effort.png"
    figure.scroll_into_view_if_needed()
    page.wait_for_function("(() => { const img = document.querySelector('[data-testid=simulation-figure]');"
                           " return img.complete && img.naturalWidth > 0; })()")
    screenshot(page, "dashboard-simulation")

    page.reload()  # the last finished simulation, found again through the project's jobs
    page.locator("[data-testid=simulation-row-margin] [data-testid=effort-ratio]").wait_for()
    assert page.locator("[data-testid=simulation-card] h3").inner_text() == f"Simulation #{job['id']}"


def test_a_detection_projects_card_offers_rounds_that_improve_the_last_model(page, ui_server):
    """The detector fine-tunes its previous version: the card offers it there (and sends `from_previous`), and
    not on a classification project, whose classifier trains anew each round."""
    pid, items = ui_server.project("simulate-boxes-ui", "detection", ["raccoon"], images=3)
    with ui_server.api() as http:
        for n, item in enumerate(items):
            http.post(f"/api/items/{item}/annotations", json={"base_version": 0, "state": "submitted", "shapes": [
                {"type": "box", "label": "raccoon", "x0": 2 + n, "y0": 2, "x1": 12 + n, "y1": 14}]}).raise_for_status()
    page.goto(f"/projects/{pid}")
    card = page.locator("[data-testid=simulation-card]")
    card.locator("summary", has_text="Simulate labelling with labelloop").click()
    assert "improve the last round's model" in card.inner_text()
    assert card.locator("[data-testid=simulation-grid]").count() == 0
    page.check("[data-testid=simulation-from-previous]")
    _fill(page, start="99", seeds="0")  # a refusal: nothing runs, but the request shows what the box sends
    with page.expect_request(lambda r: r.url.endswith(f"/api/projects/{pid}/simulate")) as sent:
        page.click("[data-testid=simulation-submit]")
    assert sent.value.post_data_json["from_previous"] is True
    page.locator("[data-testid=simulation-error]").wait_for()
    assert _simulations(ui_server, pid) == []

    classification = _labelled_project(ui_server, "simulate-classes-ui", images=6)
    page.goto(f"/projects/{classification}")
    page.locator("[data-testid=simulation-card] summary", has_text="Simulate labelling").click()
    assert page.locator("[data-testid=simulation-from-previous]").count() == 0
