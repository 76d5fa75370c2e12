"""Browser tests: a real server over a temporary workspace, Debian's chromium driven by Playwright (pip package).

Never `playwright install`: the browser is /usr/bin/chromium (`.ci/run` installs it). Tests skip with the reason
when chromium or the built UI (web/ -> src/labelloop/server/web_dist) is missing."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from labelloop import media

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ROOT = Path(__file__).resolve().parents[1]
WEB_DIST = ROOT / "src" / "labelloop" / "server" / "web_dist"
OUTPUT = ROOT / "test-output" / "ui"
PASSWORD = "correct horse battery"
PG_URL = os.environ.get("LABELLOOP_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def missing_reason() -> str | None:
    """Why browser tests cannot run here, or None."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (apt-get install -y chromium; .ci/run does it)"
    if not (WEB_DIST / "index.html").is_file():
        return "the UI is not built (bash scripts/setup.sh, or npm ci && npm run build in web/)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(data_dir: Path, port: int, database_url: str | None = None) -> subprocess.Popen:
    log = open(data_dir / "server.log", "wb")
    env = {**os.environ, "LABELLOOP_JOB_WORKERS": "1"}
    if database_url:
        env["LABELLOOP_DATABASE_URL"] = database_url
    process = subprocess.Popen(
        [sys.executable, "-m", "labelloop.cli.main", "serve", "--data-dir", str(data_dir), "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited: {(data_dir / 'server.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("the server did not start within 60 s")


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def write_images(folder: Path, count: int, *, width: int = 320, height: int = 240, start: int = 0) -> list[Path]:
    """Distinct greyscale-gradient PNGs (different content, so none is a duplicate of another)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(start, start + count):
        yy, xx = np.mgrid[0:height, 0:width]
        pixels = ((xx + 2 * yy + 37 * n) % 256).astype(np.uint8)
        path = folder / f"img{n:03d}.png"
        path.write_bytes(media.encode_png(pixels))
        paths.append(path)
    return paths


@dataclass
class Server:
    url: str
    workspace: object
    token: str
    data_dir: Path

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30)

    def project(self, name: str, kind: str, classes: list[str], images: int = 1) -> tuple[int, list[int]]:
        """A project owned by alice with a few uploaded images: (project id, item ids)."""
        with self.api() as http:
            project = http.post("/api/projects", json={"name": name, "kind": kind, "classes": classes})
            project.raise_for_status()
            pid = project.json()["id"]
            paths = write_images(self.data_dir.parent / f"images-{name}", images, start=100 + pid * 10)
            files = [("files", (p.name, p.read_bytes(), "image/png")) for p in paths]
            http.post(f"/api/projects/{pid}/items", files=files).raise_for_status()
            items = http.get(f"/api/projects/{pid}/items").json()["items"]
        return pid, [i["id"] for i in items]


# Test modules import these fixtures, which makes one fixture per module; the server and the browser are still
# made once per test session (one Playwright per thread is all the sync API allows), and closed at its end.
_shared: dict[str, object] = {}


def _serve(root: Path, request, database_url: str | None = None, cleanup=None) -> Server:
    """A workspace with alice (token) and bob, served by `labelloop serve` until the test session ends."""
    from labelloop.services.labelling import users
    from labelloop.services.workspace import Workspace

    workspace = Workspace.init(root / "workspace", database_url=database_url)
    with workspace.session() as session:
        alice = users.create_user(session, "alice", PASSWORD)
        token = users.create_token(session, alice.id, "ui tests")[1]
        users.create_user(session, "bob", PASSWORD)
    port = free_port()
    process = start_server(workspace.root, port, database_url)

    def stop() -> None:
        stop_server(process)
        workspace.close()
        if cleanup:
            cleanup()

    request.config.add_cleanup(stop)
    return Server(f"http://127.0.0.1:{port}", workspace, token, Path(workspace.root))


@pytest.fixture(scope="session")
def ui_server(tmp_path_factory, request):
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    if "server" not in _shared:
        _shared["server"] = _serve(tmp_path_factory.mktemp("ui"), request)
    return _shared["server"]


def postgres_problem() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_URL, connect_timeout=3):
            return None
    except Exception as exc:  # any failure means: no usable server here
        return f"PostgreSQL not reachable at {PG_URL} (LABELLOOP_TEST_DATABASE_URL): {str(exc).strip()[:200] or exc!r}"


@pytest.fixture(scope="session")
def ui_server_postgres(tmp_path_factory, request):
    """A second server whose workspace lives in a fresh PostgreSQL schema (dropped at the end)."""
    reason = missing_reason() or postgres_problem()
    if reason:
        pytest.skip(reason)
    if "server_postgres" not in _shared:
        import psycopg

        schema = f"t_ui_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(PG_URL, autocommit=True) as connection:
            connection.execute(f'CREATE SCHEMA "{schema}"')

        def drop() -> None:
            with psycopg.connect(PG_URL, autocommit=True) as connection:
                connection.execute(f'DROP SCHEMA "{schema}" CASCADE')

        url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}options=-csearch_path%3D{schema}"
        _shared["server_postgres"] = _serve(tmp_path_factory.mktemp("ui-pg"), request, url, drop)
    return _shared["server_postgres"]


@pytest.fixture(scope="session")
def browser(ui_server, request):
    if "browser" not in _shared:
        from playwright.sync_api import sync_playwright

        playwright = sync_playwright().start()
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)

        def close() -> None:
            instance.close()
            playwright.stop()

        request.config.add_cleanup(close)
        _shared["browser"] = instance
    return _shared["browser"]


@contextmanager
def logged_in(browser, server: Server, name: str = "alice", screenshot_name: str | None = None):
    """A page logged in as `name` in a fresh browser context; fails on JavaScript errors; screenshot at the end."""
    context = browser.new_context(base_url=server.url, viewport={"width": 1400, "height": 900})
    context.set_default_timeout(15_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        log_in(tab, name)
        yield tab
        if screenshot_name:
            screenshot(tab, screenshot_name)
    finally:
        context.close()
    assert not errors, f"JavaScript errors: {errors}"


@pytest.fixture
def page(browser, ui_server, request):
    """A logged-in page (alice) in a fresh browser context; a screenshot is saved when the test ends."""
    with logged_in(browser, ui_server, screenshot_name=request.node.name) as tab:
        yield tab


def log_in(tab, name: str = "alice") -> None:
    tab.goto("/login")
    tab.fill("input[name=name]", name)
    tab.fill("input[name=password]", PASSWORD)
    tab.click("button[type=submit]")
    tab.wait_for_url("**/projects")


def open_item(tab, project_id: int, item_id: int) -> None:
    tab.goto(f"/projects/{project_id}/items/{item_id}")
    tab.wait_for_selector("body[data-ready='1']")


def screen(tab, x: float, y: float) -> tuple[float, float]:
    """Client coordinates of image pixel (x, y) in the labelling view."""
    return tuple(tab.evaluate("([x, y]) => window.__labelloop.toScreen(x, y)", [x, y]))


def drag(tab, start: tuple[float, float], end: tuple[float, float], steps: int = 8) -> None:
    tab.mouse.move(*screen(tab, *start))
    tab.mouse.down()
    tab.mouse.move(*screen(tab, *end), steps=steps)
    tab.mouse.up()


def wait_saved(tab) -> None:
    tab.wait_for_function("document.querySelector('[data-testid=save-status]')?.textContent === 'Saved' "
                          "&& !window.__labelloop.saver.dirty")


def screenshot(tab, name: str) -> None:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(OUTPUT / f"{name}.png"))
