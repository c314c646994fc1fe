"""DICOM films as PACS send them read as the PNG they were made from: photometric interpretations, VOI
window and LUT, bit depths and the compressed transfer syntaxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from chestdet.core.imaging import ImageReadError, dicom_pixels, probe_image, read_image, rescale_to_uint8
from tests.conftest import SAMPLE_IMAGES
from tests.support.dicom_films import film_dataset, gray_from_png, make_film

PNG = sorted(SAMPLE_IMAGES.glob("*.png"))[0]
LOSSLESS = ("mono2-8bit", "mono1-12bit-window", "mono2-12bit-voi-lut", "jpeg2000", "jpeg-lossless", "rle")


@pytest.fixture(scope="module")
def gray() -> np.ndarray:
    return gray_from_png(PNG, 256)


@pytest.mark.parametrize("kind", LOSSLESS)
def test_lossless_films_read_back_as_the_png_they_were_made_from(tmp_path: Path, gray: np.ndarray, kind: str):
    film = make_film(PNG, tmp_path / f"{kind}.dcm", kind, size=256)
    pixels = read_image(film)
    assert pixels.dtype == np.uint8 and pixels.shape == gray.shape
    assert np.array_equal(pixels, gray)
    assert probe_image(film).format == "DICOM"


def test_jpeg_baseline_reads_close_to_the_png(tmp_path: Path, gray: np.ndarray):
    film = make_film(PNG, tmp_path / "baseline.dcm", "jpeg-baseline", size=256)
    assert pydicom.dcmread(film).file_meta.TransferSyntaxUID == pydicom.uid.JPEGBaseline8Bit
    assert np.abs(read_image(film).astype(int) - gray).mean() < 3


def test_sixteen_bits_without_a_voi_stretch_over_their_own_range(tmp_path: Path, gray: np.ndarray):
    film = make_film(PNG, tmp_path / "deep.dcm", "mono2-16bit", size=256)
    assert np.array_equal(read_image(film), rescale_to_uint8(gray))


def test_the_window_maps_its_own_range_onto_the_8_bits_not_the_image_range(gray: np.ndarray):
    ds = film_dataset(gray, "mono1-12bit-window")
    ds.WindowCenter, ds.WindowWidth = 3000, 2000  # only the darkest part of the film (MONOCHROME1: high = dark)
    pixels = dicom_pixels(ds, "window.dcm")
    stored = (255 - gray.astype(np.float64)) * 16
    expected = 255 - np.clip(np.round(((stored - 2999.5) / 1999 + 0.5) * 4095) * 255 / 4095, 0, 255)
    assert np.abs(pixels.astype(int) - expected).max() <= 1
    assert (pixels == 255).mean() > 0.3  # everything brighter than the window is white, not stretched


def test_an_8_bit_film_is_used_as_stored(gray: np.ndarray):
    dim = (gray // 2 + 10).astype(np.uint8)
    assert np.array_equal(dicom_pixels(film_dataset(dim, "mono2-8bit"), "dim.dcm"), dim)


def test_undecodable_and_pixel_less_films_give_one_reason_each(tmp_path: Path, gray: np.ndarray):
    truncated = film_dataset(gray, "mono2-8bit")
    truncated.PixelData = truncated.PixelData[: len(truncated.PixelData) // 2]
    truncated.save_as(tmp_path / "truncated.dcm", enforce_file_format=True)
    bare = film_dataset(gray, "mono2-8bit")
    del bare.PixelData
    bare.save_as(tmp_path / "bare.dcm", enforce_file_format=True)
    with pytest.raises(ImageReadError, match=r"truncated\.dcm: cannot decode DICOM pixel data"):
        read_image(tmp_path / "truncated.dcm")
    with pytest.raises(ImageReadError, match="without pixel data"):
        dicom_pixels(pydicom.dcmread(tmp_path / "bare.dcm"), tmp_path / "bare.dcm")
