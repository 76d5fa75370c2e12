"""Watershed instance splitting, polygon outlines, and the streaming patch/augmentation dataset generator."""

from __future__ import annotations

import hashlib
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labelloop.media import decode_png
from labelloop.ml.dataset_generator import (
    AugmentSpec,
    Augmenter,
    PairSource,
    PatchSpec,
    crop,
    folder_sources,
    generate,
)
from labelloop.ml.watershed import instances_to_polygons, split_instances

LUCCHI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lucchi_mito" / "train"


def _disk(shape: tuple[int, int], centre: tuple[int, int], radius: int) -> np.ndarray:
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


# --- watershed -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seeds", ["distance", "probability"])
def test_two_touching_disks_become_two_instances(seeds):
    left, right = _disk((100, 140), (50, 45), 25), _disk((100, 140), (50, 90), 25)
    probability = None
    if seeds == "probability":
        rows, cols = np.mgrid[:100, :140]
        probability = np.exp(-((rows - 50) ** 2 + (cols - 45) ** 2) / 400) + np.exp(
            -((rows - 50) ** 2 + (cols - 90) ** 2) / 400
        )
    labels = split_instances(left | right, probability=probability, seeds=seeds)
    assert labels.dtype == np.int32
    assert sorted(np.unique(labels)) == [0, 1, 2]
    best = sorted(max(_iou(labels == k, disk) for k in (1, 2)) for disk in (left, right))
    assert best[0] > 0.8
    assert not labels[~(left | right)].any()


def test_min_size_drops_small_blobs_and_renumbers():
    foreground = _disk((80, 80), (40, 40), 15)
    foreground[2:4, 2:4] = True  # a 4-pixel speck, its own component
    labels = split_instances(foreground, min_size=20)
    assert sorted(np.unique(labels)) == [0, 1]
    assert not labels[2:4, 2:4].any()
    assert split_instances(foreground, min_size=0)[2:4, 2:4].all()


def test_split_instances_on_empty_and_bad_input():
    assert not split_instances(np.zeros((10, 10), bool)).any()
    with pytest.raises(ValueError, match="probability"):
        split_instances(np.ones((10, 10), bool), seeds="probability")
    with pytest.raises(ValueError, match="2-D"):
        split_instances(np.ones((2, 10, 10), bool))
    with pytest.raises(ValueError, match="shape"):
        split_instances(np.ones((10, 10), bool), probability=np.ones((5, 5)), seeds="probability")


def test_square_polygon_has_pixel_centre_corners():
    labels = np.zeros((10, 10), np.int32)
    labels[3:7, 2:6] = 4  # columns 2..5, rows 3..6
    [(label_id, points)] = instances_to_polygons(labels)
    assert label_id == 4
    assert sorted(points) == [(2.5, 3.5), (2.5, 6.5), (5.5, 3.5), (5.5, 6.5)]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 20), st.integers(0, 20), st.integers(2, 15), st.integers(2, 15))
def test_rectangle_polygons_follow_the_pixel_convention(x0, y0, w, h):
    labels = np.zeros((40, 40), np.uint16)
    labels[y0 : y0 + h, x0 : x0 + w] = 1
    [(_, points)] = instances_to_polygons(labels)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    assert (min(xs), max(xs), min(ys), max(ys)) == (x0 + 0.5, x0 + w - 0.5, y0 + 0.5, y0 + h - 0.5)


# --- dataset generator ---------------------------------------------------------------------------------------


@pytest.fixture
def lucchi() -> list[PairSource]:
    if not (LUCCHI / "images" / "slice_000.png").is_file() or not (LUCCHI / "masks" / "slice_000.png").is_file():
        pytest.skip(f"Lucchi mitochondria slices not found under {LUCCHI} (shared data beside the repo)")
    return folder_sources(LUCCHI / "images", LUCCHI / "masks")[:2]


def _synthetic(source_id: str, shape=(96, 120), dtype=np.uint8, seed=0) -> PairSource:
    def load():
        rng = np.random.default_rng(seed)
        top = 255 if dtype == np.uint8 else 60000
        image = rng.integers(0, top, size=shape).astype(dtype)
        mask = np.zeros(shape, np.uint8)
        mask[10:40, 20:70] = 1
        mask[60:80, 5:30] = 2
        return image, mask

    return PairSource(source_id, load)


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_writes_exactly_count_pairs(lucchi, tmp_path):
    manifest = generate(lucchi, tmp_path / "set", count=37, patch=PatchSpec(size=128), seed=3)
    records = list(manifest.records())
    assert sorted(r["index"] for r in records) == list(range(37))
    assert len(list((tmp_path / "set" / "images").iterdir())) == 37
    assert len(list((tmp_path / "set" / "masks").iterdir())) == 37
    for record in records[:5]:
        image = decode_png((tmp_path / "set" / record["image"]).read_bytes())
        mask = decode_png((tmp_path / "set" / record["mask"]).read_bytes())
        assert image.shape == mask.shape == (128, 128)
        assert set(np.unique(mask)) <= {0, 255}  # Lucchi masks are 0/255 and stay so
    settings_file = json.loads((tmp_path / "set" / "dataset.json").read_text())
    assert settings_file["seed"] == 3 and settings_file["sources"] == ["slice_000", "slice_005"]


