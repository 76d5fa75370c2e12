"""labelloop.media: decode, probe, render and PNG round trips on real and hand-built files."""

from __future__ import annotations

import io
import json
import pickle
import shutil
import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image, ImageFile

from labelloop.errors import InvalidInput
from labelloop.media import (
    DEFAULT_MAX_PIXELS,
    SUFFIXES,
    MediaError,
    PageInfo,
    decode_png,
    encode_png,
    is_image_file,
    probe,
    read,
    render,
    thumbnail,
    to_display,
    verify,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DICOM_DIR = DATA / "dicom_samples"
CR_CHEST = DICOM_DIR / "pydicom_data" / "RG1_UNCR.dcm"
RACCOON = DATA / "raccoon" / "images" / "raccoon-1.jpg"


def _needs(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared test data missing: {path} (the ../shared/data checkout is not available here)")
    return path


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_claiming(width: int, height: int) -> bytes:
    """A valid-looking 8-bit grey PNG whose IHDR claims width×height but whose IDAT is tiny."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _save(tmp_path: Path, name: str, image: Image.Image, **options) -> Path:
    path = tmp_path / name
    image.save(path, **options)
    return path


# --- PNG ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "array",
    [
        np.arange(60, dtype=np.uint8).reshape(6, 10),
        (np.arange(60, dtype=np.uint16).reshape(6, 10) * 1111),
        np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8),
        np.random.default_rng(1).integers(0, 65536, (5, 7, 3), dtype=np.uint16),
        np.random.default_rng(2).integers(0, 65536, (5, 7, 4), dtype=np.uint16),
        np.random.default_rng(3).integers(0, 256, (5, 7, 4), dtype=np.uint8),
    ],
    ids=["grey8", "grey16", "rgb8", "rgb16", "rgba16", "rgba8"],
)
def test_png_round_trip_is_exact_through_encode_decode_and_read(tmp_path, array):
    data = encode_png(array)
    assert np.array_equal(decode_png(data), array)
    path = tmp_path / "image.png"
    path.write_bytes(data)
    (info,) = probe(path)
    assert (info.width, info.height, info.format) == (array.shape[1], array.shape[0], "png")
    assert info.dtype == array.dtype.name
    assert info.channels == (array.shape[2] if array.ndim == 3 else 1)
    got = read(path)
    assert got.dtype == array.dtype and np.array_equal(got, array)


def test_png_channel_order_is_rgb(tmp_path):
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    path = tmp_path / "red.png"
    path.write_bytes(encode_png(red))
    assert read(path)[0, 0].tolist() == [255, 0, 0]
    assert Image.open(io.BytesIO(encode_png(red))).getpixel((0, 0)) == (255, 0, 0)


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from([np.uint8, np.uint16]),
        shape=st.one_of(
            hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12),
            st.tuples(st.integers(1, 12), st.integers(1, 12), st.sampled_from([3, 4])),
        ),
    )
)
def test_encode_decode_png_round_trip_property(array):
    decoded = decode_png(encode_png(array))
    assert decoded.dtype == array.dtype and np.array_equal(decoded, array)


def test_palette_png_decodes_to_indices_but_reads_as_rgb(tmp_path):
    indices = np.array([[0, 1], [2, 1]], np.uint8)
    image = Image.fromarray(indices, "P")
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0])
    path = _save(tmp_path, "mask.png", image)
    assert np.array_equal(decode_png(path.read_bytes()), indices)
    rgb = read(path)
    assert rgb.shape == (2, 2, 3) and rgb[0, 1].tolist() == [255, 0, 0]


def test_pillow_modes_map_to_documented_arrays(tmp_path):
    grey_palette = Image.fromarray(np.array([[0, 1], [2, 3]], np.uint8), "P")
    grey_palette.putpalette([v for i in range(4) for v in (i * 80,) * 3])
    assert read(_save(tmp_path, "gp.png", grey_palette)).tolist() == [[0, 80], [160, 240]]

    bilevel = Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8)).convert("1")
    one_bit = read(_save(tmp_path, "bits.png", bilevel))
    assert one_bit.dtype == np.uint8 and one_bit.tolist() == [[0, 255], [255, 0]]

    la = Image.fromarray(np.array([[[10, 200], [20, 100]]], np.uint8), "LA")
    la_path = _save(tmp_path, "la.png", la)
    assert probe(la_path)[0].channels == 2
    assert read(la_path).shape == (1, 2, 2)
    assert render(la_path).shape == (1, 2)

    rgba = np.random.default_rng(4).integers(0, 256, (3, 5, 4), dtype=np.uint8)
    rgba_path = _save(tmp_path, "rgba.png", Image.fromarray(rgba, "RGBA"))
    assert np.array_equal(read(rgba_path), rgba)
    assert np.array_equal(render(rgba_path), rgba[..., :3])


@pytest.mark.parametrize("fmt,suffix", [("BMP", ".bmp"), ("GIF", ".gif"), ("WEBP", ".webp")])
def test_other_pillow_formats_read(tmp_path, fmt, suffix):
    rgb = np.zeros((8, 12, 3), np.uint8)
    rgb[:, 6:] = (0, 0, 255)
    options = {"lossless": True} if fmt == "WEBP" else {}
    path = _save(tmp_path, "im" + suffix, Image.fromarray(rgb), format=fmt, **options)
    (info,) = probe(path)
    assert (info.format, info.width, info.height, info.channels) == (fmt.lower(), 12, 8, 3)
    assert np.array_equal(read(path), rgb)


def test_exif_orientation_is_reported_not_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _save(tmp_path, "rotated.jpg", Image.new("RGB", (40, 20), "white"), exif=exif)
    (info,) = probe(path)
    assert info.metadata["exif_orientation"] == 6
    assert read(path).shape == (20, 40, 3)


# --- JPEG --------------------------------------------------------------------------------------------------------


@pytest.mark.shared_data
def test_real_jpeg_probe_read_render_verify():
    path = _needs(RACCOON)
    (info,) = probe(path)
    array = read(path)
    assert (info.format, info.dtype, info.channels) == ("jpeg", "uint8", 3)
    assert array.shape == (info.height, info.width, 3) and array.dtype == np.uint8
    assert np.array_equal(render(path), array)
    assert verify(path) == [info]


@pytest.mark.shared_data
def test_truncated_jpeg_fails_instead_of_padding_grey(tmp_path):
    data = _needs(RACCOON).read_bytes()
    path = tmp_path / "half.jpg"
    path.write_bytes(data[: len(data) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert probe(path)[0].width > 0  # the header is intact
    for call in (read, verify, render):
        with pytest.raises(MediaError, match="half.jpg: .*truncated"):
            call(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


# --- TIFF --------------------------------------------------------------------------------------------------------


def test_multipage_16bit_tiff(tmp_path):
    stack = np.random.default_rng(5).integers(0, 65536, (3, 20, 30), dtype=np.uint16)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, photometric="minisblack")
    infos = probe(path)
    assert [i.index for i in infos] == [0, 1, 2]
    assert all((i.width, i.height, i.dtype, i.channels, i.format) == (30, 20, "uint16", 1, "tiff") for i in infos)
    third = read(path, index=2)
    assert third.dtype == np.uint16 and np.array_equal(third, stack[2])
    assert verify(path) == infos
    with pytest.raises(MediaError, match="stack.tif: has no page 3; it has 3 pages"):
        read(path, index=3)


def test_tiff_pages_of_different_sizes_and_rgb(tmp_path):
    rgb = np.random.default_rng(6).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    grey = np.random.default_rng(7).integers(0, 256, (5, 7), dtype=np.uint8)
    path = tmp_path / "mixed.tiff"
    with tifffile.TiffWriter(path) as writer:
        writer.write(rgb, photometric="rgb")
        writer.write(grey)
    first, second = probe(path)
    assert (first.width, first.height, first.channels) == (12, 10, 3)
    assert (second.width, second.height, second.channels) == (7, 5, 1)
    assert np.array_equal(read(path, 0), rgb) and np.array_equal(read(path, 1), grey)
    assert np.array_equal(render(path, 0), rgb)


def test_planar_rgb_tiff_comes_back_interleaved(tmp_path):
    rgb = np.random.default_rng(8).integers(0, 65536, (9, 11, 3), dtype=np.uint16)
    path = tmp_path / "planar.tif"
    tifffile.imwrite(path, np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate")
    assert probe(path)[0].channels == 3
    assert np.array_equal(read(path), rgb)


def test_ome_tiff_pixel_size_in_metadata(tmp_path):
    path = tmp_path / "cells.ome.tif"
    tifffile.imwrite(path, np.zeros((2, 8, 8), np.uint16), metadata={"axes": "ZYX", "PhysicalSizeX": 0.25,
                                                                     "PhysicalSizeY": 0.5})
    meta = probe(path)[0].metadata
    assert meta["physical_size_x"] == 0.25 and meta["physical_size_y"] == 0.5


# --- DICOM -------------------------------------------------------------------------------------------------------


def _dicom_files() -> list[Path]:
    return sorted(DICOM_DIR.glob("*/*.dcm")) if DICOM_DIR.exists() else []


@pytest.mark.shared_data
@pytest.mark.parametrize("path", _dicom_files() or [DICOM_DIR / "missing.dcm"], ids=lambda p: p.name)
def test_every_sample_dicom_probes_reads_and_renders(path):
    _needs(path)
    infos = probe(path)
    assert infos and all(isinstance(i, PageInfo) and i.format == "dicom" for i in infos)
    json.dumps(infos[0].metadata, allow_nan=False)  # JSON-safe
    assert infos[0].metadata["Modality"]
    array = read(path)
    assert array.dtype.name == infos[0].dtype
    assert array.shape[:2] == (infos[0].height, infos[0].width)
    assert (array.shape[2] if array.ndim == 3 else 1) == infos[0].channels
    shown = render(path)
    assert shown.dtype == np.uint8 and shown.shape[:2] == array.shape[:2]


@pytest.mark.shared_data
def test_multiframe_seg_gives_one_pageinfo_per_frame():
    path = _needs(DICOM_DIR / "pydicom_data" / "liver.dcm")
    infos = probe(path)
    assert len(infos) == 3 and [i.index for i in infos] == [0, 1, 2]
    assert read(path, index=2).shape == (512, 512)
    assert len(verify(path)) == 3


@pytest.mark.shared_data
def test_dicom_modality_lut_and_metadata():
    ct = _needs(DICOM_DIR / "pydicom_wheel" / "CT_small.dcm")
    (info,) = probe(ct)
    assert info.metadata["RescaleIntercept"] == -1024 and info.metadata["PhotometricInterpretation"] == "MONOCHROME2"
    assert "PixelData" not in info.metadata
    import pydicom

    raw = pydicom.dcmread(ct).pixel_array
    assert np.array_equal(read(ct), raw.astype(np.int32) - 1024)
    mr = _needs(DICOM_DIR / "pydicom_data" / "MR2_UNCR.dcm")  # non-integer slope -> float32
    assert read(mr).dtype == np.float32


@pytest.mark.shared_data
def test_colour_and_big_endian_dicom():
    us = read(_needs(DICOM_DIR / "pydicom_data" / "US1_UNCR.dcm"))
    assert us.shape == (480, 640, 3) and us.dtype == np.uint8
    big = read(_needs(DICOM_DIR / "pydicom_wheel" / "ExplVR_BigEnd.dcm"))
    assert big.shape == (60, 80, 3)


@pytest.mark.shared_data
def test_cr_chest_xray_renders_bone_bright_and_air_dark():
    shown = render(_needs(CR_CHEST)).astype(float)  # MONOCHROME1, file window 15000/30000
    height, width = shown.shape

    def mean(y0, y1, x0, x1):
        return shown[int(y0 * height) : int(y1 * height), int(x0 * width) : int(x1 * width)].mean()

    spine = mean(0.25, 0.55, 0.45, 0.52)
    left_lung, right_lung = mean(0.25, 0.55, 0.22, 0.30), mean(0.25, 0.55, 0.65, 0.75)
    air_left, air_right = mean(0.03, 0.08, 0.0, 0.10), mean(0.03, 0.08, 0.85, 0.95)  # above the shoulders
    assert spine > 190
    assert spine > left_lung + 30 and spine > right_lung + 30
    assert air_left < 100 and air_right < 100


@pytest.mark.shared_data
def test_explicit_window_overrides_the_files():
    path = _needs(CR_CHEST)
    default = render(path)
    narrow = render(path, window=(6000, 4000))
    assert not np.array_equal(default, narrow)
    assert (narrow == 255).mean() > (default == 255).mean()  # MONOCHROME1: values under the window turn white


@pytest.mark.shared_data
def test_extensionless_dicom_is_recognised_by_magic(tmp_path):
    copy = tmp_path / "IM0001"
    shutil.copy(_needs(DICOM_DIR / "pydicom_wheel" / "CT_small.dcm"), copy)
    assert is_image_file(copy)
    assert probe(copy)[0].format == "dicom"
    with copy.open("rb") as handle:
        assert read(handle).shape == (128, 128)


# --- display -----------------------------------------------------------------------------------------------------


def test_16bit_percentile_display_spans_full_range():
    array = np.random.default_rng(9).integers(1000, 4000, (64, 64), dtype=np.uint16)
    shown = to_display(array)
    assert shown.dtype == np.uint8 and shown.min() == 0 and shown.max() == 255


def test_to_display_window_invert_and_uint8_passthrough():
    ramp = np.arange(0, 1000, dtype=np.int16).reshape(10, 100)
    windowed = to_display(ramp, window=(500, 200))
    assert windowed[0, 0] == 0 and windowed[-1, -1] == 255 and windowed[5, 0] == 128
    assert np.array_equal(to_display(ramp, window=(500, 200), invert=True), 255 - windowed)
    image = np.random.default_rng(10).integers(0, 256, (4, 4, 4), dtype=np.uint8)
    assert np.array_equal(to_display(image), image[..., :3])
    assert to_display(np.zeros((3, 3), np.float32)).max() == 0
    with pytest.raises(InvalidInput, match="window width"):
        to_display(ramp, window=(500, 0))


def test_thumbnail_keeps_aspect_and_never_upscales():
    image = np.full((300, 1200, 3), 200, np.uint8)
    small = thumbnail(image, max_side=256)
    assert small.shape == (64, 256, 3) and small.dtype == np.uint8 and small.mean() == 200
    assert thumbnail(np.zeros((10, 20), np.uint8)).shape == (10, 20)
    with pytest.raises(InvalidInput, match="to_display"):
        thumbnail(np.zeros((10, 10), np.uint16))


# --- errors, limits, sources -------------------------------------------------------------------------------------


def test_corrupt_empty_and_text_files_raise_media_error_naming_the_file(tmp_path):
    cases = {
        "random.png": b"\x89PNG\r\n\x1a\n" + np.random.default_rng(11).bytes(200),
        "noise.png": np.random.default_rng(12).bytes(300),
        "empty.png": b"",
        "notes.png": b"this is a text file, not an image\n" * 3,
        "broken.tif": b"II*\x00" + b"\xff" * 40,
        "fake.dcm": b"hello, I am not DICOM\n" * 20,
    }
    for file_name, content in cases.items():
        path = tmp_path / file_name
        path.write_bytes(content)
        for call in (probe, read):
            with pytest.raises(MediaError) as caught:
                call(path)
            assert str(caught.value).startswith(str(path) + ": "), str(caught.value)


def test_missing_file_and_unknown_stream_names():
    with pytest.raises(MediaError, match="nowhere.png: no such file"):
        probe("/nonexistent/nowhere.png")
    with pytest.raises(MediaError, match=r"^upload\.png: is not a valid PNG"):
        read(io.BytesIO(b"not an image"), name="upload.png")


def test_streams_text_mode_and_unseekable(tmp_path):
    path = tmp_path / "grey.png"
    path.write_bytes(encode_png(np.full((4, 6), 9, np.uint8)))
    with path.open("r", encoding="latin-1") as text, pytest.raises(MediaError, match="text mode; open it with 'rb'"):
        read(text)

    class Unseekable(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            return self._data.readinto(buffer)

    assert read(io.BufferedReader(Unseekable(path.read_bytes()))).shape == (4, 6)


def test_truncated_tiff_fails_on_read(tmp_path):
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.ones((64, 64), np.uint16))
    path = tmp_path / "cut.tif"
    path.write_bytes(buffer.getvalue()[:4000])
    with pytest.raises(MediaError, match=r"cut\.tif: cannot decode it as TIFF"):
        read(path)


@pytest.mark.shared_data
def test_truncated_dicom_fails_on_read(tmp_path):
    data = _needs(DICOM_DIR / "pydicom_wheel" / "CT_small.dcm").read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[:-5000])
    assert probe(path)[0].width == 128  # header intact
    for call in (read, verify):
        with pytest.raises(MediaError, match=r"cut\.dcm: cannot decode it as DICOM"):
            call(path)
    path.write_bytes(data[:1000])
    with pytest.raises(MediaError, match=r"cut\.dcm: has no image header"):
        probe(path)


def test_header_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_claiming(40000, 40000))
    assert path.stat().st_size < 200
    tracemalloc.start()
    started = time.perf_counter()
    try:
        for call in (probe, read, verify, render):
            with pytest.raises(MediaError) as caught:
                call(path)
            message = str(caught.value)
            assert message.startswith(f"{path}: 40000×40000 = 1.6 gigapixels is over the limit of 268 megapixels")
            assert "LABELLOOP_MAX_PIXELS" in message
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 1.0
    assert peak < 16 * 1024 * 1024
    with pytest.raises(MediaError, match="gigapixels is over the limit"):
        decode_png(path.read_bytes())


def test_size_between_pillows_limit_and_ours_is_accepted(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(_png_claiming(15000, 15000))  # 225 Mpx: Image.open would raise DecompressionBombError
    assert probe(path)[0].width == 15000


def test_max_pixels_argument_and_environment(tmp_path, monkeypatch):
    path = tmp_path / "small.png"
    path.write_bytes(encode_png(np.zeros((20, 20), np.uint8)))
    assert DEFAULT_MAX_PIXELS == 16384 * 16384
    with pytest.raises(MediaError, match="20×20 = 400 pixels is over the limit of 100 pixels"):
        read(path, max_pixels=100)
    monkeypatch.setenv("LABELLOOP_MAX_PIXELS", "399")
    with pytest.raises(MediaError, match="over the limit of 399 pixels"):
        probe(path)
    assert probe(path, max_pixels=400)[0].width == 20
    monkeypatch.setenv("LABELLOOP_MAX_PIXELS", "lots")
    with pytest.raises(InvalidInput, match="LABELLOOP_MAX_PIXELS must be a positive"):
        probe(path)


def test_misnamed_file_is_decoded_by_its_content(tmp_path):
    path = tmp_path / "actually_png.jpg"
    path.write_bytes(encode_png(np.full((3, 3), 7, np.uint8)))
    assert probe(path)[0].format == "png" and read(path).max() == 7


def test_media_error_is_invalid_input_and_picklable():
    error = MediaError("scan.tif", "is broken")
    assert isinstance(error, InvalidInput) and str(error) == "scan.tif: is broken"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.name, copy.reason, str(copy)) == ("scan.tif", "is broken", "scan.tif: is broken")


def test_suffixes_and_is_image_file(tmp_path):
    assert SUFFIXES == {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".bmp", ".gif", ".webp"}
    assert is_image_file("a/B.PNG") and is_image_file(Path("x.tiff"))
    notes = tmp_path / "notes.txt"
    notes.write_text("hi")
    assert not is_image_file(notes) and not is_image_file(tmp_path / "missing")
