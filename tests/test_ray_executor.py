"""Batch work on Ray (issue 22, item 1): embeddings and predictions give what the inline executor gives, on an
in-process cluster (`ray.init(num_cpus=2)`) and on one started with `ray start --head` on 127.0.0.1; cancel stops
the tasks; a worker killed mid-task is retried without duplicates; an unreachable address is a clear error that
writes nothing. Ray starts slowly on 2 cores, hence `slow`; the tests start and stop their own clusters, so CI
needs nothing beside them."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from conftest import snapshot

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'labelloop[ray]'")
pytestmark = pytest.mark.slow

from labelloop.notebook import ProjectHandle  # noqa: E402
from labelloop.services.data.importing import import_path  # noqa: E402
from labelloop.services.jobs import cancel_job, create_job, get_job, run_job  # noqa: E402
from labelloop.services.projects import create_project  # noqa: E402
from labelloop.services.workspace import Workspace  # noqa: E402
from labelloop.store.tables import EmbeddingRow, JobRow, PredictionRow  # noqa: E402

ITEMS = 24
LABELLOOP = str(Path(sys.executable).with_name("labelloop"))
RAY = str(Path(sys.executable).with_name("ray"))
# A throw-away cluster on 127.0.0.1 only, without a token: in our runs a driver in another process was refused by a
# `ray start` head with the token in ~/.ray; docs/deployment.md shows a real cluster with its token.
LOCAL = {"RAY_AUTH_MODE": "disabled"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _task_pids() -> list[int]:
    """Ray workers running a chunk right now: Ray names a busy worker after its task (`ray::_chunk_task`)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(b"ray::_chunk_task"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@pytest.fixture(scope="module")
def images(tmp_path_factory, request) -> Path:
    data = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hymenoptera" / "train"
    if not data.is_dir():
        pytest.skip(f"real photos not found at {data} (they live in ../shared/data beside the repo)")
    folder = tmp_path_factory.mktemp("photos")
    for path in sorted((data / "ants").glob("*.jpg"))[:ITEMS // 2] + sorted((data / "bees").glob("*.jpg"))[:ITEMS // 2]:
        shutil.copy(path, folder / f"{path.parent.name}_{path.name}")
    return folder


def _workspace(root: Path, images: Path) -> Workspace:
    workspace = Workspace.init(root)
    with workspace.session() as session:
        create_project(session, "bugs", "classification", ["ants", "bees"])
    import_path(workspace, "bugs", images, format="images")
    return workspace


@pytest.fixture(scope="module")
def inline_vectors(tmp_path_factory, images) -> dict[str, np.ndarray]:
    """The reference: embeddings computed in this process by the inline executor."""
    workspace = _workspace(tmp_path_factory.mktemp("inline") / "ws", images)
    try:
        handle = ProjectHandle(workspace, "bugs")
        assert handle.embed()["computed"] == ITEMS
        return handle.embeddings()
    finally:
        workspace.close()


@pytest.fixture(scope="module")
def in_process_ray():
    temp = tempfile.mkdtemp(prefix="llray", dir="/tmp")  # short: Ray's socket paths must fit 107 characters
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp, log_to_driver=False)
    yield
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def on_ray(monkeypatch, in_process_ray, inline_vectors):
    monkeypatch.setenv("LABELLOOP_EXECUTOR", "ray")
    monkeypatch.setenv("LABELLOOP_CHUNK_ITEMS", "4")


def _assert_same(vectors: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> None:
    assert sorted(vectors) == sorted(reference)
    for name, vector in reference.items():
        np.testing.assert_allclose(vectors[name], vector, rtol=1e-4, atol=1e-5, err_msg=name)


def _embedding_rows(workspace) -> tuple[int, int]:
    with workspace.session() as session:
        rows = session.scalar(select(func.count()).select_from(EmbeddingRow))
        distinct = session.scalar(select(func.count(func.distinct(EmbeddingRow.item_id))))
    return rows, distinct


def test_embeddings_on_ray_equal_the_inline_ones_and_progress_adds_up(tmp_path, images, on_ray, inline_vectors):
    workspace = _workspace(tmp_path / "ws", images)
    handle = ProjectHandle(workspace, "bugs")
    result = handle.embed()
    assert (result["executor"], result["tasks"], result["computed"]) == ("ray", ITEMS // 4, ITEMS)
    _assert_same(handle.embeddings(), inline_vectors)
    job = get_job(workspace, workspace_jobs(workspace)[-1])
    assert (job.state, job.done, job.total) == ("done", ITEMS, ITEMS)
    assert handle.embed()["computed"] == 0  # cached: nothing sent to the cluster again
    assert _embedding_rows(workspace) == (ITEMS, ITEMS)


def workspace_jobs(workspace) -> list[int]:
    with workspace.session() as session:
        return list(session.scalars(select(JobRow.id).order_by(JobRow.id)))


def test_predictions_on_ray_equal_the_inline_ones_without_duplicates(tmp_path, shared_data, monkeypatch,
                                                                     in_process_ray):
    from test_assist import _lucchi_project, _test_crops

    workspace = Workspace.init(tmp_path / "ws")
    with workspace.session() as session:
        create_project(session, "mito", "semantic", ["background", "mitochondrion"])
    import_path(workspace, "mito", _lucchi_project(tmp_path / "scr", shared_data), format="scribbles")
    import_path(workspace, "mito", _test_crops(tmp_path / "test", shared_data,
                                               ("slice_010.png", "slice_040.png", "slice_070.png", "slice_100.png")),
                format="images", split="test")
    assert run_job(workspace, create_job(workspace, "train", {"project": "mito", "model": "pixel-rf", "trees": 20,
                                                              "seed": 0})).state == "done"

    def predict(executor: str = "inline") -> dict[int, list]:
        job = run_job(workspace, create_job(workspace, "predict", {"project": "mito", "model": "pixel-rf",
                                                                   "split": "test", "instances": "watershed"}))
        assert job.state == "done", job.error
        assert job.result["predictions"] == 4
        assert job.result.get("executor", "inline") == executor and job.result.get("tasks", 4) == 4
        with workspace.session() as session:
            rows = session.scalars(select(PredictionRow).where(PredictionRow.review_state == "pending")).all()
            return {r.item_id: r.shapes for r in rows}

    inline = predict()
    monkeypatch.setenv("LABELLOOP_EXECUTOR", "ray")
    monkeypatch.setenv("LABELLOOP_CHUNK_ITEMS", "1")
    on_ray = predict("ray")
    assert on_ray == inline and len(on_ray) == 4
    assert predict("ray") == inline  # a second run on Ray replaces the pending predictions, it does not add to them
    with workspace.session() as session:
        assert session.scalar(select(func.count()).select_from(PredictionRow)) == 4


def test_a_chain_of_micro_models_on_ray_writes_what_inline_writes(tmp_path, monkeypatch, in_process_ray):
    from test_micro_masks import _masks_project

    from labelloop.services.assist.micro import set_chain
    from labelloop.services.projects import create_project as make

    workspace = Workspace.init(tmp_path / "ws")

    def make_project(name, kind, classes):
        with workspace.session() as session:
            return make(session, name, kind, classes)

    _masks_project(workspace, make_project, tmp_path / "m", count=7, labelled=3)
    job = run_job(workspace, create_job(workspace, "micro-train", {"project": "p", "class": "cell",
                                                                   "base": "pixel-rf"}))
    assert job.state == "done", job.error
    set_chain(workspace, "p", ["micro:cell"])

    def chain(executor: str = "inline") -> dict[int, list]:
        job = run_job(workspace, create_job(workspace, "chain-predict", {"project": "p"}))
        assert job.state == "done", job.error
        assert job.result["predictions"] == 4 and job.result.get("executor", "inline") == executor
        assert job.result["chain"] == ["micro:cell:1"] and "pre-labelled" in job.result["summary"]
        with workspace.session() as session:
            rows = session.scalars(select(PredictionRow).where(PredictionRow.review_state == "pending")).all()
            return {r.item_id: r.shapes for r in rows}

    inline = chain()
    monkeypatch.setenv("LABELLOOP_EXECUTOR", "ray")
    monkeypatch.setenv("LABELLOOP_CHUNK_ITEMS", "1")
    assert chain("ray") == inline and len(inline) == 4
    with workspace.session() as session:
        assert session.scalar(select(func.count()).select_from(PredictionRow)) == 4  # replaced, not added


def _run_in_thread(workspace, job_id: int) -> threading.Thread:
    thread = threading.Thread(target=run_job, args=(workspace, job_id), daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("when", ["as_it_starts", "mid_run"])
def test_cancel_stops_the_ray_tasks(tmp_path, images, on_ray, monkeypatch, when):
    """As it starts: the job is still listing its items, and submits nothing. Mid-run: the waiting tasks are
    dropped, the running ones interrupted, and nothing is written once the job reads `cancelled`."""
    monkeypatch.setenv("LABELLOOP_CHUNK_ITEMS", "1")  # one task per item: most still wait when the job is cancelled
    # 240 distinct pictures (a warm cluster embeds the 24 photos in about a second, before any cancel can land)
    from PIL import Image

    many, photos = tmp_path / "many", sorted(images.iterdir())
    many.mkdir()
    for i in range(10 * ITEMS):
        picture = Image.open(photos[i % len(photos)]).convert("RGB").resize((96, 96))
        picture.putpixel((0, 0), (i % 256, i // 256, 7))
        picture.save(many / f"{i:03d}.png")
    workspace = _workspace(tmp_path / "ws", many)
    job_id = create_job(workspace, "embed", {"project": "bugs", "batch_size": 1})
    thread = _run_in_thread(workspace, job_id)
    deadline = time.monotonic() + 240
    while get_job(workspace, job_id).state != "running" and time.monotonic() < deadline:
        time.sleep(0.02)
    while when == "mid_run" and _embedding_rows(workspace)[0] < 8 and time.monotonic() < deadline:
        time.sleep(0.02)
    cancelled_at = time.monotonic()
    cancel_job(workspace, job_id)
    thread.join(60)
    job = get_job(workspace, job_id)
    assert job.state == "cancelled", (job.state, job.error)
    assert time.monotonic() - cancelled_at < 15  # the next progress report, then at most the cancel grace
    stopped, _ = _embedding_rows(workspace)
    deadline = time.monotonic() + 30
    while _task_pids() and time.monotonic() < deadline:  # the running ones are interrupted, the waiting ones dropped
        time.sleep(0.2)
    assert _task_pids() == []
    time.sleep(2)
    assert _embedding_rows(workspace)[0] == stopped < 10 * ITEMS


def test_a_worker_killed_mid_task_is_retried_without_duplicates(tmp_path, images, on_ray, inline_vectors):
    workspace = _workspace(tmp_path / "ws", images)
    job_id = create_job(workspace, "embed", {"project": "bugs", "batch_size": 2})  # rows written every 2 items
    thread = _run_in_thread(workspace, job_id)
    killed = None
    deadline = time.monotonic() + 240
    while killed is None and time.monotonic() < deadline:
        pids = _task_pids()
        if pids and _embedding_rows(workspace)[0] > 0:  # a chunk is running and results are being written
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    assert killed is not None, "no Ray worker was seen running a chunk"
    thread.join(300)
    job = get_job(workspace, job_id)
    assert job.state == "done", (job.state, job.error)
    assert not Path(f"/proc/{killed}").exists()
    assert _embedding_rows(workspace) == (ITEMS, ITEMS)  # each item once, though a chunk ran twice
    _assert_same(ProjectHandle(workspace, "bugs").embeddings(), inline_vectors)


def test_the_server_executor_runs_a_whole_job_as_a_ray_task(tmp_path, images, on_ray, inline_vectors):
    from labelloop.jobs.ray_runner import RayExecutor

    workspace = _workspace(tmp_path / "ws", images)
    job_id = create_job(workspace, "embed", {"project": "bugs"})
    assert RayExecutor(workspace).submit(job_id).result(timeout=300) == "done"
    job = get_job(workspace, job_id)
    assert job.result["executor"] == "ray" and job.result["tasks"] == ITEMS // 4  # its task fanned out chunks
    _assert_same(ProjectHandle(workspace, "bugs").embeddings(), inline_vectors)


def _cli(args: list[str], env: dict[str, str], timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([LABELLOOP, *args], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=timeout)


def test_a_cluster_started_with_ray_start_embeds_like_inline(tmp_path, images, inline_vectors):
    workspace = _workspace(tmp_path / "ws", images)
    workspace.close()
    temp = tempfile.mkdtemp(prefix="llrs", dir="/tmp")
    port = _free_port()
    ports = [_free_port() for _ in range(5)]
    worker_low = _free_port()
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
         f"--temp-dir={temp}", "--include-dashboard=false", "--disable-usage-stats",
         f"--node-manager-port={ports[0]}", f"--object-manager-port={ports[1]}",
         f"--dashboard-agent-listen-port={ports[2]}", f"--runtime-env-agent-port={ports[3]}",
         f"--metrics-export-port={ports[4]}", f"--min-worker-port={worker_low}", f"--max-worker-port={worker_low + 40}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, env={**os.environ, **LOCAL})
    try:
        env = {**LOCAL, "LABELLOOP_EXECUTOR": "ray", "LABELLOOP_RAY_ADDRESS": f"127.0.0.1:{port}", "LABELLOOP_CHUNK_ITEMS": "6"}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the head is up once its GCS port answers
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert head.poll() is None, head.stdout.read()
                time.sleep(0.5)
        done = _cli(["embed", "bugs", "--data-dir", str(tmp_path / "ws"), "--json"], env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert '"executor": "ray"' in done.stdout and '"tasks": 4' in done.stdout
    finally:
        _end_group(head)
        shutil.rmtree(temp, ignore_errors=True)
    workspace = Workspace.open(tmp_path / "ws")
    _assert_same(ProjectHandle(workspace, "bugs").embeddings(), inline_vectors)
    workspace.close()


def _end_group(head: subprocess.Popen) -> None:
    """`ray start --block` ends its raylet, GCS and workers when it gets SIGTERM; the session group catches the rest."""
    try:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(60)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait(10)


def test_an_unreachable_ray_address_names_the_setting_and_writes_nothing(tmp_path, images):
    workspace = _workspace(tmp_path / "ws", images)
    before = snapshot(workspace) | {"jobs": workspace_jobs(workspace)}
    workspace.close()
    port = _free_port()  # nothing listens there
    failed = _cli(["embed", "bugs", "--data-dir", str(tmp_path / "ws")],
                  {"LABELLOOP_EXECUTOR": "ray", "LABELLOOP_RAY_ADDRESS": f"127.0.0.1:{port}"}, timeout=120)
    assert failed.returncode != 0
    assert f"LABELLOOP_RAY_ADDRESS='127.0.0.1:{port}'" in failed.stderr + failed.stdout
    assert "Traceback" not in failed.stderr
    workspace = Workspace.open(tmp_path / "ws")
    assert snapshot(workspace) | {"jobs": workspace_jobs(workspace)} == before
    assert _embedding_rows(workspace) == (0, 0)
    workspace.close()
