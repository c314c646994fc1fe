"""Read any image a user can have (PNG, JPEG, TIFF, DICOM; gray, RGB, RGBA, palette, 16-bit) as 8-bit pixels.

Both the record writer and batch detection read through here, so an image means the same thing to
training and to inference.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

if TYPE_CHECKING:
    import pydicom

from chestdet.core.errors import InputError

# A 1024x1024 NIH PNG is 1 MP and a raw detector panel is under 20 MP; anything declaring more than
# this is refused before decoding, since a tiny compressed file can expand to gigabytes.
MAX_PIXELS = 80_000_000

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")
# What read_image decodes, each known by its content whatever the file's name.
READ_FORMATS = ("PNG", "JPEG", "TIFF", "DICOM")
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
          (b"II+\x00", "TIFF"), (b"MM\x00+", "TIFF"))
_PIL_FORMATS = ("PNG", "JPEG", "TIFF")
NOT_AN_IMAGE = f"not an image (its content is none of {', '.join(READ_FORMATS)})"


class ImageReadError(InputError):
    """An image that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class ImageMissingError(ImageReadError):
    """The image file is not there."""


class DecompressionBombError(ImageReadError):
    """The image declares more pixels than allowed; it is refused before decoding."""


@dataclass(frozen=True)
class ImageInfo:
    """What an image's header declares, read without decoding its pixels."""

    path: str
    width: int
    height: int
    format: str  # "PNG", "JPEG", "TIFF" or "DICOM"
    mode: str  # PIL mode ("L", "RGB", "RGBA", "P", "I;16", ...) or the DICOM photometric interpretation
    frames: int = 1  # a DICOM's NumberOfFrames; every frame is decoded with the first

    @property
    def pixel_count(self) -> int:
        return self.frames * self.width * self.height


def is_dicom(path: str | Path, head: bytes | None = None) -> bool:
    """By suffix, or by the DICM magic after the 128-byte preamble (of `head`, the file's first bytes)."""
    path = Path(path)
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    if head is None:
        try:
            head = _head(path, 132)
        except OSError:
            return False
    return head[128:132] == b"DICM"


def sniff_format(path: str | Path, head: bytes | None = None) -> str | None:
    """The format of READ_FORMATS that the file's first bytes (or `head`) declare, else None."""
    if head is None:
        try:
            head = _head(path, 132)
        except OSError:
            return None
    if head[128:132] == b"DICM":
        return "DICOM"
    return next((name for magic, name in _MAGIC if head.startswith(magic)), None)


def probe_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> ImageInfo:
    """Read the header only; refuse missing, unknown and oversized images."""
    path = Path(path)
    _check_file(path)
    info = _probe_dicom(path) if is_dicom(path) else _probe_pil(path)
    return _check_size(info, max_pixels)


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise ImageMissingError(path, "file not found")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "empty file")


def _check_size(info: ImageInfo, max_pixels: int) -> ImageInfo:
    if info.width <= 0 or info.height <= 0:
        raise ImageReadError(info.path, f"declares an empty size {info.width}x{info.height}")
    if info.pixel_count > max_pixels:
        frames = f"{info.frames} frames of " if info.frames != 1 else ""
        raise DecompressionBombError(
            info.path,
            f"declares {frames}{info.width}x{info.height} = {info.pixel_count} pixels, over the "
            f"limit of {max_pixels} (possible decompression bomb); not decoded",
        )
    return info


def _probe_pil(path: Path) -> ImageInfo:
    try:
        with Image.open(path) as image:
            if image.format not in _PIL_FORMATS:
                raise ImageReadError(path, f"unsupported image format {image.format}")
            return ImageInfo(str(path), image.width, image.height, image.format, image.mode)
    except UnidentifiedImageError:
        raise ImageReadError(path, NOT_AN_IMAGE) from None
    except Image.DecompressionBombError as error:
        raise DecompressionBombError(path, f"possible decompression bomb, refused before decoding ({error})") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(path, f"not a readable image ({error})") from error