def test_replaying_the_manifest_gives_the_same_arrays(lucchi, tmp_path):
    spec = AugmentSpec(flips=0.5, rot90=0.5, elastic=0.5, brightness_contrast=0.5, gamma=0.5, noise=0.5, blur=0.5)
    manifest = generate(lucchi, tmp_path / "set", count=12, patch=PatchSpec(size=96), augment=spec, seed=1)
    loaded = {s.source_id: s.load() for s in lucchi}
    augmenter = Augmenter(spec)
    applied = set()
    for record in manifest.records():
        image, mask = crop(*loaded[record["source_id"]], tuple(record["box"]))
        pair = augmenter(image, mask, record["seed"])
        assert pair.transforms == record["transforms"]
        applied |= {t["name"] for t in record["transforms"]}
        np.testing.assert_array_equal(pair.image, decode_png((tmp_path / "set" / record["image"]).read_bytes()))
        np.testing.assert_array_equal(pair.mask, decode_png((tmp_path / "set" / record["mask"]).read_bytes()))
    assert {"ElasticTransform", "GaussNoise"} <= applied


def test_without_augmentation_outputs_are_the_crops(tmp_path):
    source = _synthetic("a")
    manifest = generate([source], tmp_path / "set", count=10, patch=PatchSpec(size=32), augment=AugmentSpec.none())
    image, mask = source.load()
    for record in manifest.records():
        x0, y0, x1, y1 = record["box"]
        assert record["transforms"] == []
        out_image = decode_png((tmp_path / "set" / record["image"]).read_bytes())
        out_mask = decode_png((tmp_path / "set" / record["mask"]).read_bytes())
        np.testing.assert_array_equal(out_image, image[y0:y1, x0:x1])
        np.testing.assert_array_equal(out_mask, mask[y0:y1, x0:x1])


def test_same_seed_same_bytes_different_seed_different(lucchi, tmp_path):
    patch = PatchSpec(size=96, stride=64)
    generate(lucchi, tmp_path / "a", count=30, patch=patch, seed=7)
    generate(lucchi, tmp_path / "b", count=30, patch=patch, seed=7)
    generate(lucchi, tmp_path / "c", count=30, patch=patch, seed=8)
    first = _hashes(tmp_path / "a")
    assert first == _hashes(tmp_path / "b")
    third = _hashes(tmp_path / "c")
    assert first["manifest.jsonl"] != third["manifest.jsonl"]
    assert sum(first[k] != third[k] for k in first if k.startswith("images/")) > 20


def test_worker_processes_write_the_same_bytes_as_one_process(lucchi, tmp_path):
    patch = PatchSpec(size=48, stride=48)
    one = generate(lucchi, tmp_path / "one", count=300, patch=patch, seed=5, workers=1)
    two = generate(lucchi, tmp_path / "two", count=300, patch=patch, seed=5, workers=2)
    assert (one.count, one.empty_count) == (two.count, two.empty_count)
    hashes = _hashes(tmp_path / "one")
    assert len([k for k in hashes if k.startswith("images/")]) == 300
    assert hashes == _hashes(tmp_path / "two")


def test_max_empty_fraction_is_respected(lucchi, tmp_path):
    # Flips and rotations only: they cannot turn a non-empty mask empty, so the files must honour the cap.
    geometric = AugmentSpec(flips=0.5, rot90=0.5, elastic=0, brightness_contrast=0, gamma=0, noise=0, blur=0)
    for fraction, folder in ((0.1, "some"), (0.0, "none")):
        patch = PatchSpec(size=64, max_empty_fraction=fraction)
        manifest = generate(lucchi, tmp_path / folder, count=200, patch=patch, augment=geometric)
        empty_files = sum(
            not decode_png((tmp_path / folder / r["mask"]).read_bytes()).any() for r in manifest.records()
        )
        assert empty_files == manifest.empty_count <= int(fraction * 200)
    # Lucchi at 64 px is mostly background, so the cap, not the natural share, decides the count.
    assert manifest.empty_count == 0


