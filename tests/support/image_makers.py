"""Write images of every mode a user can have, and broken ones, for the tests."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def gradient(width: int = 64, height: int = 48) -> np.ndarray:
    """A uint8 (H, W) ramp, so that conversions that lose or scramble values are visible."""
    return (np.arange(width * height, dtype=np.uint32).reshape(height, width) % 251).astype(np.uint8)


def write_gray(path: Path, width: int = 64, height: int = 48, fmt: str = "PNG") -> Path:
    Image.fromarray(gradient(width, height), "L").save(path, fmt)
    return path


def write_rgb(path: Path, width: int = 64, height: int = 48, fmt: str = "PNG") -> Path:
    gray = gradient(width, height)
    Image.fromarray(np.dstack([gray, 255 - gray, gray // 2]), "RGB").save(path, fmt)
    return path


def write_rgba(path: Path, width: int = 64, height: int = 48) -> Path:
    gray = gradient(width, height)
    Image.fromarray(np.dstack([gray, gray, gray, np.full_like(gray, 200)]), "RGBA").save(path, "PNG")
    return path


def write_gray16(path: Path, width: int = 64, height: int = 48) -> Path:
    values = (gradient(width, height).astype(np.uint16) * 16 + 1000).astype(np.uint16)
    Image.fromarray(values, "I;16").save(path, "PNG")
    return path


def write_palette(path: Path, width: int = 64, height: int = 48) -> Path:
    Image.fromarray(gradient(width, height), "L").convert("P").save(path, "PNG")
    return path


def write_truncated(source: Path, path: Path, keep: float = 0.6) -> Path:
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def write_bomb_png(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A valid, tiny PNG whose header declares a huge 8-bit gray image (10^10 pixels here)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    row = b"\x00" + b"\x00" * width
    idat = zlib.compress(row * 4, 9)  # a few rows: decoding would have to allocate the whole image first
    chunks = png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
    return path


def write_dicom(path: Path, pixels: np.ndarray, window: tuple[float, float] | None = None,
                frames: int | None = None, photometric: str = "MONOCHROME2") -> Path:
    """A 16-bit (12 stored) `photometric` DICOM (Secondary Capture) of `pixels`; `frames` declares
    NumberOfFrames (its pixel data then still holds one frame: enough for a header refused before decoding)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if frames is not None:
        ds.NumberOfFrames = frames
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path