def _probe_dicom(path: Path) -> ImageInfo:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
        return ImageInfo(
            str(path), int(dataset.Columns), int(dataset.Rows), "DICOM",
            str(dataset.get("PhotometricInterpretation", "MONOCHROME2")), int(dataset.get("NumberOfFrames") or 1),
        )
    except (InvalidDicomError, AttributeError, OSError, ValueError) as error:
        raise ImageReadError(path, f"not a readable DICOM file ({error})") from error


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode to uint8: (H, W) for gray sources, (H, W, 3) RGB otherwise. Alpha is dropped."""
    info = probe_image(path, max_pixels)
    if info.format == "DICOM":
        return _read_dicom(Path(path))
    return _decode(path, Path(path).read_bytes(), info)


def _decode(path: str | Path, data: bytes, info: ImageInfo) -> np.ndarray:
    if info.format == "JPEG" and not _jpeg_is_complete(data):
        raise ImageReadError(path, "truncated JPEG (no end-of-image marker)")
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise ImageReadError(path, f"cannot decode {info.format} data (corrupt or truncated)")
    if (pixels.shape[1], pixels.shape[0]) != (info.width, info.height):
        raise ImageReadError(path, "decoded size differs from the header's")
    return _to_uint8_gray_or_rgb(pixels)


def to_rgb(pixels: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8 -> (H, W, 3) uint8 RGB."""
    if pixels.ndim == 2:
        return cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB)
    return pixels


def _jpeg_is_complete(data: bytes) -> bool:
    return data.rstrip(b"\x00").endswith(b"\xff\xd9")


def _to_uint8_gray_or_rgb(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype != np.uint8:
        pixels = rescale_to_uint8(pixels)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim == 3:
        code = cv2.COLOR_BGRA2RGB if pixels.shape[2] == 4 else cv2.COLOR_BGR2RGB
        pixels = cv2.cvtColor(pixels, code)
        if _is_gray(pixels):
            pixels = np.ascontiguousarray(pixels[:, :, 0])
    return pixels


def _is_gray(rgb: np.ndarray) -> bool:
    return bool(np.array_equal(rgb[:, :, 0], rgb[:, :, 1]) and np.array_equal(rgb[:, :, 1], rgb[:, :, 2]))


def rescale_to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Stretch the image's own value range to 0..255 (16-bit PNGs and DICOMs use a fraction of theirs)."""
    values = pixels.astype(np.float32)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(pixels.shape, np.uint8)
    return np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)


def _read_dicom(path: Path) -> np.ndarray:
    import pydicom

    try:
        dataset = pydicom.dcmread(path)
    except Exception as error:  # pydicom raises many types for a damaged file
        raise ImageReadError(path, f"not a readable DICOM file ({error})") from error
    return dicom_pixels(dataset, path)


