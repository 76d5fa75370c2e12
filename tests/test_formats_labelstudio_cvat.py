"""Label Studio JSON and CVAT for images 1.1 XML: round trips on real data, files those tools write, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from formats_support import shared_data
from labelloop.domain import Box, ClassLabel, Mask, Polygon
from labelloop.formats import labelstudio_writer
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
