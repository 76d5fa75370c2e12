"""COCO, YOLO and Pascal VOC: real datasets in, round trips out, and clear errors on bad files."""

from __future__ import annotations

import copy
import json
import math
import tempfile
import tracemalloc
from collections import defaultdict
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pycocotools.coco import COCO

from formats_support import CopyingSaver, class_defs, export_from_bundle, shared_data
from labelloop.domain import Box, Mask, Polygon, ProjectKind, Split
from labelloop.errors import InvalidInput
from labelloop.formats.base import ExportContext, ExportItem, ExportRecord
from labelloop.formats.coco import CocoFormat
from labelloop.formats.voc import VocFormat
from labelloop.formats.yolo import YoloFormat

DETECTION, INSTANCE = ProjectKind.detection, ProjectKind.instance


def coco128_json() -> Path:
    return shared_data("coco128", "annotations", "instances_train2017.json")


def boxes_by_image(bundle, key=lambda name: Path(name).name) -> dict[str, list[tuple[str, float, float, float, float]]]:
    found = defaultdict(list)
    for entry in bundle.entries:
        for s in entry.shapes:
            found[key(entry.name)].append((s.label, s.x0, s.y0, s.x1, s.y1))
    return {name: sorted(boxes) for name, boxes in found.items()}


def assert_boxes_close(actual, expected, tolerance: float) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        assert len(actual[name]) == len(expected[name]), name
        for got, want in zip(actual[name], expected[name]):
            assert got[0] == want[0], name
            assert max(abs(a - b) for a, b in zip(got[1:], want[1:])) <= tolerance, (name, got, want)


# --- COCO on coco128 -------------------------------------------------------------------------------------------


@pytest.mark.shared_data
def test_coco128_detection_reads_every_box_with_categories_by_name():
    path = coco128_json()
    original = json.loads(path.read_text())
    bundle = CocoFormat().read(path, DETECTION)

    assert len(bundle.entries) == 128
    assert bundle.classes == [c["name"] for c in sorted(original["categories"], key=lambda c: c["id"])]
    assert len(bundle.classes) == 80
    assert sum(len(e.shapes) for e in bundle.entries) == 939
    assert all(e.split is Split.train and e.path.is_file() for e in bundle.entries)
    first = next(e for e in bundle.entries if e.name == "000000000009.jpg")
    assert first.declared_size == (640, 480)
    assert first.origin == "instances_train2017.json: images[0]"
    crowd = [s for e in bundle.entries for s in e.shapes if s.attributes.get("iscrowd")]
    assert len(crowd) == 10 and all(isinstance(s, Box) for s in crowd)


@pytest.mark.shared_data
def test_coco128_instance_keeps_polygons_and_crowd_masks():
    bundle = CocoFormat().read(coco128_json(), INSTANCE)
    shapes = [s for e in bundle.entries for s in e.shapes]
    assert len(shapes) == 939
    masks = [s for s in shapes if isinstance(s, Mask)]
    assert len(masks) == 10 and all(m.attributes == {"iscrowd": 1} for m in masks)
    assert sum(isinstance(s, Polygon) for s in shapes) == 929


