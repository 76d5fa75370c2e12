"""Label Studio JSON and CVAT for images 1.1 XML: round trips on real data, files those tools write, clear errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import peer_readers
from formats_support import export_from_bundle, shared_data
from labelloop.domain import Box, ClassLabel, Mask, Polygon, ProjectKind
from labelloop.errors import InvalidInput
from labelloop.formats import labelstudio_writer
from labelloop.formats.coco import CocoFormat
from labelloop.formats.cvat import CvatFormat
from labelloop.formats.labelstudio import LabelStudioFormat
from labelloop.formats.masks import SemanticMasks as MasksFormat
from labelloop.formats.voc import VocFormat
from labelloop.geometry import brush_rle, rle


# --- Label Studio brush RLE --------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 30), st.integers(1, 30), st.floats(0, 1), st.integers(0, 2**31))
def test_brush_rle_round_trips_any_mask(height, width, density, seed):
    mask = np.random.default_rng(seed).random((height, width)) < density
    assert np.array_equal(brush_rle.decode(brush_rle.encode(mask), height, width), mask)


def test_brush_rle_long_runs_are_split_as_label_studio_does():
    mask = np.zeros((300, 300), bool)  # 360,000 equal values: more than one 16-bit run
    mask[299, 299] = True
    encoded = brush_rle.encode(mask)
    assert np.array_equal(brush_rle.decode(encoded, 300, 300), mask)
    # header: 32 bits of value count (300·300·4), word size 8 (stored 7), run sizes 3, 4, 8, 16 (stored 2, 3, 7, 15)
    bits = "".join(f"{b:08b}" for b in encoded)
    assert int(bits[:32], 2) == 360_000 and int(bits[32:37], 2) == 7
    assert [int(bits[37 + 4 * k: 41 + 4 * k], 2) for k in range(4)] == [2, 3, 7, 15]


def test_brush_rle_decodes_literal_runs_as_the_front_end_writes_them():
    # thi.ng rle-pack literal runs (flag 0): two pixels, RGBA (0,0,0,0) then (255,255,255,255) written as
    # 8 literal words in one run of 8 (run field 0 = 3 bits, length - 1 = 7)
    bits = f"{8:032b}{7:05b}{2:04b}{3:04b}{7:04b}{15:04b}" + "0" + "00" + "111" + "00000000" * 4 + "11111111" * 4
    bits += "0" * (-len(bits) % 8)
    data = list(int(bits, 2).to_bytes(len(bits) // 8, "big"))
    assert brush_rle.decode(data, 1, 2).tolist() == [[False, True]]


@pytest.mark.parametrize("bad, message", [
    ([1, 2, 3], "shorter than its 53-bit header"),
    ([0, 0, 0, 9, 0xE0, 0, 0, 0], "holds 9 values"),
    ([300], "byte values"),
])
def test_brush_rle_refuses_malformed_data(bad, message):
    with pytest.raises(ValueError, match=message):
        brush_rle.decode(bad, 2, 2)


def test_brush_rle_refuses_truncated_runs():
    encoded = brush_rle.encode(np.eye(20, dtype=bool))
    with pytest.raises(ValueError, match="ends in the middle|runs past"):
        brush_rle.decode(encoded[: len(encoded) // 2], 20, 20)


@pytest.mark.shared_data
def test_brush_rle_keeps_a_lucchi_mask_pixel_identical():
    mask = np.asarray(Image.open(shared_data("lucchi_mito", "train", "masks", "slice_000.png"))) > 0
    assert np.array_equal(brush_rle.decode(brush_rle.encode(mask), *mask.shape), mask)


# --- Label Studio results -----------------------------------------------------------------------------------------


def test_prediction_results_are_percent_with_scores():
    mask = np.zeros((50, 200), bool)
    mask[10:20, 30:40] = True
    size, counts = rle.encode(mask)
    shapes = [Box("cat", 20, 5, 120, 45, score=0.9),
              Polygon("dog", (((0, 0), (100, 0), (100, 50)),), score=0.7),
              Mask("cat", size, counts, score=0.8), ClassLabel("cat", score=0.6)]
    results = labelstudio_writer.prediction_results(shapes, 200, 50)
    by_type = {r["type"]: r for r in results}
    assert by_type["rectanglelabels"]["value"] == {"x": 10.0, "y": 10.0, "width": 50.0, "height": 80.0,
                                                   "rotation": 0, "rectanglelabels": ["cat"]}
    assert by_type["rectanglelabels"]["score"] == 0.9
    assert by_type["polygonlabels"]["value"]["points"] == [[0.0, 0.0], [50.0, 0.0], [50.0, 100.0]]
    assert by_type["choices"]["value"] == {"choices": ["cat"]} and by_type["choices"]["score"] == 0.6
    brush = by_type["brushlabels"]
    assert brush["original_width"] == 200 and brush["original_height"] == 50 and brush["value"]["format"] == "rle"
    assert np.array_equal(brush_rle.decode(brush["value"]["rle"], 50, 200), mask)
    assert {r["from_name"] for r in results} == {"label", "tag", "choice"} and {r["to_name"] for r in results} == {"image"}
    assert len({r["id"] for r in results}) == len(results)


# --- helpers ------------------------------------------------------------------------------------------------------

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def write_image(path: Path, width: int, height: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = ((np.arange(width * height).reshape(height, width) * 7 + len(path.name)) % 251).astype(np.uint8)
    Image.fromarray(pixels).save(path)  # the format the suffix names


def round_trip(fmt, bundle, kind: ProjectKind, tmp_path: Path):
    out = tmp_path / f"{fmt.name}-export"
    out.mkdir(parents=True)
    records, ctx = export_from_bundle(bundle, out, kind)
    summary = fmt.write(records, ctx)
    assert type(fmt)().detect(out)
    return type(fmt)().read(out, kind), summary, out


def polygon_parts(bundle) -> dict[str, list]:
    """Per image: (label, part) for every polygon part, sorted (both formats give each part its own region)."""
    found = defaultdict(list)
    for entry in bundle.entries:
        for shape in entry.shapes:
            if isinstance(shape, Polygon):
                found[Path(entry.name).name].extend((shape.label, part) for part in shape.parts)
    return {name: sorted(parts, key=lambda p: (p[0], p[1][0], len(p[1]))) for name, parts in found.items()}


def masks_by_image(bundle) -> dict[str, list]:
    return {Path(e.name).name: sorted(((s.label, rle.decode(s)) for s in e.shapes if isinstance(s, Mask)),
                                      key=lambda m: (m[0], int(m[1].sum())))
            for e in bundle.entries}


FORMATS = [LabelStudioFormat(), CvatFormat()]


# --- round trips on real data -------------------------------------------------------------------------------------


@pytest.mark.shared_data
@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_raccoon_boxes_round_trip_within_half_a_pixel(fmt, tmp_path):
    original = VocFormat().read(shared_data("raccoon"), ProjectKind.detection)
    again, summary, _ = round_trip(fmt, original, ProjectKind.detection, tmp_path)
    assert summary.items == 200 and summary.shapes == 217
    expected = {Path(e.name).name: sorted((s.label, s.x0, s.y0, s.x1, s.y1) for s in e.shapes) for e in original.entries}
    actual = {Path(e.name).name: sorted((s.label, s.x0, s.y0, s.x1, s.y1) for s in e.shapes) for e in again.entries}
    assert actual.keys() == expected.keys()
    for name, boxes in expected.items():
        assert len(actual[name]) == len(boxes)
        for got, want in zip(actual[name], boxes):
            assert got[0] == want[0] and max(abs(a - b) for a, b in zip(got[1:], want[1:])) <= 0.5, (name, got, want)
    assert all(e.declared_size for e in again.entries)


@pytest.mark.shared_data
@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_coco128_polygons_and_crowd_masks_round_trip(fmt, tmp_path):
    original = CocoFormat().read(shared_data("coco128", "annotations", "instances_train2017.json"), ProjectKind.instance)
    again, _, _ = round_trip(fmt, original, ProjectKind.instance, tmp_path)
    want, got = polygon_parts(original), polygon_parts(again)
    assert got.keys() == want.keys() and sum(map(len, want.values())) > 929  # multi-part objects are split
    for name in want:
        assert len(got[name]) == len(want[name]), name
        for (label, part), (label2, part2) in zip(want[name], got[name]):
            assert label == label2 and len(part) == len(part2)
            assert max(abs(a - b) for p, q in zip(part, part2) for a, b in zip(p, q)) <= 0.5, name
    masks_before, masks_after = masks_by_image(original), masks_by_image(again)
    assert sum(map(len, masks_before.values())) == 10  # the crowd masks
    for name, masks in masks_before.items():
        assert [m[0] for m in masks_after[name]] == [m[0] for m in masks]
        assert all(np.array_equal(a[1], b[1]) for a, b in zip(masks, masks_after[name])), name


@pytest.mark.shared_data
@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_lucchi_masks_round_trip_pixel_identical(fmt, tmp_path):
    source = shared_data("lucchi_mito", "train")
    dataset = tmp_path / "lucchi"
    for sub in ("images", "masks"):
        (dataset / sub).mkdir(parents=True)
        for name in ("slice_000.png", "slice_080.png", "slice_160.png"):
            (dataset / sub / name).symlink_to(source / sub / name)
    original = MasksFormat().read(dataset, ProjectKind.semantic)
    again, _, _ = round_trip(fmt, original, ProjectKind.semantic, tmp_path)
    before, after = masks_by_image(original), masks_by_image(again)
    assert before.keys() == after.keys() and len(before) == 3
    for name, masks in before.items():
        assert len(masks) == 1 and masks[0][1].any()
        assert [m[0] for m in after[name]] == [masks[0][0]]
        assert np.array_equal(after[name][0][1], masks[0][1]), name


# --- files written by the tools (fixtures from their documented examples) -----------------------------------------


def labelstudio_fixture(tmp_path: Path) -> Path:
    folder = tmp_path / "ls"
    folder.mkdir()
    shutil.copyfile(FIXTURES / "labelstudio" / "tasks.json", folder / "tasks.json")
    write_image(folder / "images" / "1.jpg", 500, 400)
    write_image(folder / "sample.jpg", 600, 403)
    write_image(folder / "images" / "polygon.png", 1920, 1280)
    write_image(folder / "dataset" / "brush.png", 16, 12)
    return folder


def test_label_studio_documented_tasks_are_read(tmp_path):
    bundle = LabelStudioFormat().read(labelstudio_fixture(tmp_path), ProjectKind.instance)
    entries = {Path(e.name).name: e for e in bundle.entries}
    assert sorted(entries) == ["1.jpg", "brush.png", "polygon.png", "sample.jpg"]
    assert bundle.classes == ["Moonwalker", "Airplane", "Car"]
    # task 1: no original size in the results: the image's own (500 × 400)
    [box] = entries["1.jpg"].shapes
    assert (box.x0, box.y0) == pytest.approx((254.0, 23.479188900747064))
    assert (box.x1, box.y1) == pytest.approx((316.0, 65.31483457844184))
    [predicted] = entries["1.jpg"].predictions
    assert predicted.model_version == "model 1" and predicted.score == 0.8
    assert predicted.shapes[0].score == 0.8 and predicted.shapes[0].x0 == pytest.approx(66.0)
    # task 2: predictions only
    sample = entries["sample.jpg"]
    assert sample.shapes == [] and sample.declared_size == (600, 403)
    airplane, car = sample.predictions[0].shapes
    assert (airplane.x0, airplane.y0, airplane.x1) == pytest.approx((29.88, 51.6646, 225.0))
    assert car.label == "Car" and car.score == 0.5
    # task 3: percent points of 1920 × 1280; the cancelled annotation is skipped
    [polygon] = entries["polygon.png"].shapes
    assert [c for point in polygon.parts[0] for c in point] == pytest.approx([38.4, 25.6, 67.2, 103.68, 67.2, 161.28])
    assert "1 cancelled" in " ".join(bundle.warnings)
    # task 4: the brush mask that label-studio-sdk wrote, and our encoder writes the same bytes
    [mask] = entries["brush.png"].shapes
    expected = np.zeros((12, 16), bool)
    expected[2:7, 3:11] = True
    expected[8:11, 12:15] = True
    assert np.array_equal(rle.decode(mask), expected)
    rle_bytes = json.loads((FIXTURES / "labelstudio" / "tasks.json").read_text())[3]["annotations"][0]["result"][0]
    assert brush_rle.encode(expected) == rle_bytes["value"]["rle"]


def cvat_fixture(tmp_path: Path) -> Path:
    folder = tmp_path / "cvat"
    (folder / "images").mkdir(parents=True)
    shutil.copyfile(FIXTURES / "cvat" / "annotations.xml", folder / "annotations.xml")
    write_image(folder / "images" / "filename000.jpg", 1600, 1200)
    write_image(folder / "images" / "filename001.jpg", 16, 12)
    return folder


def test_cvat_documented_file_is_read_with_attributes(tmp_path):
    bundle = CvatFormat().read(cvat_fixture(tmp_path), ProjectKind.instance)
    assert bundle.classes == ["car", "plate"]
    first, second = bundle.entries
    box, polygon = first.shapes
    assert (box.x0, box.y0, box.x1, box.y1) == (797.33, 870.92, 965.52, 928.94)
    assert box.attributes == {"z_order": 4}
    assert polygon.parts[0][:2] == ((561.30, 916.23), (561.30, 842.77)) and len(polygon.parts[0]) == 8
    assert polygon.attributes == {"occluded": 1, "z_order": 1, "model": "hatchback"}
    [mask] = second.shapes
    expected = np.zeros((12, 16), bool)
    expected[3, 3:6] = expected[4, 3:6] = True
    expected[6, 2:4] = True
    assert np.array_equal(rle.decode(mask), expected)
    assert mask.attributes == {"model": "sedan"}


def test_cvat_attributes_survive_export(tmp_path):
    bundle = CvatFormat().read(cvat_fixture(tmp_path), ProjectKind.instance)
    again, _, out = round_trip(CvatFormat(), bundle, ProjectKind.instance, tmp_path)
    shapes = [s for e in again.entries for s in e.shapes]
    assert [dict(s.attributes) for s in shapes] == [dict(s.attributes) for e in bundle.entries for s in e.shapes]
    assert np.array_equal(rle.decode(shapes[-1]), rle.decode(bundle.entries[1].shapes[0]))
    text = (out / "annotations.xml").read_text()
    assert 'rle="1, 3, 1, 3, 4, 2, 2" left="2" top="3" width="4" height="4"' in text  # the tight rectangle
    assert "<name>model</name>" in text  # declared in the label's meta, as CVAT needs to import it


def test_classification_choices_and_tags(tmp_path):
    write_image(tmp_path / "a.png", 8, 8)
    write_image(tmp_path / "b.png", 8, 8)
    tasks = [{"data": {"image": "a.png"}, "annotations": [{"result": [
                 {"type": "choices", "from_name": "choice", "to_name": "image", "value": {"choices": ["cat"]}}]}]},
             {"data": {"image": "b.png"}, "annotations": [{"result": [
                 {"type": "choices", "from_name": "choice", "to_name": "image", "value": {"choices": ["dog", "cat"]}}]}]}]
    (tmp_path / "tasks.json").write_text(json.dumps(tasks))
    bundle = LabelStudioFormat().read(tmp_path / "tasks.json", ProjectKind.multilabel)
    assert [[s.label for s in e.shapes] for e in bundle.entries] == [["cat"], ["dog", "cat"]]
    for fmt in FORMATS:
        again, _, _ = round_trip(fmt, bundle, ProjectKind.multilabel, tmp_path / fmt.name)
        assert [[s.label for s in e.shapes] for e in again.entries] == [["cat"], ["dog", "cat"]]


# --- through the import and export services: predictions kept, bad files change nothing ------------------------


def test_label_studio_import_keeps_predictions_and_exports_them_back(workspace, make_project, tmp_path):
    from sqlalchemy import select

    from labelloop.services.data.exporting import export_project
    from labelloop.services.data.importing import import_path
    from labelloop.store.tables import PredictionRow

    make_project("ls", "instance")
    report = import_path(workspace, "ls", labelstudio_fixture(tmp_path), format="auto")
    assert report.format == "labelstudio"
    assert (report.items_added, report.annotations_added, report.predictions_added) == (4, 3, 2)
    with workspace.session() as session:
        rows = session.scalars(select(PredictionRow).order_by(PredictionRow.id)).all()
        assert [(r.model_version, r.score, r.shape_count) for r in rows] == [("model 1", 0.8, 1), ("one", 0.5, 2)]
        assert rows[1].shapes[1]["score"] == 0.5 and rows[1].model_id is None
    summary = export_project(workspace, "ls", tmp_path / "out", format="labelstudio", include="both")
    assert summary.items == 4
    tasks = {Path(t["data"]["image"]).name: t for t in json.loads((tmp_path / "out" / "tasks.json").read_text())}
    sample = tasks["sample.jpg"]
    assert "annotations" not in sample
    [predicted] = sample["predictions"]
    assert predicted["model_version"] == "one" and [r["score"] for r in predicted["result"]] == [0.5, 0.5]
    assert predicted["result"][0]["value"]["x"] == pytest.approx(4.98)
    assert "<RectangleLabels" not in (tmp_path / "out" / "labeling_config.xml").read_text()  # instance: polygons, brush
    again = LabelStudioFormat().read(tmp_path / "out", ProjectKind.instance)
    assert sum(len(e.predictions) for e in again.entries) == 2


BAD_LS = {
    "unknown result type": ([{"type": "keypointlabels", "value": {"x": 1, "y": 2, "keypointlabels": ["cat"]}}],
                            "result type 'keypointlabels' cannot be imported"),
    "rotated rectangle": ([{"type": "rectanglelabels", "original_width": 8, "original_height": 8,
                            "value": {"x": 1, "y": 1, "width": 10, "height": 10, "rotation": 30,
                                      "rectanglelabels": ["cat"]}}], "rotated by 30"),
    "broken brush": ([{"type": "brushlabels", "original_width": 8, "original_height": 8,
                       "value": {"format": "rle", "rle": [1, 2, 3], "brushlabels": ["cat"]}}], "malformed brush RLE"),
}


@pytest.mark.parametrize("case", sorted(BAD_LS))
def test_bad_label_studio_files_are_refused_and_change_nothing(case, workspace, make_project, tmp_path):
    from conftest import snapshot
    from labelloop.services.data.importing import import_path

    make_project("p", "instance")
    write_image(tmp_path / "good.png", 8, 8)
    write_image(tmp_path / "bad.png", 8, 8)
    results, message = BAD_LS[case]
    tasks = [{"data": {"image": "good.png"}, "annotations": [{"result": [
                 {"type": "rectanglelabels", "original_width": 8, "original_height": 8,
                  "value": {"x": 0, "y": 0, "width": 50, "height": 50, "rectanglelabels": ["cat"]}}]}]},
             {"data": {"image": "bad.png"}, "annotations": [{"result": results}]}]
    (tmp_path / "tasks.json").write_text(json.dumps(tasks))
    before = snapshot(workspace)
    with pytest.raises(InvalidInput, match=message) as error:
        import_path(workspace, "p", tmp_path / "tasks.json", format="labelstudio")
    assert "task[1]" in str(error.value)
    assert snapshot(workspace) == before


def test_label_studio_0x_completions_are_refused_with_the_way_out(tmp_path):
    (tmp_path / "tasks.json").write_text(json.dumps([{"data": {"image": "a.png"}, "completions": []}]))
    with pytest.raises(InvalidInput, match="Label Studio 0.x.*export the project again"):
        LabelStudioFormat().read(tmp_path / "tasks.json", ProjectKind.detection)


@pytest.mark.parametrize("change, message", [
    ([("<version>1.1</version>", "<version>1.0</version>")], "version '1.0'; labelloop reads CVAT for images 1.1"),
    ([("<version>1.1</version>", "")], "no <version>"),
    ([("<box ", '<ellipse cx="1" cy="2" rx="3" ry="4" '), ("</box>", "</ellipse>")], "shape type <ellipse> cannot"),
    ([("<box ", '<points points="1,2" '), ("</box>", "</points>")], "shape type <points> cannot"),
    ([('rle="1, 3, 1, 3, 4, 2, 6"', 'rle="1, 3"')], "must be non-negative and cover"),
    ([("<image id=\"0\"", "<track id=\"0\" label=\"car\"></track><image id=\"0\"")], "CVAT for video"),
])
def test_bad_cvat_files_are_refused_and_change_nothing(change, message, workspace, make_project, tmp_path):
    from conftest import snapshot
    from labelloop.services.data.importing import import_path

    make_project("p", "instance")
    folder = cvat_fixture(tmp_path)
    xml = folder / "annotations.xml"
    text = xml.read_text()
    for old, new in change:
        text = text.replace(old, new)
    xml.write_text(text)
    before = snapshot(workspace)
    with pytest.raises(InvalidInput, match=message):
        import_path(workspace, "p", folder, format="cvat")
    assert snapshot(workspace) == before


def test_cvat_import_through_the_service_is_detected(workspace, make_project, tmp_path):
    from labelloop.services.data.importing import import_path

    make_project("p", "instance")
    report = import_path(workspace, "p", cvat_fixture(tmp_path), format="auto")
    assert (report.format, report.items_added, report.annotations_added) == ("cvat", 2, 2)
    assert report.classes_added == ["car", "plate"]


# --- the peers' own readers (label-studio-sdk, datumaro) read our exports -----------------------------------------

PEER_PYTHON = {"labelstudio": "LABELLOOP_LS_SDK_PYTHON", "cvat": "LABELLOOP_DATUMARO_PYTHON"}
PEER_PACKAGE = {"labelstudio": "label-studio-sdk", "cvat": "datumaro"}
# what pip would change in labelloop's venv to install them (pip install --dry-run -c constraints.txt)
PEER_CONFLICT = {"labelstudio": "numpy 2.2.6 and opencv-python-headless 4.12", "cvat": "opencv-python-headless 4.14 and pillow 12.3"}


def peer_python(fmt: str) -> str:
    variable = PEER_PYTHON[fmt]
    python = os.environ.get(variable)
    if not python:
        pytest.skip(f"{variable} is not set: {PEER_PACKAGE[fmt]} cannot be installed into labelloop's venv (it "
                    f"would replace the locked versions with {PEER_CONFLICT[fmt]}); set {variable} to a Python of a "
                    f"separate venv that has it")
    return python


def peer_view(bundle) -> dict[str, list]:
    """What a peer reader should find in our export of `bundle`, in tests/peer_readers.py's terms."""
    found = defaultdict(list)
    for entry in bundle.entries:
        name = Path(entry.name).name
        for shape in entry.shapes:
            if isinstance(shape, Box):
                found[name].append(["box", shape.label, [shape.x0, shape.y0, shape.x1, shape.y1]])
            elif isinstance(shape, Polygon):
                found[name].extend(["polygon", shape.label, [c for point in part for c in point]] for part in shape.parts)
            elif isinstance(shape, Mask):
                found[name].append(["mask", shape.label, peer_readers.mask_digest(rle.decode(shape))])
    return {name: sorted(shapes, key=str) for name, shapes in found.items()}


