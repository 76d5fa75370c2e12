"""Bad input gets a clear error naming the file and the problem, and the project stays exactly as it was."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labelloop.errors import InvalidInput
from labelloop.services.data.importing import import_path

from conftest import snapshot


def _png(path: Path, value: int = 10, size=(40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0]), value, np.uint8)).save(path)
    return path


def _bomb_png(path: Path, width=40000, height=40000) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))
    return path


@pytest.fixture
def seeded(workspace, make_project, tmp_path):
    """A detection project that already holds one image with a box, so 'unchanged' means something."""
    make_project("p", "detection", ["cat", "dog"])
    folder = tmp_path / "seed"
    _png(folder / "images" / "seed.png", 99)
    coco = {"images": [{"id": 1, "file_name": "seed.png", "width": 40, "height": 30}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10], "area": 100, "iscrowd": 0}],
            "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}
    (folder / "annotations.json").write_text(json.dumps(coco))
    import_path(workspace, "p", folder / "annotations.json", format="coco")
    return workspace


def _coco_folder(tmp_path: Path, mutate) -> Path:
    folder = tmp_path / "coco"
    _png(folder / "images" / "a.png", 1)
    _png(folder / "images" / "b.png", 2)
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}, {"id": 2, "file_name": "b.png", "width": 40, "height": 30}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 3, 10, 12], "area": 120, "iscrowd": 0},
                        {"id": 2, "image_id": 2, "category_id": 2, "bbox": [5, 5, 5, 5], "area": 25, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }
    mutate(data)
    (folder / "annotations.json").write_text(json.dumps(data))
    return folder / "annotations.json"


COCO_CASES = {
    "missing category": (lambda d: d["annotations"][1].update(category_id=7), r"categor"),
    "negative width": (lambda d: d["annotations"][0].update(bbox=[2, 3, -10, 12]), r"negative|width"),
    "NaN": (lambda d: d["annotations"][0].update(bbox=[float("nan"), 3, 10, 12]), r"(?i)nan|finite"),
    "unknown image id": (lambda d: d["annotations"][0].update(image_id=42), r"image"),
    "path traversal": (lambda d: d["images"][0].update(file_name="../../etc/passwd"), r"\.\./\.\./etc/passwd"),
}


@pytest.mark.parametrize("case", sorted(COCO_CASES))
def test_malformed_coco_changes_nothing(seeded, tmp_path, case):
    mutate, pattern = COCO_CASES[case]
    path = _coco_folder(tmp_path, mutate)
    before = snapshot(seeded)
    with pytest.raises(InvalidInput, match=pattern) as caught:
        import_path(seeded, "p", path, format="coco")
    assert "annotations.json" in str(caught.value)
    assert snapshot(seeded) == before


@pytest.mark.parametrize("counts", ["zz", "0", "PPPPPPP0", "Q"])
def test_malformed_compressed_rle_is_refused_before_pycocotools_sees_it(seeded, make_project, tmp_path, counts):
    """pycocotools decodes without bounds checks: a bad string must be refused, not decoded."""
    make_project("inst", "instance", ["cat", "dog"])
    path = _coco_folder(tmp_path, lambda d: d["annotations"][0].update(segmentation={"size": [30, 40], "counts": counts}))
    before = snapshot(seeded)
    with pytest.raises(InvalidInput, match="RLE"):
        import_path(seeded, "inst", path, format="coco")
    assert snapshot(seeded) == before


def test_check_shapes_refuses_a_mask_whose_runs_overrun_the_image():
    import numpy as np

    from labelloop.domain import ClassDef, Mask, ProjectKind
    from labelloop.geometry import rle
    from labelloop.services.labelling.annotations import check_shapes
    from labelloop.services.projects import ProjectInfo

    project = ProjectInfo(1, "x", ProjectKind.instance, [ClassDef("cat", 1, "#ff0000")])
    size, counts = rle.encode(np.ones((30, 40), bool))
    overrun = rle.encode(np.ones((60, 40), bool))[1]  # runs for twice the pixels, claiming the 30×40 size
    check_shapes([Mask("cat", size, counts)], project, 40, 30, "client")
    with pytest.raises(InvalidInput, match="RLE covers 2400 pixels"):
        check_shapes([Mask("cat", size, overrun)], project, 40, 30, "client")


def test_yolo_line_with_four_numbers(seeded, tmp_path):
    folder = tmp_path / "yolo"
    _png(folder / "images" / "train" / "a.png")
    (folder / "labels" / "train").mkdir(parents=True)
    (folder / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2\n")
    (folder / "data.yaml").write_text("path: .\ntrain: images/train\nnames: [cat, dog]\n")
    before = snapshot(seeded)
    with pytest.raises(InvalidInput, match=r"a\.txt.*line 2.*4") :
        import_path(seeded, "p", folder, format="yolo")
    assert snapshot(seeded) == before


def test_voc_box_outside_the_image(seeded, tmp_path):
    folder = tmp_path / "voc"
    _png(folder / "images" / "a.png")
    (folder / "annotations").mkdir()
    (folder / "annotations" / "a.xml").write_text(
        "<annotation><filename>a.png</filename><size><width>40</width><height>30</height><depth>1</depth></size>"
        "<object><name>cat</name><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>400</xmax><ymax>20</ymax></bndbox></object>"
        "</annotation>")
    before = snapshot(seeded)
    with pytest.raises(InvalidInput, match=r"a\.xml.*outside"):
        import_path(seeded, "p", folder, format="voc")
    assert snapshot(seeded) == before


def test_unreadable_images_are_all_listed_and_nothing_is_imported(seeded, tmp_path, shared_data):
    folder = tmp_path / "imgs"
    _png(folder / "good1.png", 1)
    _png(folder / "good2.png", 2)
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    jpeg = (shared_data / "raccoon" / "images" / "raccoon-1.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    _bomb_png(folder / "bomb.png")
    before = snapshot(seeded)
    with pytest.raises(InvalidInput) as caught:
        import_path(seeded, "p", folder, format="images")
    message = str(caught.value)
    assert message.startswith("3 of 5 files cannot be imported; nothing was imported")
    for name in ("corrupt.png", "truncated.jpg", "bomb.png"):
        assert name in message
    assert "good1.png" not in message
    assert snapshot(seeded) == before

    report = import_path(seeded, "p", folder, format="images", skip_bad=True)
    assert report.items_added == 2
    assert sorted(line.split(":")[0] for line in report.skipped) == ["bomb.png", "corrupt.png", "truncated.jpg"]
    assert snapshot(seeded)["items"] == before["items"] + 2


def test_wrong_label_for_the_project(seeded, tmp_path):
    path = _coco_folder(tmp_path, lambda d: d["categories"][1].update(name="horse"))
    before = snapshot(seeded)
    with pytest.raises(InvalidInput, match="horse"):
        import_path(seeded, "p", path, format="coco")
    assert snapshot(seeded) == before


def test_a_failure_while_committing_leaves_no_orphan_blobs(seeded, tmp_path, monkeypatch):
    from labelloop.services.data import importing

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(importing, "_insert_rows", explode)
    folder = tmp_path / "imgs"
    _png(folder / "new.png", 123)
    before = snapshot(seeded)
    with pytest.raises(RuntimeError):
        import_path(seeded, "p", folder, format="images")
    assert snapshot(seeded) == before


def test_a_bad_file_after_hundreds_of_good_ones_leaves_no_blobs(seeded, tmp_path):
    """Blobs are stored while the later files are still being checked: a bad last file must undo them all."""
    folder = tmp_path / "imgs"
    for n in range(250):
        _png(folder / f"good{n:03d}.png", n)
    (folder / "zz_broken.png").write_bytes(b"not a png")
    before = snapshot(seeded)
    with pytest.raises(InvalidInput, match="1 of 251 files cannot be imported"):
        import_path(seeded, "p", folder, format="images")
    assert snapshot(seeded) == before


def test_missing_path_and_unknown_format(seeded, tmp_path):
    with pytest.raises(InvalidInput, match="no such file"):
        import_path(seeded, "p", tmp_path / "nope")
    with pytest.raises(InvalidInput, match="unknown format 'pascal'"):
        import_path(seeded, "p", tmp_path, format="pascal")


def test_an_unreadable_upload_is_named_in_words_and_can_be_skipped(workspace, tmp_path):
    """The browser's upload: the message says what the file holds (no Python byte dump) and how to skip it."""
    from fastapi.testclient import TestClient
    from server_support import build_team, write_images

    from labelloop.server import create_app
    from labelloop.server.background import ThreadExecutor

    team = build_team(workspace, tmp_path / "images", items=1)
    good = write_images(tmp_path / "more", 1, start=50) / "img0050.png"
    files = [("files", ("notes.png", b"my notes, not a picture", "image/png")),
             ("files", ("good.png", good.read_bytes(), "image/png"))]
    with TestClient(create_app(workspace, executor=ThreadExecutor(workspace))) as client:
        url = f"/api/projects/{team.project_id}/items"
        refused = client.post(url, files=files, headers=team.auth("manager"))
        assert refused.status_code == 400
        detail = refused.json()["detail"]
        assert 'notes.png: is not a valid PNG file (it holds text: "my notes, not a picture' in detail
        assert "b'" not in detail and '"skip unreadable files" in the browser' in detail
        assert len(client.get(url, headers=team.auth("manager")).json()["items"]) == 1  # nothing imported
        skipped = client.post(url, files=files, data={"skip_bad": "true"}, headers=team.auth("manager"))
        assert skipped.status_code in (200, 201), skipped.json()
        assert skipped.json()["items_added"] == 1 and skipped.json()["skipped"][0].startswith("notes.png:")


def test_a_binary_file_that_is_no_image_is_described_by_its_first_bytes():
    from labelloop.media.formats import describe_start

    assert describe_start(b"") == "the file is empty"
    assert describe_start(b"\x00\x01\x02\xff" * 4) == "it does not start like any image file (first bytes 00 01 02 ff 00 01 02 ff)"
    assert describe_start(b"<html><body>Not found") == 'it holds text: "<html><body>Not found…"'