@pytest.mark.shared_data
@pytest.mark.parametrize("kind", [DETECTION, INSTANCE])
def test_coco128_round_trip_loads_in_pycocotools(tmp_path, kind):
    path = coco128_json()
    original = json.loads(path.read_text())
    bundle = CocoFormat().read(path, kind)
    records, ctx = export_from_bundle(bundle, tmp_path / "out", kind)
    summary = CocoFormat().write(iter(records), ctx)
    assert (summary.items, summary.shapes) == (128, 939)

    coco = COCO(str(tmp_path / "out" / "annotations.json"))
    assert len(coco.getAnnIds()) == 939
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == bundle.classes
    assert all((tmp_path / "out" / "images" / img["file_name"]).is_file() for img in coco.dataset["images"])

    # Per image the annotations keep their order, so compare them pairwise with the original file.
    name_of = {img["id"]: img["file_name"] for img in original["images"]}
    want = defaultdict(list)
    for ann in original["annotations"]:
        want[name_of[ann["image_id"]]].append(ann)
    got = defaultdict(list)
    for ann in coco.dataset["annotations"]:
        got[coco.imgs[ann["image_id"]]["file_name"]].append(ann)
    cat_name = {c["id"]: c["name"] for c in original["categories"]}
    assert got.keys() == want.keys()
    for name in want:
        for mine, theirs in zip(got[name], want[name], strict=True):
            assert coco.cats[mine["category_id"]]["name"] == cat_name[theirs["category_id"]]
            assert mine["iscrowd"] == theirs["iscrowd"]
            # COCO's own crowd boxes are a pixel tighter than their masks; ours are computed from the mask.
            tolerance = 1.0 if kind is INSTANCE and theirs["iscrowd"] else 0.5
            error = max(abs(a - b) for a, b in zip(mine["bbox"], theirs["bbox"]))
            assert error <= tolerance, (name, mine["bbox"], theirs["bbox"])
            if kind is INSTANCE and not theirs["iscrowd"]:
                assert mine["area"] == pytest.approx(theirs["area"], rel=0.01)
                assert type(mine["segmentation"]) is type(theirs["segmentation"])
    if kind is INSTANCE:
        crowd = coco.loadAnns(coco.getAnnIds(iscrowd=True))
        # COCO's stated crowd areas disagree with their own masks; ours are the mask's pixel count.
        assert len(crowd) == 10 and all(coco.annToMask(a).sum() == a["area"] for a in crowd)


# --- YOLO ------------------------------------------------------------------------------------------------------


@pytest.mark.shared_data
def test_coco128_yolo_layout_resolves_images_beside_the_yaml():
    root = shared_data("coco128", "object_detection")
    shared_data("coco128", "images", "train2017")
    fmt = YoloFormat()
    assert fmt.detect(root) and fmt.detect(root / "config.yaml")
    bundle = fmt.read(root, DETECTION)

    assert len(bundle.classes) == 80 and bundle.classes[0] == "person"
    by_split = defaultdict(int)
    for entry in bundle.entries:
        by_split[entry.split] += 1
    assert by_split == {Split.train: 128, Split.val: 128}
    # The source ships two label files whose images are not there (000000000656, 000000000659): skipped, and said so.
    assert any("2 label file(s) have no image" in w for w in bundle.warnings)
    images = {Path(e.name).stem for e in bundle.entries if e.split is Split.train}
    lines = sum(
        len([line for line in p.read_text().splitlines() if line.strip()])
        for p in (root / "labels").rglob("*.txt")
        if p.parent.name == "val2017" or p.stem in images
    )
    assert sum(len(e.shapes) for e in bundle.entries) == lines
    # The YOLO boxes are a conversion of the COCO JSON's non-crowd boxes: they agree to rounding.
    coco = boxes_by_image(CocoFormat().read(coco128_json(), DETECTION))
    yolo = boxes_by_image(bundle, key=lambda name: name)
    sample = "images/train2017/000000000009.jpg"
    assert len(yolo[sample]) == len(coco["000000000009.jpg"])
    for got, want in zip(yolo[sample], coco["000000000009.jpg"]):
        assert got[0] == want[0] and max(abs(a - b) for a, b in zip(got[1:], want[1:])) < 1.0


@pytest.mark.shared_data
def test_coco128_instance_to_yolo_seg_and_back(tmp_path):
    bundle = CocoFormat().read(coco128_json(), INSTANCE)
    records, ctx = export_from_bundle(bundle, tmp_path / "yolo", INSTANCE)
    summary = YoloFormat().write(records, ctx)
    assert summary.shapes == 939
    assert summary.warnings  # multi-part polygons and masks are simplified, and the export says so

    back = YoloFormat().read(tmp_path / "yolo", INSTANCE)
    shapes = [s for e in back.entries for s in e.shapes]
    assert len(shapes) == 939 and all(isinstance(s, Polygon) and len(s.parts) == 1 for s in shapes)
    assert back.classes == bundle.classes


