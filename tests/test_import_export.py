"""Round trips through the whole system (import -> database and blobs -> export) on the real datasets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labelloop import media
from labelloop.notebook import ProjectHandle
from labelloop.services.data.exporting import export_project
from labelloop.services.data.importing import import_path

from conftest import snapshot


def _copy(files: list[Path], target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy(f, target / f.name)


def test_coco128_instances_round_trip(workspace, make_project, shared_data, tmp_path):
    from pycocotools.coco import COCO

    source = shared_data / "coco128" / "annotations" / "instances_train2017.json"
    make_project("coco", "instance")
    report = import_path(workspace, "coco", source, format="coco")
    original = json.loads(source.read_text())
    assert report.items_added == len(original["images"])
    out = tmp_path / "export"
    export_project(workspace, "coco", out, format="coco")
    exported = COCO(str(out / "annotations.json"))
    assert len(exported.getAnnIds()) == len(original["annotations"])
    names = {c["id"]: c["name"] for c in original["categories"]}
    used = {names[a["category_id"]] for a in original["annotations"]}
    assert used <= {c["name"] for c in exported.loadCats(exported.getCatIds())}

    file_of = {i["id"]: i["file_name"] for i in original["images"]}
    before: dict[tuple[str, str], list[dict]] = {}
    for a in original["annotations"]:
        before.setdefault((file_of[a["image_id"]], names[a["category_id"]]), []).append(a)
    out_names = {c["id"]: c["name"] for c in exported.loadCats(exported.getCatIds())}
    out_files = {i["id"]: i["file_name"] for i in exported.loadImgs(exported.getImgIds())}
    matched = 0
    for a in exported.loadAnns(exported.getAnnIds()):
        candidates = before.get((out_files[a["image_id"]], out_names[a["category_id"]]), [])
        assert candidates, f"no original object for {a['bbox']} in {out_files[a['image_id']]}"
        b = min(candidates, key=lambda c: float(np.abs(np.subtract(c["bbox"], a["bbox"])).max()))
        candidates.remove(b)
        assert a.get("iscrowd", 0) == b.get("iscrowd", 0)
        if b.get("iscrowd"):
            # coco128's crowd boxes are 1 px smaller than their own RLE masks (and its crowd areas differ from
            # the mask pixel counts): labelloop writes both measured from the mask, see docs/formats.md.
            assert np.allclose(a["bbox"], b["bbox"], atol=1.0)
        else:
            assert np.allclose(a["bbox"], b["bbox"], atol=0.5)
            assert a["area"] == pytest.approx(b["area"], rel=0.01)
        matched += 1
    assert matched == len(original["annotations"])
    for image in exported.loadImgs(exported.getImgIds()):  # images are exported beside the JSON
        assert (out / "images" / image["file_name"]).is_file()


def test_raccoon_voc_to_yolo_to_voc_keeps_boxes(workspace, make_project, shared_data, tmp_path):
    from labelloop.formats.registry import get_format
    from labelloop.domain import ProjectKind

    source = shared_data / "raccoon"
    make_project("raccoon", "detection")
    import_path(workspace, "raccoon", source, format="voc")
    export_project(workspace, "raccoon", tmp_path / "yolo", format="yolo")
    make_project("raccoon2", "detection")
    import_path(workspace, "raccoon2", tmp_path / "yolo", format="yolo")
    export_project(workspace, "raccoon2", tmp_path / "voc", format="voc")

    voc = get_format("voc")
    entries = voc.read(source, ProjectKind.detection).entries
    again = {Path(e.name).name: sorted((b.x0, b.y0, b.x1, b.y1) for b in e.shapes) for e in voc.read(tmp_path / "voc", ProjectKind.detection).entries}
    # raccoon holds 4 pairs of byte-identical photos, each labelled twice: one item each, with both labellings
    # as revisions (the later one exported), so 196 images come back.
    groups: dict[str, list] = {}
    for e in entries:
        groups.setdefault(media_hash(e.path), []).append(e)
    assert len(groups) == 196 and len(again) == 196
    for same in groups.values():
        (name,) = [Path(e.name).name for e in same if Path(e.name).name in again]
        choices = [sorted((b.x0, b.y0, b.x1, b.y1) for b in e.shapes) for e in same]
        assert any(len(c) == len(again[name]) and np.allclose(again[name], c, atol=0.5) for c in choices), name


def test_hymenoptera_folders_to_csv_to_folders(workspace, make_project, shared_data, tmp_path):
    source = tmp_path / "hym"
    for split in ("train", "val"):
        for label in ("ants", "bees"):
            _copy(sorted((shared_data / "hymenoptera" / split / label).glob("*.jpg"))[:6], source / split / label)
    make_project("hym", "classification")
    import_path(workspace, "hym", source, format="folders")
    export_project(workspace, "hym", tmp_path / "csv", format="csv")
    make_project("hym2", "classification")
    import_path(workspace, "hym2", tmp_path / "csv", format="csv")
    export_project(workspace, "hym2", tmp_path / "folders", format="folders")

    def listing(root: Path) -> set[tuple[str, ...]]:
        return {(*p.relative_to(root).parts[:-1], media_hash(p)) for p in root.rglob("*.jpg")}

    assert listing(tmp_path / "folders") == listing(source)
    assert len(listing(source)) == 24


def media_hash(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_dsb_instances_to_coco_rle_to_instances_identical(workspace, make_project, shared_data, tmp_path):
    index = json.loads((shared_data / "nuclei_dsb2018" / "instances_index.json").read_text())
    chosen = [e["image_id"] for e in index[:4]]
    source = tmp_path / "dsb"
    _copy([shared_data / "nuclei_dsb2018" / "images" / f"{i}.png" for i in chosen], source / "images")
    _copy([shared_data / "nuclei_dsb2018" / "labels" / f"{i}.png" for i in chosen], source / "labels")
    make_project("nuclei", "instance", ["object"])
    import_path(workspace, "nuclei", source, format="instances")
    export_project(workspace, "nuclei", tmp_path / "coco", format="coco")
    coco = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    assert all(isinstance(a["segmentation"], dict) for a in coco["annotations"])  # masks travel as RLE
    make_project("nuclei2", "instance", ["object"])
    import_path(workspace, "nuclei2", tmp_path / "coco", format="coco")
    export_project(workspace, "nuclei2", tmp_path / "instances", format="instances")
    for image_id in chosen:
        original = np.asarray(Image.open(source / "labels" / f"{image_id}.png"))
        again = media.read(tmp_path / "instances" / "labels" / f"{image_id}.png")
        assert again.dtype == np.uint16
        np.testing.assert_array_equal(again, original)


def test_lucchi_masks_round_trip_pixel_identical(workspace, make_project, shared_data, tmp_path):
    lucchi = shared_data / "lucchi_mito" / "train"
    names = ["slice_000.png", "slice_005.png"]
    source = tmp_path / "mito"
    _copy([lucchi / "images" / n for n in names], source / "images")
    _copy([lucchi / "masks" / n for n in names], source / "masks")
    make_project("mito", "semantic", ["mitochondrion"])
    import_path(workspace, "mito", source, format="masks")
    export_project(workspace, "mito", tmp_path / "out", format="masks")
    for n in names:
        np.testing.assert_array_equal(media.read(tmp_path / "out" / "masks" / n), media.read(source / "masks" / n))


def test_dicom_cr_displays_bone_bright(workspace, make_project, shared_data, tmp_path):
    source = tmp_path / "dicom"
    _copy([shared_data / "dicom_samples" / "pydicom_data" / "RG1_UNCR.dcm"], source)
    make_project("xray", "classification", ["normal", "abnormal"])
    import_path(workspace, "xray", source, format="dicom")
    project = ProjectHandle(workspace, "xray")
    (item,) = project.items()
    assert item["metadata"]["PhotometricInterpretation"] == "MONOCHROME1"
    shown = project.image(item["id"], display=True).astype(float)
    height, width = shown.shape[:2]
    rows = slice(int(height * 0.25), int(height * 0.55))
    spine = shown[rows, int(width * 0.45) : int(width * 0.52)].mean()
    lungs = (shown[rows, int(width * 0.22) : int(width * 0.32)].mean() + shown[rows, int(width * 0.68) : int(width * 0.78)].mean()) / 2
    assert spine > lungs + 20, (spine, lungs)


def test_same_image_twice_is_not_duplicated(workspace, make_project, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(folder / "a.png")
    shutil.copy(folder / "a.png", folder / "copy-of-a.png")
    make_project("dups", "classification", ["x"])
    first = import_path(workspace, "dups", folder, format="images")
    second = import_path(workspace, "dups", folder, format="images")
    assert (first.items_added, second.items_added, second.items_existing) == (1, 0, 1)
    assert snapshot(workspace)["items"] == 1 and len(snapshot(workspace)["blob_files"]) == 1


def test_multipage_16bit_tiff_gives_one_item_per_page(workspace, make_project, tmp_path):
    import tifffile

    stack = (np.arange(3 * 20 * 30, dtype=np.uint16).reshape(3, 20, 30) * 20)
    folder = tmp_path / "tif"
    folder.mkdir()
    tifffile.imwrite(folder / "stack.tif", stack, photometric="minisblack")
    make_project("stack", "semantic", ["cell"])
    import_path(workspace, "stack", folder, format="images")
    project = ProjectHandle(workspace, "stack")
    items = sorted(project.items(), key=lambda i: i["page"])
    assert [(i["page"], i["width"], i["height"], i["dtype"]) for i in items] == [(p, 30, 20, "uint16") for p in range(3)]
    np.testing.assert_array_equal(project.image(items[2]["id"]), stack[2])
    shown = project.image(items[2]["id"], display=True)
    assert shown.dtype == np.uint8 and shown.min() == 0 and shown.max() == 255
