"""The Python API a notebook uses: labelloop.open(dir).project(name)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import labelloop
from labelloop.domain import ClassLabel
from labelloop.errors import Conflict, NotFound


def test_notebook_flow(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for n in range(3):
        Image.fromarray(np.full((12, 10), 60 * n, np.uint8)).save(folder / f"{n}.png")
    ws = labelloop.open(tmp_path / "ws", create=True)
    project = ws.create_project("cells", kind="classification", classes=["live", "dead"])
    report = project.import_(folder, format="images", split="train")
    assert report.items_added == 3
    items = project.items()
    assert sorted(i["source"] for i in items) == ["0.png", "1.png", "2.png"]
    assert {(i["width"], i["height"], i["split"]) for i in items} == {(10, 12, "train")}
    first = items[0]["id"]
    assert project.image(first).shape == (12, 10)
    saved = project.annotate(first, [ClassLabel("dead")], author="ada", base_version=0)
    assert saved.version == 1 and project.annotation(first).shapes == [ClassLabel("dead")]
    with pytest.raises(Conflict):
        project.annotate(first, [ClassLabel("live")], author="bob", base_version=0)
    assert project.stats()["items_per_class"] == {"live": 0, "dead": 1}
    assert [p.name for p in labelloop.open(tmp_path / "ws").projects()] == ["cells"]
    with pytest.raises(NotFound):
        ws.project("nope")


def test_open_defaults_to_labelloop_home(tmp_path, monkeypatch):
    monkeypatch.setenv("LABELLOOP_HOME", str(tmp_path / "home"))
    with pytest.raises(NotFound, match="labelloop init"):
        labelloop.open()
    assert labelloop.open(create=True).workspace.root == (tmp_path / "home").resolve()
