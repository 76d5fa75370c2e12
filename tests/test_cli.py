"""The command line as a script would use it: exit codes, one-line errors, --json, --data-dir anywhere."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labelloop.cli.main import main


def run(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_contract_commands_end_to_end(capsys, tmp_path, database_url):
    data = str(tmp_path / "ws")
    images = tmp_path / "imgs"
    images.mkdir()
    for n in range(4):
        Image.fromarray(np.full((16, 16), n * 50, np.uint8)).save(images / f"{n}.png")
    assert run(capsys, "init", "--data-dir", data)[0] == 0
    code, out, _ = run(capsys, "project", "create", "cells", "--kind", "classification", "--classes", "live,dead", "--data-dir", data)
    assert code == 0 and "created classification project 'cells' with 2 classes" in out
    code, out, _ = run(capsys, "--data-dir", data, "import", "cells", str(images), "--format", "images", "--split", "train", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["items_added"] == 4 and report["job"] >= 1
    code, out, _ = run(capsys, "stats", "cells", "--json", f"--data-dir={data}")
    stats = json.loads(out)
    assert stats["items"] == 4 and stats["items_per_split"]["train"] == 4 and stats["unlabelled_items"] == 4
    code, out, _ = run(capsys, "project", "list", "--json", "--data-dir", data)
    assert [p["name"] for p in json.loads(out)] == ["cells"]
    code, out, _ = run(capsys, "project", "show", "cells", "--data-dir", data)
    assert code == 0 and "live" in out and "dead" in out
    code, out, _ = run(capsys, "jobs", "list", "--json", "--data-dir", data)
    jobs = json.loads(out)
    assert [(j["kind"], j["state"]) for j in jobs] == [("import", "done")]
    code, out, _ = run(capsys, "export", "cells", str(tmp_path / "none"), "--format", "csv", "--data-dir", data, "--json")
    assert code == 0 and json.loads(out)["items"] == 0 and json.loads(out)["left_out"] == {"not labelled": 4}
    # a CSV to fill in by hand: every item, labels empty
    code, out, _ = run(capsys, "export", "cells", str(tmp_path / "csv"), "--format", "csv", "--include-unlabelled",
                       "--data-dir", data, "--json")
    assert code == 0 and json.loads(out)["items"] == 4
    assert (tmp_path / "csv" / "labels.csv").is_file()
    assert len(list((tmp_path / "csv" / "images").iterdir())) == 4
    code, out, _ = run(capsys, "export", "cells", str(tmp_path / "labels-only"), "--format", "csv", "--no-images",
                       "--include-unlabelled", "--data-dir", data)
    assert code == 0 and not (tmp_path / "labels-only" / "images").exists()
    assert len((tmp_path / "labels-only" / "labels.csv").read_text().splitlines()) == 5
    code, _, err = run(capsys, "export", "cells", str(tmp_path / "csv"), "--format", "csv", "--data-dir", data)
    assert code == 1 and "exists and is not empty" in err


def test_project_set_changes_checked_settings_only(capsys, tmp_path):
    data = str(tmp_path / "ws")
    assert run(capsys, "init", "--data-dir", data)[0] == 0
    assert run(capsys, "project", "create", "pets", "--kind", "classification", "--classes", "cat,dog",
               "--data-dir", data)[0] == 0
    code, out, _ = run(capsys, "project", "set", "pets", "target_precision=0.98", "calibration_method=auto",
                       "--json", "--data-dir", data)
    assert code == 0 and json.loads(out) == {**json.loads(out), "target_precision": 0.98,
                                             "calibration_method": "auto"}
    for bad, message in (("calibration_method=guess", "choose one of estimate, bound, auto"),
                         ("target_precision=2", "must lie between"), ("taget_precision=0.9", "unknown project"),
                         ("target_precision", "give key=value")):
        code, _, err = run(capsys, "project", "set", "pets", "sampling=margin", bad, "--data-dir", data)
        assert code != 0 and message in err, (bad, err)
    code, out, _ = run(capsys, "project", "show", "pets", "--json", "--data-dir", data)
    settings = json.loads(out)["settings"]
    assert settings["target_precision"] == 0.98 and settings["calibration_method"] == "auto"
    assert settings["sampling"] == "shuffled"  # the refused commands changed nothing, not even their good pairs


def test_errors_are_one_line_with_non_zero_exit(capsys, tmp_path):
    data = str(tmp_path / "ws")
    code, _, err = run(capsys, "project", "list", "--data-dir", data)
    assert code == 1 and err.strip().startswith("error: no labelloop workspace at") and len(err.strip().splitlines()) == 1
    run(capsys, "init", "--data-dir", data)
    code, _, err = run(capsys, "project", "create", "x", "--kind", "boxes", "--data-dir", data)
    assert code == 1 and "unknown project kind 'boxes'" in err
    code, _, err = run(capsys, "import", "ghost", str(tmp_path), "--data-dir", data)
    assert code == 1 and "no project named 'ghost'" in err
    code, _, err = run(capsys, "jobs", "cancel", "99", "--data-dir", data)
    assert code == 1 and "no job 99" in err


def test_failed_import_is_recorded_as_a_failed_job(capsys, tmp_path):
    data = str(tmp_path / "ws")
    run(capsys, "init", "--data-dir", data)
    run(capsys, "project", "create", "p", "--kind", "classification", "--data-dir", data)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"not a png")
    code, _, err = run(capsys, "import", "p", str(bad), "--format", "images", "--data-dir", data)
    assert code == 1 and "broken.png" in err
    code, out, _ = run(capsys, "jobs", "list", "--json", "--data-dir", data)
    (job,) = json.loads(out)
    assert job["state"] == "failed" and "broken.png" in job["error"]


def test_demo_runs_on_the_bundled_sample(capsys, tmp_path):
    data = str(tmp_path / "ws")
    code, out, err = run(capsys, "demo", "--data-dir", data)
    assert code == 0, err
    assert "import: 8 new items" in out
    effort = next(line for line in out.splitlines() if line.startswith("effort: "))
    assert "effort ratio" in effort and float(effort.split("effort ratio ")[1].split("x")[0]) > 1
    code, out, _ = run(capsys, "stats", "nuclei-sample", "--json", "--data-dir", data)
    stats = json.loads(out)
    assert stats["items"] == 8 and stats["annotated_items"] == 8 and stats["shapes_per_class"]["nucleus"] == 229
    assert run(capsys, "demo", "--data-dir", data)[0] == 0  # again: nothing duplicated
    assert json.loads(run(capsys, "stats", "nuclei-sample", "--json", "--data-dir", data)[1])["items"] == 8


def test_cli_starts_without_importing_torch_or_sqlalchemy():
    code = "import sys; from labelloop.cli import main; print(sorted(m for m in ('torch', 'sqlalchemy', 'numpy') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_help_lists_the_contract_commands():
    result = subprocess.run([sys.executable, "-m", "labelloop.cli.main", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("init", "project", "import", "export", "stats", "jobs"):
        assert command in result.stdout


def test_user_create_on_a_fresh_folder_makes_the_workspace(capsys, tmp_path, monkeypatch):
    """The README's `labelloop user create alice && labelloop serve` works on a machine with no workspace yet."""
    import io

    folder = tmp_path / "fresh"
    monkeypatch.setattr("sys.stdin", io.StringIO("a long password\n"))
    code, out, err = run(capsys, "user", "create", "alice", "--password-stdin", "--data-dir", str(folder))
    assert code == 0, err
    assert f"created a labelloop workspace at {folder}" in " ".join(out.split()) and "user alice created" in out
    code, out, _ = run(capsys, "user", "list", "--data-dir", str(folder))
    assert code == 0 and "alice" in out