@pytest.mark.shared_data
def test_raccoon_voc_to_yolo_to_voc_keeps_boxes(tmp_path):
    source = shared_data("raccoon")
    voc = VocFormat()
    assert voc.detect(source)
    first = voc.read(source, DETECTION)
    assert len(first.entries) == 200 and first.classes == ["raccoon"]
    assert sum(len(e.shapes) for e in first.entries) == 217
    one = next(e for e in first.entries if e.name == "raccoon-1.jpg")
    assert one.declared_size == (650, 417)
    assert (one.shapes[0].x0, one.shapes[0].y0, one.shapes[0].x1, one.shapes[0].y1) == (80, 87, 522, 408)
    assert one.shapes[0].attributes == {"difficult": 0, "truncated": 0, "pose": "Unspecified"}

    records, ctx = export_from_bundle(first, tmp_path / "yolo", DETECTION)
    YoloFormat().write(records, ctx)
    assert YoloFormat().detect(tmp_path / "yolo")
    middle = YoloFormat().read(tmp_path / "yolo", DETECTION)

    records, ctx = export_from_bundle(middle, tmp_path / "voc", DETECTION)
    summary = VocFormat().write(records, ctx)
    assert (summary.items, summary.shapes) == (200, 217)
    last = VocFormat().read(tmp_path / "voc", DETECTION)

    expected = boxes_by_image(first)
    assert_boxes_close(boxes_by_image(middle), expected, 0.5)
    assert_boxes_close(boxes_by_image(last), expected, 0.5)
    assert {e.split for e in last.entries} == {Split.train}  # YOLO puts split "none" in train


# --- bad input ---------------------------------------------------------------------------------------------------


def tiny_coco(tmp_path: Path) -> dict:
    (tmp_path / "images").mkdir()
    Image.new("RGB", (64, 48)).save(tmp_path / "images" / "a.png")
    return {
        "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 20], "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 2, "bbox": [5, 5, 10, 10], "iscrowd": 0},
        ],
    }


def read_coco(tmp_path: Path, data: dict | str) -> None:
    path = tmp_path / "instances.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    CocoFormat().read(path, DETECTION)


def test_tiny_coco_is_valid(tmp_path):
    read_coco(tmp_path, tiny_coco(tmp_path))


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda d: d["annotations"][1].update(category_id=7), ["annotations[1] (id 11)", "missing category", "7"]),
        (
            lambda d: d["annotations"][0].update(bbox=[1, 2, -3.0, 20]),
            ["annotations[0] (id 10)", "width is negative (-3.0)"],
        ),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, math.nan, 20]), ["annotations[0]", "not a finite number"]),
        (lambda d: d["annotations"][1].update(image_id=99), ["annotations[1]", "unknown image_id 99"]),
        (
            lambda d: d["images"][0].update(file_name="../../etc/passwd"),
            ["images[0].file_name", "../../etc/passwd", "no '..'"],
        ),
        (lambda d: d["images"][0].update(file_name="/etc/passwd"), ["images[0].file_name", "not absolute"]),
        (lambda d: d["images"][0].update(file_name="b.png"), ["not found", "b.png"]),
        (lambda d: d["annotations"][0].update(bbox=[30, 2, 40, 20]), ["annotations[0]", "outside the 64×48 image"]),
        (lambda d: d.pop("categories"), ["missing key 'categories'"]),
        (lambda d: d["images"].append(dict(d["images"][0])), ["images[1]", "duplicate image id 1"]),
    ],
)
def test_coco_errors_name_the_file_and_the_problem(tmp_path, change, words):
    data = tiny_coco(tmp_path)
    change(data)
    with pytest.raises(InvalidInput) as raised:
        read_coco(tmp_path, data)
    message = str(raised.value)
    assert message.startswith("instances.json")
    for word in words:
        assert word in message


