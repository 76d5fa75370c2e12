"""The Suspects tab of the review page: a suspect's reason on screen, and one action recorded."""

from __future__ import annotations

from ui_support import browser, page, screenshot, ui_server  # noqa: F401

from labelloop.services.quality.suspects import Found, store_run
from labelloop.store.tables import SuspectRow


def test_suspects_tab_shows_reasons_and_fixes_a_label(page, ui_server):
    pid, (first, second) = ui_server.project("quality", "classification", ["ants", "bees"], images=2)
    with ui_server.api() as http:
        for item in (first, second):
            http.post(f"/api/items/{item}/annotations", json={"base_version": 0, "state": "submitted", "shapes": [
                {"type": "class", "label": "ants"}]}).raise_for_status()
    with ui_server.workspace.session() as session:
        store_run(session, pid, "label", [
            Found(first, "label", 0.97, "labelled ants; the model says bees with 0.97, and 6 of its 8 nearest "
                  "labelled neighbours are bees", "1", {"labels": ["ants"], "suggested": ["bees"]}),
            Found(second, "label", 0.4, "labelled ants; the model gives it only 0.40", "1",
                  {"labels": ["ants"], "suggested": ["ants"]})], "ui-test", {})
    page.goto(f"/projects/{pid}/review")
    page.click("[data-testid=review-tab-suspects]")
    page.get_by_text("Suspects (2)").wait_for()
    reason = page.locator("[data-testid=suspect-reason]")
    reason.wait_for()
    assert "the model says bees with 0.97" in reason.inner_text()  # most suspect first
    assert page.locator("[data-testid=suspect-label]").input_value() == "bees"  # the suggested label preselected
    screenshot(page, "suspects")
    page.click("[data-testid=suspect-fix]")
    page.get_by_text("Suspects (1)").wait_for()
    with ui_server.api() as http:
        assert http.get(f"/api/items/{first}").json()["annotation"]["shapes"][0]["label"] == "bees"
    with ui_server.workspace.session() as session:
        states = {r.item_id: r.state for r in session.query(SuspectRow).filter(SuspectRow.project_id == pid)}
    assert states == {first: "fixed", second: "open"}


def test_a_box_suspect_names_its_kind_and_box_and_sends_the_fix_to_the_labelling_view(page, ui_server):
    pid, (item,) = ui_server.project("quality-boxes", "detection", ["raccoon"], images=1)
    with ui_server.api() as http:
        http.post(f"/api/items/{item}/annotations", json={"base_version": 0, "state": "submitted", "shapes": [
            {"type": "box", "label": "raccoon", "x0": 10, "y0": 10, "x1": 40, "y1": 50}]}).raise_for_status()
    with ui_server.workspace.session() as session:
        store_run(session, pid, "label", [Found(
            item, "label", 0.91, "the model finds a raccoon at (50, 12)–(80, 60) with 0.96 where no box is drawn", "1",
            {"issue": "overlooked", "issue_words": "missing box", "box": [50.2, 12.0, 80.4, 60.0]})], "ui-test", {})
    page.goto(f"/projects/{pid}/review")
    page.click("[data-testid=review-tab-suspects]")
    page.get_by_text("label: missing box (score 0.910)").wait_for()  # the list line and the heading
    assert "where no box is drawn" in page.locator("[data-testid=suspect-reason]").inner_text()
    assert "(50, 12)–(80, 60)" in page.locator("[data-testid=suspect-box]").inner_text()
    assert page.locator("[data-testid=suspect-fix]").count() == 0  # boxes are fixed in the labelling view
    page.get_by_text(f"open item {item} in the labelling view").wait_for()
    screenshot(page, "suspects-box")


def test_a_manager_runs_the_checks_from_the_suspects_tab_and_sees_what_they_found(page, ui_server):
    pid, items = ui_server.project("quality-run", "classification", ["ants", "bees"], images=3)
    page.goto(f"/projects/{pid}/review")
    page.click("[data-testid=review-tab-suspects]")
    # the first view on the shared test server: once, in the full suite, it took over 15 s behind earlier jobs
    page.get_by_text("Suspects (0)").wait_for(timeout=60_000)
    page.click("[data-testid=run-quality]")
    status = page.locator("[data-testid=quality-run-status]")
    page.wait_for_function("document.querySelector('[data-testid=quality-run-status]').textContent"
                           ".startsWith('last run:')", timeout=60_000)
    text = status.inner_text()
    assert "label: skipped" in text and "--model classifier" in text  # says what to train first
    assert "duplicate:" in text and "outlier:" in text
    screenshot(page, "suspects-run-checks")
    with ui_server.api() as http:
        jobs = http.get(f"/api/projects/{pid}/jobs").json()["items"]
    assert any(j["kind"] == "quality" and j["state"] == "done" for j in jobs)
