"""Benchmark: the labelling view with a 4096×4096 image and 2,000 polygons, in headless chromium.

    .venv/bin/python benchmarks/ui_polygons.py [--polygons 2000] [--size 4096] [--runs 3] [--steps 60]
    .venv/bin/python benchmarks/ui_polygons.py --size 8000      # an 8000×8000 picture (tiles of its levels)

Measures, in the page (performance.now(), from the start of navigation):
- shapes drawn: the 2,000 polygons are on screen and the map takes input (the map answers pointer events from
  here on; image tiles may still be arriving);
- interactive: OpenLayers' first `rendercomplete` (shapes and every visible image tile drawn);
and, for selecting one polygon and dragging it (Translate) in `--steps` mouse moves:
- per drag step, the time OpenLayers spends composing the frame (`precompose` -> `postcompose`, all layers);
- per drag step, input-to-frame latency (the pointer event's timeStamp -> the next frame composed).
Needs /usr/bin/chromium and the built UI (bash scripts/setup.sh). The server runs over a temporary workspace.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from ui_support import CHROMIUM, CHROMIUM_ARGS, PASSWORD, free_port, missing_reason, start_server, stop_server  # noqa: E402

from labelloop import media  # noqa: E402

INSTRUMENT = """
(() => {
  const ed = window.__labelloop.editor;
  const map = ed.viewer.map;
  const out = { frames: [], moves: [] };
  let start = 0;
  map.on('precompose', () => { start = performance.now(); });
  map.on('postcompose', () => { out.frames.push([start, performance.now()]); });
  map.getViewport().addEventListener('pointermove', (e) => out.moves.push(e.timeStamp), { capture: true });
  window.__bench = out;
})()
"""


def polygons(count: int, size: int, seed: int = 0) -> list[dict]:
    """`count` irregular 12-vertex polygons on a grid over the image."""
    rng = np.random.default_rng(seed)
    per_row = math.ceil(math.sqrt(count))
    cell = size / per_row
    shapes = []
    for n in range(count):
        cx, cy = (n % per_row + 0.5) * cell, (n // per_row + 0.5) * cell
        angles = np.sort(rng.uniform(0, 2 * math.pi, 12))
        radii = rng.uniform(0.2, 0.45, 12) * cell
        ring = [[round(cx + r * math.cos(a), 2), round(cy + r * math.sin(a), 2)] for a, r in zip(angles, radii)]
        shapes.append({"type": "polygon", "label": "cell", "parts": [ring]})
    return shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--polygons", type=int, default=2000)
    parser.add_argument("--size", type=int, default=4096, help="side of the square picture in pixels (e.g. 8000)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--resolution", type=float, default=0.0,
                        help="image pixels per screen pixel while dragging (default: the whole image in view)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    reason = missing_reason()
    if reason:
        sys.exit(f"cannot run: {reason}")

    import httpx
    from playwright.sync_api import sync_playwright

    from labelloop.services.labelling import users
    from labelloop.services.workspace import Workspace

    with tempfile.TemporaryDirectory() as tmp:
        workspace = Workspace.init(Path(tmp) / "workspace")
        with workspace.session() as session:
            user = users.create_user(session, "alice", PASSWORD)
            token = users.create_token(session, user.id, "bench")[1]
        yy, xx = np.ogrid[0:args.size, 0:args.size]  # broadcast: an 8000² picture costs 64 MB, not 1 GB of grids
        picture = (((xx // 7) ^ (yy // 7)) % 256).astype(np.uint8)
        png = media.encode_png(picture)
        port = free_port()
        server = start_server(Path(workspace.root), port)
        url = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as http:
                pid = http.post("/api/projects", json={"name": "dense", "kind": "instance", "classes": ["cell"]}).json()["id"]
                http.post(f"/api/projects/{pid}/items", files=[("files", ("big.png", png, "image/png"))]).raise_for_status()
                item = http.get(f"/api/projects/{pid}/items").json()["items"][0]["id"]
                shapes = polygons(args.polygons, args.size)
                http.post(f"/api/items/{item}/annotations", json={"base_version": 0, "state": "draft",
                                                                  "shapes": shapes}).raise_for_status()
            results = run_browser(sync_playwright, url, pid, item, shapes, args)
        finally:
            stop_server(server)
            workspace.close()
    results.update(polygons=args.polygons, size=args.size, resolution=args.resolution or "fit")
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for key, value in results.items():
            print(f"{key}: {value}")


def run_browser(sync_playwright, url: str, pid: int, item: int, shapes: list[dict], args) -> dict:
    drawn, interactive, frames, latencies = [], [], [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            for _ in range(args.runs):
                context = browser.new_context(base_url=url, viewport={"width": 1400, "height": 900})
                page = context.new_page()
                page.goto("/login")
                page.fill("input[name=name]", "alice")
                page.fill("input[name=password]", PASSWORD)
                page.click("button[type=submit]")
                page.wait_for_url("**/projects")
                page.goto(f"/projects/{pid}/items/{item}")
                page.wait_for_selector("body[data-ready='1']", timeout=120_000)
                drawn.append(page.evaluate("window.__labelloopShapesDrawn"))
                interactive.append(page.evaluate("window.__labelloopReady"))
                assert page.evaluate("window.__labelloop.editor.entries.length") == len(shapes)
                if args.resolution:  # else the whole image fits the view: every polygon is drawn in every frame
                    page.evaluate(f"window.__labelloop.editor.viewer.map.getView().setResolution({args.resolution})")
                page.wait_for_timeout(500)
                page.evaluate(INSTRUMENT)
                frames_run, latency_run = drag_one(page, shapes, args.steps)
                frames += frames_run
                latencies += latency_run
                context.close()
        finally:
            browser.close()

    def summary(values: list[float]) -> dict:
        ordered = sorted(values)
        return {"median_ms": round(statistics.median(ordered), 1),
                "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
                "max_ms": round(ordered[-1], 1), "n": len(ordered)}

    return {"shapes_drawn_ms": [round(v) for v in drawn], "interactive_ms": [round(v) for v in interactive],
            "drag_frame_compose": summary(frames), "drag_input_to_frame": summary(latencies)}


def drag_one(page, shapes: list[dict], steps: int) -> tuple[list[float], list[float]]:
    """Press on a polygon near the view centre, drag it `steps` pixels right; frames and latencies during the drag."""
    centre = page.evaluate("window.__labelloop.editor.viewer.map.getView().getCenter()")[0]
    ring = min((s["parts"][0] for s in shapes),
               key=lambda r: (sum(p[0] for p in r) / len(r) - centre) ** 2 + (sum(p[1] for p in r) / len(r) - centre) ** 2)
    cx, cy = sum(p[0] for p in ring) / len(ring), sum(p[1] for p in ring) / len(ring)
    x, y = page.evaluate("([x, y]) => window.__labelloop.toScreen(x, y)", [cx, cy])
    page.mouse.move(x, y)
    page.mouse.down()
    page.evaluate("window.__bench.frames.length = 0; window.__bench.moves.length = 0")
    for n in range(1, steps + 1):
        page.mouse.move(x + n, y + n / 2)
        page.wait_for_timeout(20)
    page.mouse.up()
    page.wait_for_timeout(300)
    data = page.evaluate("window.__bench")
    assert page.evaluate("window.__labelloop.editor.selected.size") == 1, "the dragged polygon was not selected"
    frames = [end - start for start, end in data["frames"]]
    latencies = []
    for moved in data["moves"]:
        after = [end for _, end in data["frames"] if end >= moved]
        if after:
            latencies.append(after[0] - moved)
    return frames, latencies


if __name__ == "__main__":
    t0 = time.monotonic()
    main()
    print(f"wall time: {time.monotonic() - t0:.0f} s", file=sys.stderr)