def assert_same_shapes(peer: dict, ours: dict) -> None:
    assert peer.keys() == ours.keys()
    for name, shapes in ours.items():
        assert len(peer[name]) == len(shapes), name
        unmatched = list(peer[name])
        for kind, label, data in shapes:  # the peer may order equal-looking shapes differently: match each one
            def close(other) -> bool:
                if other[:2] != [kind, label]:
                    return False
                if kind == "mask":
                    return other[2] == data
                return len(other[2]) == len(data) and max(abs(a - b) for a, b in zip(other[2], data)) <= 0.5
            match = next((other for other in unmatched if close(other)), None)
            assert match is not None, (name, kind, label)
            unmatched.remove(match)


@pytest.mark.shared_data
@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_the_peers_own_reader_reads_our_export(fmt, tmp_path):
    python = peer_python(fmt.name)
    raccoon = VocFormat().read(shared_data("raccoon"), ProjectKind.detection)
    raccoon.entries = raccoon.entries[:20]
    coco = CocoFormat().read(shared_data("coco128", "annotations", "instances_train2017.json"), ProjectKind.instance)
    crowd = [e for e in coco.entries if any(isinstance(s, Mask) for s in e.shapes)]
    coco.entries = crowd[:4] + [e for e in coco.entries if e not in crowd][:10]
    lucchi = tmp_path / "lucchi"
    for sub in ("images", "masks"):
        (lucchi / sub).mkdir(parents=True)
        (lucchi / sub / "slice_000.png").symlink_to(shared_data("lucchi_mito", "train", sub, "slice_000.png"))
    masks = MasksFormat().read(lucchi, ProjectKind.semantic)
    for tag, bundle, kind in (("raccoon", raccoon, ProjectKind.detection), ("coco", coco, ProjectKind.instance),
                              ("lucchi", masks, ProjectKind.semantic)):
        _, _, out = round_trip(fmt, bundle, kind, tmp_path / tag)
        run = subprocess.run([python, str(Path(peer_readers.__file__)), fmt.name, str(out)],
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        assert_same_shapes(json.loads(run.stdout.strip().splitlines()[-1]), peer_view(bundle))


# --- property tests: the conversions at each format's edge ------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5000), st.integers(1, 5000), st.data())
def test_label_studio_percent_boxes_and_points_come_back_within_a_thousandth_of_a_pixel(width, height, data):
    from labelloop.formats.labelstudio import _Reader

    xs = sorted(data.draw(st.lists(st.floats(0, width), min_size=2, max_size=2)))
    ys = sorted(data.draw(st.lists(st.floats(0, height), min_size=2, max_size=2)))
    shapes = [Box("a", xs[0], ys[0], xs[1], ys[1]), Polygon("a", (((xs[0], ys[0]), (xs[1], ys[0]), (xs[1], ys[1])),))]
    results = labelstudio_writer.shape_results(shapes, width, height)
    box, polygon = _Reader(ProjectKind.instance, Path("."), "t.json")._results(results, (width, height), "t", None)
    expected = (xs[0], ys[0], xs[1], ys[1])
    assert max(abs(a - b) for a, b in zip((box.x0, box.y0, box.x1, box.y1), expected)) < 1e-3
    assert max(abs(a - b) for p, q in zip(polygon.parts[0], shapes[1].parts[0]) for a, b in zip(p, q)) < 1e-3


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.floats(0, 1), st.integers(0, 2**31))
def test_cvat_masks_come_back_pixel_identical(height, width, density, seed):
    import xml.etree.ElementTree as ET

    from labelloop.formats import cvat

    mask = np.random.default_rng(seed).random((height, width)) < density
    size, counts = rle.encode(mask)
    image = ET.Element("image")
    written = cvat._element(image, Mask("a", size, counts, attributes={"kind": "x"}), width, height)
    assert written == bool(mask.any())
    if written:
        shape = cvat._shape(image[0], width, height, "t", [])
        assert np.array_equal(rle.decode(shape), mask) and shape.attributes == {"kind": "x"}
