"""Reading images of every mode as 8-bit, and choosing the bytes a record stores."""

import hashlib
import time

import cv2
import numpy as np
import pytest

from chestdet.core.imaging import ImageReadError, probe_image, read_image, stored_image
from tests.conftest import SAMPLE_IMAGES
from tests.support import image_makers as make

NIH_IMAGE = SAMPLE_IMAGES / "00000032_037.png"


def decode(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def test_real_nih_png_is_8_bit_gray_1024():
    info = probe_image(NIH_IMAGE)
    assert (info.width, info.height, info.format, info.mode) == (1024, 1024, "PNG", "L")
    pixels = read_image(NIH_IMAGE)
    assert pixels.shape == (1024, 1024) and pixels.dtype == np.uint8


def test_real_nih_png_is_stored_byte_for_byte():
    stored = stored_image(NIH_IMAGE)
    assert hashlib.sha256(stored.data).digest() == hashlib.sha256(NIH_IMAGE.read_bytes()).digest()
    assert (stored.format, stored.width, stored.height, stored.conversion) == ("png", 1024, 1024, None)


@pytest.mark.parametrize(
    "writer, fmt, name",
    [(make.write_gray, "PNG", "gray.png"), (make.write_rgb, "PNG", "rgb.png"),
     (make.write_gray, "JPEG", "gray.jpg"), (make.write_rgb, "JPEG", "rgb.jpg")],
)
def test_8_bit_gray_and_rgb_png_and_jpeg_pass_through_unchanged(tmp_path, writer, fmt, name):
    path = writer(tmp_path / name, fmt=fmt)
    stored = stored_image(path)
    assert stored.data == path.read_bytes()
    assert stored.conversion is None
    assert stored.format == {"PNG": "png", "JPEG": "jpeg"}[fmt]
    assert (stored.width, stored.height) == (64, 48)


def test_rgb_png_is_read_in_rgb_order(tmp_path):
    pixels = read_image(make.write_rgb(tmp_path / "rgb.png"))
    gray = make.gradient()
    assert pixels.shape == (48, 64, 3)
    np.testing.assert_array_equal(pixels[:, :, 0], gray)
    np.testing.assert_array_equal(pixels[:, :, 1], 255 - gray)


def test_rgba_png_becomes_8_bit_without_alpha(tmp_path):
    stored = stored_image(make.write_rgba(tmp_path / "rgba.png"))
    assert stored.format == "png" and stored.conversion == "PNG RGBA -> 8-bit gray"
    np.testing.assert_array_equal(decode(stored.data), make.gradient())


def test_palette_png_becomes_8_bit_gray(tmp_path):
    stored = stored_image(make.write_palette(tmp_path / "palette.png"))
    assert stored.conversion == "PNG palette -> 8-bit gray"
    np.testing.assert_array_equal(decode(stored.data), make.gradient())


def test_16_bit_gray_png_is_stretched_to_8_bit(tmp_path):
    stored = stored_image(make.write_gray16(tmp_path / "gray16.png"))
    assert stored.conversion == "PNG 16-bit gray -> 8-bit gray"
    pixels = decode(stored.data)
    assert pixels.dtype == np.uint8 and pixels.min() == 0 and pixels.max() == 255
    source = make.gradient().astype(int)
    order = np.argsort(source, axis=None, kind="stable")
    assert np.all(np.diff(pixels.ravel()[order].astype(int)) >= 0)  # brighter stays brighter


def test_16_bit_rgb_png_is_not_passed_through(tmp_path):
    path = tmp_path / "rgb16.png"
    gray = make.gradient().astype(np.uint16) * 200
    cv2.imwrite(str(path), np.dstack([gray, gray // 2, gray // 3]))
    stored = stored_image(path)
    assert stored.conversion == "PNG 16-bit RGB -> 8-bit RGB"
    assert decode(stored.data).dtype == np.uint8


def test_max_size_downscales_keeping_the_aspect_ratio(tmp_path):
    stored = stored_image(make.write_gray(tmp_path / "gray.png"), max_size=32)
    assert (stored.width, stored.height, stored.original_width, stored.original_height) == (32, 24, 64, 48)
    assert stored.conversion == "downscaled to 32"
    assert decode(stored.data).shape == (24, 32)


def test_max_size_downscales_a_real_nih_image(tmp_path):
    stored = stored_image(NIH_IMAGE, max_size=640)
    assert (stored.width, stored.height, stored.format) == (640, 640, "png")
    assert decode(stored.data).shape == (640, 640)


def test_an_image_within_max_size_is_not_touched(tmp_path):
    path = make.write_gray(tmp_path / "gray.png")
    assert stored_image(path, max_size=64).data == path.read_bytes()


@pytest.mark.parametrize("function", [read_image, stored_image])
def test_truncated_png_is_refused(tmp_path, function):
    path = make.write_truncated(NIH_IMAGE, tmp_path / "cut.png")
    with pytest.raises(ImageReadError) as caught:
        function(path)
    assert caught.value.path == str(path)
    assert "truncated" in caught.value.reason or "corrupt" in caught.value.reason


def test_png_with_a_corrupted_chunk_is_refused_before_being_stored(tmp_path):
    data = bytearray(NIH_IMAGE.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path = tmp_path / "flipped.png"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match="corrupt, truncated or unreadable PNG"):
        stored_image(path)


@pytest.mark.parametrize("function", [read_image, stored_image])
def test_truncated_jpeg_is_refused(tmp_path, function):
    path = make.write_truncated(make.write_rgb(tmp_path / "rgb.jpg", fmt="JPEG"), tmp_path / "cut.jpg")
    with pytest.raises(ImageReadError, match=r"truncated JPEG \(no end-of-image marker\)"):
        function(path)


@pytest.mark.parametrize("function", [probe_image, read_image, stored_image])
def test_empty_and_missing_files_are_refused_by_name(tmp_path, function):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty\.png: empty file"):
        function(empty)
    with pytest.raises(ImageReadError, match=r"gone\.png: file not found"):
        function(tmp_path / "gone.png")


@pytest.mark.parametrize("function", [probe_image, read_image, stored_image])
def test_decompression_bomb_header_is_refused_before_decoding(tmp_path, function):
    path = make.write_bomb_png(tmp_path / "bomb.png")
    assert path.stat().st_size < 200_000
    started = time.perf_counter()
    with pytest.raises(ImageReadError, match="possible decompression bomb|decompression bomb refused"):
        function(path)
    assert time.perf_counter() - started < 2.0


def test_text_named_png_is_refused(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image at all")
    with pytest.raises(ImageReadError, match="unreadable|not a readable image"):
        stored_image(path)