def test_coco_instance_polygon_errors(tmp_path):
    data = tiny_coco(tmp_path)
    data["annotations"][0]["segmentation"] = [[1, 2, 3, 4, 5]]
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    where = r"instances\.json: annotations\[0\] \(id 10\): segmentation\[0\]: "
    with pytest.raises(InvalidInput, match=where + "polygon has an odd number of coordinates"):
        CocoFormat().read(path, INSTANCE)
    data["annotations"][0]["segmentation"] = [[1, 2, 3, 4]]
    path.write_text(json.dumps(data))
    with pytest.raises(InvalidInput, match="2 point.*at least 3"):
        CocoFormat().read(path, INSTANCE)


def test_coco_malformed_json_reports_line_and_column(tmp_path):
    tiny_coco(tmp_path)
    with pytest.raises(InvalidInput, match=r"^instances\.json line 3 column \d+: malformed JSON"):
        read_coco(tmp_path, '{"images": [],\n "annotations": []\n "categories": []}')


def test_coco_refuses_kinds_it_cannot_serve(tmp_path):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(tiny_coco(tmp_path)))
    with pytest.raises(InvalidInput, match="semantic"):
        CocoFormat().read(path, ProjectKind.semantic)


def test_coco_folder_merges_json_files_with_splits_from_their_names(tmp_path):
    data = tiny_coco(tmp_path)
    Image.new("RGB", (64, 48)).save(tmp_path / "images" / "b.png")
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_train.json").write_text(json.dumps(data))
    data["images"][0]["file_name"] = "b.png"
    data["categories"] = [{"id": 1, "name": "dog"}, {"id": 2, "name": "bird"}]
    (tmp_path / "annotations" / "instances_val.json").write_text(json.dumps(data))
    (tmp_path / "annotations" / "captions_val.json").write_text(json.dumps({"annotations": []}))

    assert CocoFormat().detect(tmp_path)
    bundle = CocoFormat().read(tmp_path, DETECTION)
    assert bundle.classes == ["cat", "dog", "bird"]
    assert {(e.name, e.split, tuple(s.label for s in e.shapes)) for e in bundle.entries} == {
        ("a.png", Split.train, ("cat", "dog")),
        ("b.png", Split.val, ("dog", "bird")),
    }


def tiny_yolo(tmp_path: Path, line: str) -> Path:
    for folder in ("images/train", "labels/train"):
        (tmp_path / folder).mkdir(parents=True)
    Image.new("RGB", (64, 48)).save(tmp_path / "images" / "train" / "img1.jpg")
    (tmp_path / "labels" / "train" / "img1.txt").write_text(f"0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.1 0.1\n{line}\n")
    (tmp_path / "data.yaml").write_text("path: .\ntrain: images/train\nnames: [cat, dog]\n")
    return tmp_path


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("0 0.5 0.5 0.2", ["expected 5 numbers (class cx cy w h) or a polygon", "got 4"]),
        ("2 0.5 0.5 0.2 0.2", ["class id 2 is out of range", "0..1"]),
        ("0 0.5 abc 0.2 0.2", ["'abc' is not a number"]),
        ("0 0.5 0.5 1.2 0.2", ["outside the image"]),
        ("0 0.1 0.1 0.5 0.5 0.9", ["got 6"]),
    ],
)
def test_yolo_errors_name_the_file_and_line(tmp_path, line, words):
    root = tiny_yolo(tmp_path, line)
    with pytest.raises(InvalidInput) as raised:
        YoloFormat().read(root, DETECTION)
    message = str(raised.value)
    assert message.startswith("labels/train/img1.txt line 3: ")
    for word in words:
        assert word in message