def test_all_empty_sources_need_a_permissive_cap(tmp_path):
    blank = PairSource("blank", lambda: (np.zeros((64, 64), np.uint8), np.zeros((64, 64), np.uint8)))
    with pytest.raises(ValueError, match="max_empty_fraction"):
        generate([blank], tmp_path / "x", count=5, patch=PatchSpec(size=32))
    manifest = generate([blank], tmp_path / "y", count=5, patch=PatchSpec(size=32, max_empty_fraction=1.0))
    assert manifest.empty_count == 5


def test_sixteen_bit_images_and_instance_masks_stay_wide(tmp_path):
    def load():
        rng = np.random.default_rng(0)
        image = rng.integers(1000, 60000, size=(80, 80)).astype(np.uint16)
        mask = np.zeros((80, 80), np.uint16)
        mask[5:40, 5:40], mask[45:75, 30:70] = 300, 1200
        return image, mask

    source, patch = PairSource("wide", load), PatchSpec(size=48)
    raw = generate([source], tmp_path / "raw", count=6, patch=patch, augment=AugmentSpec.none())
    manifest = generate([source], tmp_path / "aug", count=20, patch=patch, seed=2)
    image, mask = load()
    for record in raw.records():
        x0, y0, x1, y1 = record["box"]
        out = decode_png((tmp_path / "raw" / record["image"]).read_bytes())
        assert out.dtype == np.uint16
        np.testing.assert_array_equal(out, image[y0:y1, x0:x1])
    for record in manifest.records():
        out = decode_png((tmp_path / "aug" / record["image"]).read_bytes())
        out_mask = decode_png((tmp_path / "aug" / record["mask"]).read_bytes())
        assert out.dtype == np.uint16 and out.max() > 255
        assert out_mask.dtype == np.uint16 and set(np.unique(out_mask)) <= {0, 300, 1200}


def test_small_sources_are_padded_by_reflection_or_skipped(tmp_path):
    small = _synthetic("small", shape=(40, 50))
    manifest = generate([small], tmp_path / "pad", count=3, patch=PatchSpec(size=64), augment=AugmentSpec.none())
    image, mask = small.load()
    record = next(manifest.records())
    assert record["box"] == [0, 0, 64, 64]
    out = decode_png((tmp_path / "pad" / record["image"]).read_bytes())
    out_mask = decode_png((tmp_path / "pad" / record["mask"]).read_bytes())
    assert out.shape == out_mask.shape == (64, 64)
    np.testing.assert_array_equal(out[:40, :50], image)
    np.testing.assert_array_equal(out, np.pad(image, ((0, 24), (0, 14)), mode="reflect"))
    np.testing.assert_array_equal(out_mask, np.pad(mask, ((0, 24), (0, 14)), mode="reflect"))
    assert out_mask[40:].any()  # reflected objects keep their labels
    with pytest.raises(ValueError, match="pad_small"):
        generate([small], tmp_path / "skip", count=3, patch=PatchSpec(size=64, pad_small=False))


def test_flips_fire_independently(tmp_path):
    flips_only = AugmentSpec(flips=0.5, rot90=0, elastic=0, brightness_contrast=0, gamma=0, noise=0, blur=0)
    manifest = generate([_synthetic("a")], tmp_path / "set", count=80, patch=PatchSpec(size=32), augment=flips_only)
    combos = {tuple(t["name"] for t in r["transforms"]) for r in manifest.records()}
    assert {("HorizontalFlip",), ("VerticalFlip",), ("HorizontalFlip", "VerticalFlip"), ()} == combos


def test_tiff_output_and_refusing_a_non_empty_folder(tmp_path):
    import tifffile

    source = _synthetic("a", dtype=np.uint16)
    manifest = generate([source], tmp_path / "set", count=4, patch=PatchSpec(size=32), image_format="tiff")
    record = next(manifest.records())
    assert record["image"].endswith(".tif")
    assert tifffile.imread(tmp_path / "set" / record["image"]).dtype == np.uint16
    with pytest.raises(ValueError, match="not empty"):
        generate([_synthetic("a")], tmp_path / "set", count=4, patch=PatchSpec(size=32))


def test_streaming_keeps_memory_bounded(tmp_path):
    sources = [_synthetic(f"s{i}", shape=(256, 256), seed=i) for i in range(4)]
    spec = AugmentSpec(flips=0.5, rot90=0.5, elastic=0, brightness_contrast=0.3, gamma=0, noise=0.2, blur=0)
    tracemalloc.start()
    try:
        generate(sources, tmp_path / "set", count=2000, patch=PatchSpec(size=64, stride=32), augment=spec)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    all_patches = 2000 * 64 * 64 * 2  # what holding every image and mask patch would cost: 16 MiB
    assert peak < all_patches / 4, f"peak {peak / 2**20:.1f} MiB"
    assert len(list((tmp_path / "set" / "images").iterdir())) == 2000
