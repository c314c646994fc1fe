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