def test_yolo_polygon_lines_become_boxes_for_detection(tmp_path):
    root = tiny_yolo(tmp_path, "1 0.25 0.25 0.75 0.25 0.5 0.75")
    shapes = YoloFormat().read(root, DETECTION).entries[0].shapes
    assert shapes[2] == Box("dog", 16.0, 12.0, 48.0, 36.0)
    instance = YoloFormat().read(root, INSTANCE)
    assert [type(s).__name__ for s in instance.entries[0].shapes] == ["Polygon"] * 3
    assert instance.warnings  # the two box lines became rectangles


RACCOON_XML = """<annotation>
  <filename>r.jpg</filename>
  <size><width>650</width><height>417</height><depth>3</depth></size>
  <object><name>raccoon</name><bndbox><xmin>81</xmin><ymin>88</ymin><xmax>522</xmax><ymax>408</ymax></bndbox></object>
  <object><name>raccoon</name><bndbox><xmin>10</xmin><ymin>20</ymin><xmax>700</xmax><ymax>300</ymax></bndbox></object>
</annotation>
"""


def tiny_voc(tmp_path: Path, xml: str) -> Path:
    for folder in ("annotations", "images"):
        (tmp_path / folder).mkdir()
    Image.new("RGB", (650, 417)).save(tmp_path / "images" / "r.jpg")
    (tmp_path / "annotations" / "raccoon-1.xml").write_text(xml)
    return tmp_path


def test_voc_box_outside_the_image(tmp_path):
    root = tiny_voc(tmp_path, RACCOON_XML)
    with pytest.raises(InvalidInput) as raised:
        VocFormat().read(root, DETECTION)
    assert str(raised.value).startswith(
        "annotations/raccoon-1.xml: object 2 (raccoon): box (10,20,700,300) is outside the 650×417 image"
    )


def test_voc_refuses_doctype(tmp_path):
    doctype = '<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
    bomb = f'<?xml version="1.0"?>\n{doctype}\n{RACCOON_XML}'
    root = tiny_voc(tmp_path, bomb.replace("<name>raccoon</name>", "<name>&lol2;</name>", 1))
    with pytest.raises(InvalidInput, match=r"^annotations/raccoon-1\.xml: DOCTYPE"):
        VocFormat().read(root, DETECTION)


@pytest.mark.parametrize(
    ("xml", "words"),
    [
        (RACCOON_XML.replace("</annotation>", ""), ["line 7 column 1", "malformed XML (no element found)"]),
        (RACCOON_XML.replace("<ymax>408</ymax>", ""), ["object 1 (raccoon)", "missing <ymax>"]),
        (RACCOON_XML.replace("<xmin>81</xmin>", "<xmin>600</xmin>"), ["object 1", "xmin > xmax"]),
        (RACCOON_XML.replace("<filename>r.jpg", "<filename>../r.jpg"), ["<filename>", "'../r.jpg'"]),
        (RACCOON_XML.replace("r.jpg", "gone.jpg"), ["not found", "gone.jpg"]),
    ],
)
def test_voc_errors_name_the_file_and_the_problem(tmp_path, xml, words):
    root = tiny_voc(tmp_path, xml)
    with pytest.raises(InvalidInput) as raised:
        VocFormat().read(root, DETECTION)
    for word in words:
        assert word in str(raised.value)


def test_voc_keeps_difficult_truncated_and_pose(tmp_path):
    source = tmp_path / "pic.png"
    Image.new("RGB", (100, 80)).save(source)
    saver = CopyingSaver()
    saver.sources[1] = source
    item = ExportItem(id=1, name="pic.png", index=0, width=100, height=80, split=Split.test, channels=3, dtype="uint8")
    box = Box("cat", 0, 0, 100, 80, attributes={"difficult": 1, "truncated": 1, "pose": "Left"})
    ctx = ExportContext(out=tmp_path / "voc", kind=DETECTION, classes=class_defs(["cat"]), save_image=saver)
    VocFormat().write([ExportRecord(item, [box])], ctx)
    (entry,) = VocFormat().read(tmp_path / "voc", DETECTION).entries
    assert entry.shapes == [box] and entry.shapes[0].attributes == box.attributes
    assert entry.split is Split.test and entry.declared_size == (100, 80)
    with pytest.raises(InvalidInput, match="cannot export a project of kind instance"):
        VocFormat().write([], ExportContext(out=tmp_path / "x", kind=INSTANCE, classes=[], save_image=saver))