def dicom_pixels(dataset: pydicom.Dataset, source: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A DICOM image's first frame as a reader sees it, in 8 bits: gray through the modality LUT, then
    the VOI LUT or window onto 0..255, MONOCHROME1 inverted; colour as RGB. Compressed transfer syntaxes
    decode through pydicom's handlers (GDCM, pylibjpeg)."""
    if "PixelData" not in dataset:
        raise ImageReadError(source, "a DICOM file without pixel data")
    rows, columns = int(dataset.get("Rows") or 0), int(dataset.get("Columns") or 0)
    frames = int(dataset.get("NumberOfFrames") or 1)
    _check_size(ImageInfo(str(source), columns, rows, "DICOM", "", frames), max_pixels)
    try:
        pixels = dataset.pixel_array
    except Exception as error:  # pydicom raises many types for bad or unsupported pixel data
        raise ImageReadError(source, f"cannot decode DICOM pixel data ({error})") from error
    if frames > 1:
        pixels = pixels[0]
    if int(dataset.get("SamplesPerPixel") or 1) == 3 and pixels.ndim == 3:
        return pixels if pixels.dtype == np.uint8 else rescale_to_uint8(pixels)
    if pixels.ndim != 2:
        raise ImageReadError(source, f"unsupported DICOM pixel array of shape {pixels.shape}")
    gray = _gray_to_uint8(pixels, dataset)
    return 255 - gray if dataset.get("PhotometricInterpretation") == "MONOCHROME1" else gray


def _gray_to_uint8(pixels: np.ndarray, dataset: pydicom.Dataset) -> np.ndarray:
    """The VOI's output range maps onto 0..255 (found by passing it the lowest and highest values, which
    pydicom's windowing and LUT clamp); without a VOI, 8-bit data stays as stored and deeper data is
    stretched over its own range."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = apply_modality_lut(pixels, dataset)
    has_window = "WindowCenter" in dataset and "WindowWidth" in dataset
    if not has_window and "VOILUTSequence" not in dataset:
        if pixels.dtype == np.uint8 and np.array_equal(values, pixels):
            return pixels
        return rescale_to_uint8(np.asarray(values))
    shown = apply_voi_lut(values, dataset).astype(np.float64)
    extremes = np.array([-(2.0**40), 2.0**40])
    if "VOILUTSequence" in dataset:  # a LUT's input is an index: its first and last entries instead
        entries, first = (int(v) for v in dataset.VOILUTSequence[0].LUTDescriptor[:2])
        extremes = np.array([first, first + (entries or 65536) - 1])
    low, high = (float(v) for v in apply_voi_lut(extremes, dataset))
    if high == low:
        return rescale_to_uint8(shown)
    return np.clip(np.round((shown - low) * (255.0 / (high - low))), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# Bytes to store in a TFRecord

PASS_THROUGH_MODES = {"PNG": ("L", "RGB"), "JPEG": ("L", "RGB")}
# zlib level for re-encoded images: level 1 encodes a 640x640 NIH image about 35% faster than 3 (OpenCV's
# default) for files about 4% larger; decoding speed is the same.
STORED_PNG_COMPRESSION = 1


@dataclass(frozen=True)
class StoredImage:
    """What a record holds for one image: bytes true to `format`, and the sizes before and after."""

    data: bytes
    format: str  # "png" or "jpeg", as the OD API's image/format wants it
    width: int
    height: int
    original_width: int
    original_height: int
    conversion: str | None  # None when the file's own bytes are stored unchanged


def stored_image(path: str | Path, max_size: int | None = None, max_pixels: int = MAX_PIXELS) -> StoredImage:
    """The file's own bytes when it is an intact 8-bit gray or RGB PNG/JPEG no larger than `max_size`;
    otherwise the image read as 8-bit (and downscaled so its longer side is `max_size`) as a PNG.

    Pass-through files are checked without decoding their pixels: the header (size, mode, bomb
    limit), every PNG chunk's CRC up to IEND, or a JPEG's end-of-image marker. The file is read once.
    """
    path = Path(path)
    data = _read_file(path)
    if is_dicom(path, data):
        info = probe_image(path, max_pixels)
        return _converted(_read_dicom(path), info, max_size, [f"DICOM {info.mode} -> 8-bit"])
    info, pass_through = _inspect(path, data, max_size, max_pixels)
    if pass_through:
        return StoredImage(data, info.format.lower(), info.width, info.height, info.width, info.height, None)
    pixels = _decode(path, data, info)
    steps = []
    if info.mode not in ("L", "RGB") or info.format == "PNG" and _png_bit_depth(data) != 8:
        steps.append(f"{_mode_name(info, data)} -> 8-bit {'gray' if pixels.ndim == 2 else 'RGB'}")
    return _converted(pixels, info, max_size, steps)


def _inspect(path: Path, data: bytes, max_size: int | None, max_pixels: int) -> tuple[ImageInfo, bool]:
    """Header facts, and whether the bytes can be stored as they are (then verified intact)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in PASS_THROUGH_MODES:
                raise ImageReadError(path, f"unsupported image format {image.format}")
            info = _check_size(ImageInfo(str(path), image.width, image.height, image.format, image.mode), max_pixels)
            pass_through = (
                info.mode in PASS_THROUGH_MODES[info.format]
                and (max_size is None or max(info.width, info.height) <= max_size)
                and (info.format == "JPEG" or _png_bit_depth(data) == 8)
            )
            if pass_through and info.format == "PNG":
                _check_png_chunks(data)
    except Image.DecompressionBombError as error:
        raise DecompressionBombError(path, f"possible decompression bomb, refused before decoding ({error})") from error
    except (OSError, SyntaxError, ValueError, struct.error) as error:
        raise ImageReadError(path, f"corrupt, truncated or unreadable {_format_name(data)} ({error})") from error
    if pass_through and info.format == "JPEG" and not _jpeg_is_complete(data):
        raise ImageReadError(path, "truncated JPEG (no end-of-image marker)")
    return info, pass_through


def _check_png_chunks(data: bytes) -> None:
    """Walk every chunk to IEND, checking its CRC, without decoding pixels.

    PIL's verify() does the same walk at twice the cost, and at pass-through speed it was a fifth of
    the CPU time of an image.
    """
    view = memoryview(data)
    position = 8  # after the signature
    while position + 12 <= len(view):
        kind_at, end = position + 4, position + 8 + int.from_bytes(view[position:position + 4], "big")
        if end + 4 > len(view):
            break
        if zlib.crc32(view[kind_at:end]) != int.from_bytes(view[end:end + 4], "big"):
            kind = bytes(view[kind_at:kind_at + 4]).decode("latin-1")
            raise ValueError(f"CRC mismatch in the {kind} chunk at byte {position}")
        if view[kind_at:kind_at + 4] == b"IEND":
            return
        position = end + 4
    raise ValueError(f"no IEND chunk in its {len(view)} bytes")


def _read_file(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise ImageMissingError(path, "file not found") from None
    except OSError as error:
        raise ImageReadError(path, f"cannot read the file ({error.strerror or error})") from None
    if not data:
        raise ImageReadError(path, "empty file")
    return data


def _format_name(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "PNG"
    if data.startswith(b"\xff\xd8"):
        return "JPEG"
    return "image"


def _converted(pixels: np.ndarray, info: ImageInfo, max_size: int | None, steps: list[str]) -> StoredImage:
    if max_size is not None and max(info.width, info.height) > max_size:
        pixels = downscale(pixels, max_size)
        steps = [*steps, f"downscaled to {max_size}"]
    return StoredImage(
        encode_png(pixels, STORED_PNG_COMPRESSION), "png", pixels.shape[1], pixels.shape[0], info.width, info.height,
        ", ".join(steps),
    )


def _png_bit_depth(data: bytes) -> int:
    """Bits per sample from the IHDR chunk (PIL reports a 48-bit RGB PNG as mode "RGB")."""
    return data[24] if len(data) > 24 else 0


def _head(path: str | Path, size: int = 32) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(size)


def _mode_name(info: ImageInfo, data: bytes) -> str:
    bits = _png_bit_depth(data) if info.format == "PNG" else 8
    names = {"LA": "gray+alpha", "P": "palette", "PA": "palette+alpha", "1": "1-bit", "I;16": f"{bits}-bit gray",
             "I;16B": f"{bits}-bit gray", "I": f"{bits}-bit gray", "RGB": f"{bits}-bit RGB", "RGBA": "RGBA"}
    return f"{info.format} {names.get(info.mode, info.mode)}"


def downscale(pixels: np.ndarray, max_size: int) -> np.ndarray:
    """Shrink so the longer side is `max_size` (area averaging, aspect ratio kept)."""
    height, width = pixels.shape[:2]
    scale = max_size / max(height, width)
    if scale >= 1:
        return pixels
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)


def encode_png(pixels: np.ndarray, compression: int = 3) -> bytes:
    """(H, W) gray or (H, W, 3) RGB uint8 -> PNG bytes."""
    bgr = pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise ValueError("OpenCV could not encode the image as PNG")
    return encoded.tobytes()
