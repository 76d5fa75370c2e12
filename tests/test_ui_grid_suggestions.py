"""The grid page with a trained classifier: each image shows the model's suggestion, Enter accepts the page.

The classifier is trained by the server on synthetic embeddings written straight into the cache (two well separated
blobs, as tests/test_classifier.py does): no encoder runs, so the training job takes seconds."""

from __future__ import annotations

import re
import time

import numpy as np
from ui_support import browser, page, screenshot, ui_server  # noqa: F401

from labelloop.ml.pretrained import DEFAULT_MODEL
from labelloop.services.assist.model_kinds.classifier import DEFAULT_ENCODER
from labelloop.store.tables import EmbeddingRow


def _cache_embeddings(workspace, kinds: dict[int, str], seed: int = 0) -> None:
    """A 64-d embedding per item near its class's centre, under the classifier's encoder and the clusters' one."""
    rng = np.random.default_rng(seed)
    centres = {kind: rng.normal(0, 1, 64) for kind in sorted(set(kinds.values()))}
    with workspace.session() as session:
        for item_id, kind in kinds.items():
            vector = (centres[kind] + rng.normal(0, 0.35, 64)).astype("<f4")
            for encoder in {DEFAULT_ENCODER, DEFAULT_MODEL}:
                session.add(EmbeddingRow(item_id=item_id, encoder=encoder, dim=64, vector=vector.tobytes()))


def _train_classifier(http, project_id: int) -> None:
    job = http.post(f"/api/projects/{project_id}/train",
                    json={"model": "classifier", "params": {"seed": 0, "features": "pooled"}})
    job.raise_for_status()
    deadline = time.monotonic() + 180
    while (state := http.get(f"/api/jobs/{job.json()['id']}").json())["state"] not in ("done", "failed", "cancelled"):
        assert time.monotonic() < deadline, state
        time.sleep(0.2)
    assert state["state"] == "done", state


def _labels(http, item_id: int) -> list[list[str]]:
    """The class labels of each stored revision of an item, oldest first."""
    revisions = http.get(f"/api/items/{item_id}/annotations").json()["items"]
    return [[s["label"] for s in r["shapes"]] for r in sorted(revisions, key=lambda r: r["version"])]


def test_the_grid_shows_the_models_suggestions_and_enter_accepts_them_keeping_a_tag(page, ui_server):
    pid, items = ui_server.project("grid-suggest", "classification", ["ants", "bees"], images=22)
    labelled, open_items = items[:16], items[16:]
    truth = {i: ("ants", "bees")[n % 2] for n, i in enumerate(labelled)} | {i: "ants" for i in open_items}
    _cache_embeddings(ui_server.workspace, truth)
    with ui_server.api() as http:
        for item in labelled:
            http.post(f"/api/items/{item}/annotations", json={"base_version": 0, "state": "submitted", "shapes": [
                {"type": "class", "label": truth[item]}]}).raise_for_status()
        _train_classifier(http, pid)

    page.goto(f"/projects/{pid}/grid?n=4")
    suggestions = page.locator("[data-testid^=suggestion-]")
    suggestions.nth(3).wait_for(timeout=60_000)
    source = page.locator("[data-testid=grid-source]").inner_text()
    assert source.startswith("The model's suggestions (") and source.endswith("): ants"), source
    assert "Enter" in page.locator("[data-testid=grid-help]").inner_text()
    assert page.locator("[data-testid=grid-accept]").get_attribute("title") == "Enter"
    cells = [int(c.get_attribute("data-testid").split("-")[1]) for c in page.locator("[data-testid=grid] figure").all()]
    assert len(cells) == 4 and set(cells) <= set(open_items)
    for item in cells:  # a question, not a label: muted and slanted, with the model's probability
        suggestion = page.locator(f"[data-testid=suggestion-{item}]")
        assert re.fullmatch(r"ants\? (0\.\d\d|1\.00)", suggestion.inner_text()), suggestion.inner_text()
        assert suggestion.evaluate("e => getComputedStyle(e).fontStyle") == "italic"
    screenshot(page, "grid-suggestions")

    page.keyboard.press("2")  # the person disagrees on the first image: their tag replaces the suggestion
    page.locator(f"[data-testid=cell-{cells[0]}] figcaption", has_text="bees").wait_for()
    assert page.locator(f"[data-testid=suggestion-{cells[0]}]").count() == 0
    page.keyboard.press("Enter")
    # every save done, the next page: the last two open images
    page.wait_for_function(f"!document.querySelector('[data-testid=cell-{cells[0]}]')")
    page.locator("[data-testid=grid] figure").nth(1).wait_for()
    rest = [int(c.get_attribute("data-testid").split("-")[1]) for c in page.locator("[data-testid=grid] figure").all()]
    assert sorted(rest) == sorted(set(open_items) - set(cells))
    with ui_server.api() as http:
        assert _labels(http, cells[0]) == [["bees"]]  # the tag, saved once, not overwritten by the accept
        for item in cells[1:]:
            assert _labels(http, item) == [["ants"]]
            annotation = http.get(f"/api/items/{item}").json()["annotation"]
            assert annotation["state"] == "submitted" and annotation["shapes"] == [{"type": "class", "label": "ants"}]
        for item in rest:
            assert _labels(http, item) == []


def test_without_a_classifier_the_grid_says_why_and_enter_saves_nothing(page, ui_server):
    pid, items = ui_server.project("grid-no-model", "classification", ["ants", "bees"], images=4)
    page.goto(f"/projects/{pid}/grid?n=4")
    page.locator("[data-testid=grid] figure").nth(3).wait_for(timeout=60_000)
    assert "no classifier to suggest classes yet" in page.locator("[data-testid=grid-source]").inner_text()
    assert page.locator("[data-testid^=suggestion-]").count() == 0
    assert page.locator("[data-testid=grid-accept]").is_disabled()
    page.keyboard.press("Enter")
    page.get_by_role("status").filter(has_text="No suggestions on this page").wait_for()
    assert page.locator("[data-testid=grid] figure").count() == 4
    with ui_server.api() as http:
        assert all(_labels(http, item) == [] for item in items)