# --- streaming ---------------------------------------------------------------------------------------------------


def synthetic_records(items: int, boxes_per_item: int):
    for i in range(items):
        item = ExportItem(
            id=i + 1, name=f"img{i}.png", index=0, width=640, height=480, split=Split.train, channels=3, dtype="uint8"
        )
        shapes = [Box("cat" if k % 2 else "dog", k, k, k + 10.5, k + 20.25) for k in range(boxes_per_item)]
        yield ExportRecord(item=item, shapes=shapes)


@pytest.mark.slow
def test_coco_writer_streams_100k_boxes_in_bounded_memory(tmp_path):
    classes = class_defs(["cat", "dog"])
    ctx = ExportContext(out=tmp_path, kind=DETECTION, classes=classes, save_image=lambda item, d: item.name)
    tracemalloc.start()
    try:
        summary = CocoFormat().write(synthetic_records(10_000, 10), ctx)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (summary.items, summary.shapes) == (10_000, 100_000)
    # Holding the whole document as a dict would take well over 50 MB; streaming needs a few.
    assert peak < 10 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    coco = COCO(str(tmp_path / "annotations.json"))
    assert len(coco.getAnnIds()) == 100_000 and len(coco.getImgIds()) == 10_000


# --- property: boxes survive every format ---------------------------------------------------------------------


@st.composite
def boxed_images(draw):
    width, height = draw(st.integers(2, 3000)), draw(st.integers(2, 3000))
    boxes = []
    for _ in range(draw(st.integers(0, 5))):
        # At least a pixel wide: VOC's integer grid cannot hold thinner boxes within a pixel.
        x0 = draw(st.floats(0, width - 1))
        y0 = draw(st.floats(0, height - 1))
        x1 = draw(st.floats(x0 + 1, width))
        y1 = draw(st.floats(y0 + 1, height))
        boxes.append(Box(draw(st.sampled_from(["cat", "dog", "bird"])), x0, y0, x1, y1))
    return width, height, boxes


FORMATS = [(CocoFormat, 1e-9), (YoloFormat, 1e-3), (VocFormat, 1.0)]


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(image=boxed_images())
def test_boxes_survive_write_then_read(image):
    width, height, boxes = image
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "src" / "pic.png"
        source.parent.mkdir()
        Image.new("L", (width, height)).save(source)
        for fmt, tolerance in FORMATS:
            saver = CopyingSaver()
            saver.sources[1] = source
            item = ExportItem(
                id=1, name="pic.png", index=0, width=width, height=height, split=Split.val, channels=1, dtype="uint8"
            )
            out = Path(tmp) / fmt.name
            ctx = ExportContext(out=out, kind=DETECTION, classes=class_defs(["bird", "cat", "dog"]), save_image=saver)
            fmt().write([ExportRecord(item, copy.deepcopy(boxes))], ctx)
            (entry,) = fmt().read(out, DETECTION).entries
            assert entry.split is (None if fmt is CocoFormat else Split.val)  # one COCO file holds no split
            assert len(entry.shapes) == len(boxes)
            scale = max(width, height) if fmt is YoloFormat else 1.0
            for got, want in zip(entry.shapes, boxes):
                assert got.label == want.label
                error = max(abs(got.x0 - want.x0), abs(got.y0 - want.y0), abs(got.x1 - want.x1), abs(got.y1 - want.y1))
                assert error <= tolerance * scale, (fmt.name, got, want)
