"""Label-image, scribble, class-folder, CSV, images and DICOM formats: real data round trips and bad input."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from formats_support import class_defs, export_from_bundle, shared_data
from labelloop.domain import ClassLabel, Mask, Polygon, ProjectKind, Scribble, Split
from labelloop.errors import InvalidInput
from labelloop.formats.base import ExportContext, ExportItem, ExportRecord
from labelloop.formats.csvlabels import CsvLabels
from labelloop.formats.dicom import Dicom
from labelloop.formats.folders import Folders
from labelloop.formats.images import Images
from labelloop.formats.labelimages import value_rles
from labelloop.formats.masks import InstanceMasks, SemanticMasks
from labelloop.formats.registry import detect_format
from labelloop.formats.scribbles import Scribbles
from labelloop.geometry import rle


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.array(image)


def save_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def grey_image(path: Path, width: int, height: int) -> Path:
    return save_png(path, (np.arange(width * height) % 251).astype(np.uint8).reshape(height, width))


# --- semantic masks ----------------------------------------------------------------------------------------


def test_lucchi_masks_round_trip_pixel_identical(tmp_path):
    source = shared_data("lucchi_mito", "train")
    names = ["slice_000.png", "slice_080.png", "slice_160.png"]
    for name in names:
        for folder in ("images", "masks"):
            (tmp_path / "in" / "train" / folder).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / folder / name, tmp_path / "in" / "train" / folder / name)
    assert detect_format(tmp_path / "in").name == "masks"

    bundle = SemanticMasks().read(tmp_path / "in", ProjectKind.semantic)

    assert bundle.classes == ["class1"]  # 0/255 without a classes file: one binary class
    assert [e.name for e in bundle.entries] == [f"train/images/{n}" for n in names]
    for entry, name in zip(bundle.entries, names):
        original = pixels(source / "masks" / name)
        assert entry.split == Split.train and entry.declared_size == (1024, 768)
        [shape] = entry.shapes
        assert isinstance(shape, Mask) and shape.label == "class1"
        assert np.array_equal(rle.decode(shape), original == 255)

    records, ctx = export_from_bundle(bundle, tmp_path / "out", ProjectKind.semantic)
    summary = SemanticMasks().write(records, ctx)

    assert summary.items == 3 and summary.shapes == 3
    assert (tmp_path / "out" / "classes.txt").read_text() == "class1\n"
    for name in names:
        assert np.array_equal(pixels(tmp_path / "out" / "train" / "masks" / name), pixels(source / "masks" / name))
        assert sha256(tmp_path / "out" / "train" / "images" / name) == sha256(source / "images" / name)
    again = SemanticMasks().read(tmp_path / "out", ProjectKind.semantic)
    assert [e.shapes for e in again.entries] == [e.shapes for e in bundle.entries]


def test_semantic_multiclass_classes_file_overlap_and_polygons(tmp_path):
    grey_image(tmp_path / "in" / "images" / "a.png", 8, 6)
    mask = np.zeros((6, 8), np.uint8)
    mask[1:3, 1:4] = 1
    mask[4:, 5:] = 3
    save_png(tmp_path / "in" / "masks" / "a.png", mask)
    (tmp_path / "in" / "classes.txt").write_text("road\ncar\nsky\n")

    bundle = SemanticMasks().read(tmp_path / "in", ProjectKind.semantic)
    assert bundle.classes == ["road", "car", "sky"]
    assert [s.label for s in bundle.entries[0].shapes] == ["road", "sky"]

    # Written in class order whatever the shape order: 'sky' (3) paints over 'road' (1) where they overlap.
    sky_box = Polygon(label="sky", parts=(((0.0, 0.0), (2.0, 0.0), (2.0, 2.0), (0.0, 2.0)),))
    records, ctx = export_from_bundle(bundle, tmp_path / "out", ProjectKind.semantic)
    records[0].shapes = [sky_box, *records[0].shapes]
    SemanticMasks().write(records, ctx)
    out = pixels(tmp_path / "out" / "masks" / "a.png")
    expected = mask.copy()
    expected[:2, :2] = 3
    assert out.dtype == np.uint8 and np.array_equal(out, expected)
    assert (tmp_path / "out" / "classes.txt").read_text() == "road\ncar\nsky\n"


def test_semantic_without_classes_file_names_values(tmp_path):
    grey_image(tmp_path / "images" / "a.png", 4, 4)
    save_png(tmp_path / "masks" / "a.png", np.array([[0, 1, 3, 3]] * 4, np.uint8))
    grey_image(tmp_path / "images" / "b.png", 4, 4)  # no mask: imported unlabelled, with a warning

    bundle = SemanticMasks().read(tmp_path, ProjectKind.semantic)

    assert bundle.classes == ["class1", "class2", "class3"]  # value k stays class k
    assert [s.label for s in bundle.entries[0].shapes] == ["class1", "class3"]
    assert bundle.entries[1].shapes == [] and "images/b.png" in bundle.warnings[0]


def test_palette_mask_gives_indices_and_a_broken_mask_is_named(tmp_path):
    grey_image(tmp_path / "images" / "a.png", 4, 3)
    palette = Image.new("P", (4, 3))
    palette.putdata([0, 1, 2, 2] * 3)
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0])
    (tmp_path / "masks").mkdir()
    palette.save(tmp_path / "masks" / "a.png")  # a VOC-style palette mask: the index is the class

    bundle = SemanticMasks().read(tmp_path, ProjectKind.semantic)
    assert [s.label for s in bundle.entries[0].shapes] == ["class1", "class2"]

    (tmp_path / "masks" / "a.png").write_bytes(b"not a png")
    with pytest.raises(InvalidInput, match=r"masks/a.png: is not PNG data"):
        SemanticMasks().read(tmp_path, ProjectKind.semantic)


# --- instance label images ---------------------------------------------------------------------------------


def test_dsb2018_instances_round_trip_identical(tmp_path):
    source = shared_data("nuclei_dsb2018")
    index = {row["image_id"]: row for row in json.loads((source / "instances_index.json").read_text())}
    chosen = sorted(index)[:3]
    for image_id in chosen:
        for folder in ("images", "labels"):
            (tmp_path / "in" / folder).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / folder / f"{image_id}.png", tmp_path / "in" / folder / f"{image_id}.png")
    assert detect_format(tmp_path / "in").name == "instances"

    bundle = InstanceMasks().read(tmp_path / "in", ProjectKind.instance)

    assert bundle.classes == ["object"]
    for entry, image_id in zip(bundle.entries, chosen):
        labels = pixels(source / "labels" / f"{image_id}.png")
        assert labels.dtype == np.uint16
        assert len(entry.shapes) == index[image_id]["n_instances"]
        for k, shape in enumerate(entry.shapes, start=1):
            assert shape.size == (index[image_id]["height"], index[image_id]["width"])
            assert shape.counts == rle.encode(labels == k)[1]

    records, ctx = export_from_bundle(bundle, tmp_path / "out", ProjectKind.instance)
    InstanceMasks().write(records, ctx)

    for image_id in chosen:
        written = pixels(tmp_path / "out" / "labels" / f"{image_id}.png")
        assert written.dtype == np.uint16
        assert np.array_equal(written, pixels(source / "labels" / f"{image_id}.png"))
    assert not list((tmp_path / "out" / "labels").glob("*.json"))  # one class: no id -> class files


def test_instances_multiclass_sidecar_round_trip(tmp_path):
    grey_image(tmp_path / "in" / "images" / "a.png", 6, 5)
    ids = np.zeros((5, 6), np.uint16)
    ids[0:2, 0:2], ids[3:, 3:], ids[0, 5] = 1, 2, 3
    save_png(tmp_path / "in" / "labels" / "a.png", ids)
    (tmp_path / "in" / "labels" / "a.json").write_text(json.dumps({"1": "cat", "2": "dog", "3": "cat"}))
    (tmp_path / "in" / "classes.txt").write_text("cat\ndog\n")

    bundle = InstanceMasks().read(tmp_path / "in", ProjectKind.instance)
    assert bundle.classes == ["cat", "dog"]
    assert [s.label for s in bundle.entries[0].shapes] == ["cat", "dog", "cat"]

    records, ctx = export_from_bundle(bundle, tmp_path / "out", ProjectKind.instance)
    InstanceMasks().write(records, ctx)
    assert np.array_equal(pixels(tmp_path / "out" / "labels" / "a.png"), ids)
    assert json.loads((tmp_path / "out" / "labels" / "a.json").read_text()) == {"1": "cat", "2": "dog", "3": "cat"}


@settings(max_examples=60, deadline=None)
@given(arrays(np.uint16, st.tuples(st.integers(1, 9), st.integers(1, 9)), elements=st.integers(0, 4)))
def test_value_rles_equal_pycocotools_encoding(array):
    expected = {int(v): rle.encode(array == v)[1] for v in np.unique(array) if v}
    assert value_rles(array) == expected


# --- scribbles ---------------------------------------------------------------------------------------------


def test_scribbles_round_trip(tmp_path):
    grey_image(tmp_path / "in" / "images" / "cells.png", 12, 9)
    marks = np.zeros((9, 12), np.uint8)
    marks[2, 1:9] = 1
    marks[6:8, 10] = 2
    save_png(tmp_path / "in" / "scribbles" / "cells.png", marks)
    assert detect_format(tmp_path / "in").name == "scribbles"

    bundle = Scribbles().read(tmp_path / "in", ProjectKind.semantic)
    assert bundle.classes == ["class1", "class2"]
    shapes = bundle.entries[0].shapes
    assert all(isinstance(s, Scribble) for s in shapes) and [rle.area(s) for s in shapes] == [8, 2]

    records, ctx = export_from_bundle(bundle, tmp_path / "out", ProjectKind.semantic)
    Scribbles().write(records, ctx)
    assert np.array_equal(pixels(tmp_path / "out" / "scribbles" / "cells.png"), marks)


# --- class folders and CSV ---------------------------------------------------------------------------------


def _hymenoptera_subset(target: Path) -> None:
    source = shared_data("hymenoptera")
    for split in ("train", "val"):
        for label in ("ants", "bees"):
            files = sorted((source / split / label).iterdir())[:5]
            if split == "train" and label == "ants":  # the odd ones: a GIF placeholder and a .jpeg
                files += [source / split / label / "imageNotFound.gif", source / split / label / "formica.jpeg"]
            (target / split / label).mkdir(parents=True)
            for file in files:
                shutil.copyfile(file, target / split / label / file.name)


def _contents(root: Path) -> set[tuple[str, str, str]]:
    return {(p.relative_to(root).parts[0], p.parent.name, sha256(p)) for p in root.rglob("*") if p.is_file()}


def test_hymenoptera_folders_to_csv_to_folders_keeps_files_classes_splits(tmp_path):
    _hymenoptera_subset(tmp_path / "in")
    assert detect_format(tmp_path / "in").name == "folders"

    bundle = Folders().read(tmp_path / "in", ProjectKind.classification)
    assert bundle.classes == ["ants", "bees"] and len(bundle.entries) == 22
    assert {e.split for e in bundle.entries} == {Split.train, Split.val}
    assert all(len(e.shapes) == 1 for e in bundle.entries)

    records, ctx = export_from_bundle(bundle, tmp_path / "csv", ProjectKind.classification)
    CsvLabels().write(records, ctx)
    assert detect_format(tmp_path / "csv").name == "csv"
    from_csv = CsvLabels().read(tmp_path / "csv", ProjectKind.classification)
    assert [(e.split, e.shapes) for e in from_csv.entries] == [(e.split, e.shapes) for e in bundle.entries]

    records, ctx = export_from_bundle(from_csv, tmp_path / "out", ProjectKind.classification)
    summary = Folders().write(records, ctx)

    assert summary.items == 22
    assert _contents(tmp_path / "out") == _contents(tmp_path / "in")


def test_coco128_multilabel_csv(tmp_path):
    csv_path = shared_data("coco128", "multilabel_from_detection.csv")

    bundle = CsvLabels().read(csv_path, ProjectKind.multilabel)

    assert len(bundle.entries) == 256 and len(bundle.classes) == 76
    counts = [len(e.shapes) for e in bundle.entries]
    assert counts.count(0) == 2 and round(sum(counts) / len(counts), 1) == 2.9
    assert {e.split for e in bundle.entries} == {Split.train, Split.val}  # train2017 / val2017
    assert bundle.entries[0].name == "images/train2017/000000000009.jpg"
    assert [s.label for s in bundle.entries[0].shapes] == ["bowl", "broccoli", "orange"]
    with pytest.raises(InvalidInput, match=r"multilabel_from_detection.csv line 2: 3 labels .* classification"):
        CsvLabels().read(csv_path, ProjectKind.classification)


def test_folders_export_refuses_multilabel_and_skips_unlabelled(tmp_path):
    grey_image(tmp_path / "a.png", 3, 3)
    items = [ExportItem(id=i, name=f"a{i}.png", index=0, width=3, height=3, split=Split.none, channels=1,
                        dtype="uint8") for i in (1, 2)]
    records = [ExportRecord(items[0], [ClassLabel("x")]), ExportRecord(items[1], [])]

    def save(item, directory):
        directory.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / "a.png", directory / item.name)
        return item.name

    ctx = ExportContext(out=tmp_path / "out", kind=ProjectKind.multilabel, classes=class_defs(["x"]), save_image=save)
    with pytest.raises(InvalidInput, match="csv"):
        Folders().write(records, ctx)
    ctx.kind = ProjectKind.classification
    summary = Folders().write(records, ctx)
    assert summary.items == 1 and "1 item(s) without a label" in summary.warnings[0]
    assert (tmp_path / "out" / "x" / "a1.png").is_file()  # split none: no split level


# --- images and DICOM --------------------------------------------------------------------------------------


def test_images_folder_and_single_file(tmp_path):
    grey_image(tmp_path / "sub" / "a.png", 3, 3)
    (tmp_path / "notes.txt").write_text("not an image")

    bundle = Images().read(tmp_path, ProjectKind.detection)
    assert [e.name for e in bundle.entries] == ["sub/a.png"] and "notes.txt" in bundle.warnings[0]
    assert [e.name for e in Images().read(tmp_path / "sub" / "a.png", ProjectKind.semantic).entries] == ["a.png"]


def test_dicom_folder_any_suffix(tmp_path):
    source = shared_data("dicom_samples", "pydicom_wheel")
    shutil.copyfile(source / "CT_small.dcm", tmp_path / "CT_small.dcm")
    shutil.copyfile(source / "MR_small.dcm", tmp_path / "IM0001")  # no suffix, found by the DICM marker
    (tmp_path / "README.txt").write_text("notes")
    assert Dicom().detect(tmp_path) and detect_format(tmp_path).name == "dicom"

    bundle = Dicom().read(tmp_path, ProjectKind.classification)
    assert [e.name for e in bundle.entries] == ["CT_small.dcm", "IM0001"]
    assert all(e.index is None and not e.shapes for e in bundle.entries) and "README.txt" in bundle.warnings[0]

    grey_image(tmp_path / "other.png", 3, 3)
    assert not Dicom().detect(tmp_path)  # other images too: not a DICOM folder


# --- bad input ---------------------------------------------------------------------------------------------


def test_mask_size_differs_from_image(tmp_path):
    grey_image(tmp_path / "images" / "a.png", 8, 6)
    save_png(tmp_path / "masks" / "a.png", np.zeros((5, 8), np.uint8))
    with pytest.raises(InvalidInput, match=r"masks/a.png: mask is 8x5 but the image .*a.png is 8x6"):
        SemanticMasks().read(tmp_path, ProjectKind.semantic)


def test_mask_value_not_in_classes(tmp_path):
    grey_image(tmp_path / "images" / "a.png", 4, 4)
    save_png(tmp_path / "masks" / "a.png", np.array([[0, 1, 2, 7]] * 4, np.uint8))
    (tmp_path / "classes.txt").write_text("road\ncar\n")
    with pytest.raises(InvalidInput, match=r"masks/a.png: values \[7\] are not classes"):
        SemanticMasks().read(tmp_path, ProjectKind.semantic)


def test_mask_without_image(tmp_path):
    grey_image(tmp_path / "images" / "a.png", 4, 4)
    save_png(tmp_path / "masks" / "b.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(InvalidInput, match=r"masks/b.png: no image .*images/b\.\*"):
        SemanticMasks().read(tmp_path, ProjectKind.semantic)


@pytest.mark.parametrize(
    ("rows", "kind", "message"),
    [
        (["a.png,x,train", "b.png,y,holdout"], ProjectKind.classification,
         r"labels.csv line 3: unknown split 'holdout'"),
        (["a.png,x,", "missing.png,x,"], ProjectKind.classification,
         r"labels.csv line 3: image 'missing.png' not found"),
        (["a.png,x,", "b.png,a;b,val"], ProjectKind.classification,
         r"labels.csv line 3: 2 labels \('a;b'\) in a classification project; use a multilabel project"),
        (["../a.png,x,"], ProjectKind.multilabel, r"labels.csv line 2: '../a.png' leaves the imported folder"),
        ([",x,"], ProjectKind.multilabel, r"labels.csv line 2: the image cell is empty"),
        (["/tmp/a.png,x,"], ProjectKind.multilabel, r"labels.csv line 2: '/tmp/a.png' must be a path relative"),
    ],
)
def test_bad_csv(tmp_path, rows, kind, message):
    for name in ("a.png", "b.png"):
        grey_image(tmp_path / "images" / name, 3, 3)
    (tmp_path / "labels.csv").write_text("image,labels,split\n" + "\n".join(rows) + "\n")
    with pytest.raises(InvalidInput, match=message):
        CsvLabels().read(tmp_path, kind)


def test_scribble_size_mismatch_and_wrong_size_shape_on_export(tmp_path):
    grey_image(tmp_path / "images" / "a.png", 5, 5)
    save_png(tmp_path / "scribbles" / "a.png", np.zeros((5, 4), np.uint8))
    with pytest.raises(InvalidInput, match=r"scribbles/a.png: scribble image is 4x5 but the image .* is 5x5"):
        Scribbles().read(tmp_path, ProjectKind.semantic)

    size, counts = rle.encode(np.ones((4, 4), bool))
    item = ExportItem(id=1, name="a.png", index=0, width=5, height=5, split=Split.val, channels=1, dtype="uint8")
    ctx = ExportContext(out=tmp_path / "out", kind=ProjectKind.semantic, classes=class_defs(["x"]),
                        save_image=lambda item, directory: "a.png")
    with pytest.raises(InvalidInput, match=r"item a.png: mask of 4x4 does not match the image \(5x5\)"):
        SemanticMasks().write([ExportRecord(item, [Mask(label="x", size=size, counts=counts)])], ctx)
