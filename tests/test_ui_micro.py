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
