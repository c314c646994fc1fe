"""An uploaded file as pixels, through chestdet.core.imaging with detect's limits: the image or the reason not.

The bytes are spooled to a temporary file so that PNG, JPEG, TIFF and DICOM go through the very
reader detect uses (header probed first, pixel bombs and oversized DICOM frames refused before
decoding). The client's file name is never used: an upload is known by its SHA-256.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from chestdet.core.errors import ChestdetError
from chestdet.core.imaging import (
    NOT_AN_IMAGE,
    DecompressionBombError,
    ImageInfo,
    ImageReadError,
    encode_png,
    probe_image,
    read_image,
    sniff_format,
)

# The file's own bytes are kept as feedback in these formats (the records step reads them); others as PNG.
KEPT_SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "DICOM": ".dcm"}


class UploadError(ChestdetError):
    """An upload that is not a usable image; `status` is the HTTP status that says why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Upload:
    """An uploaded image: its bytes, their SHA-256, what its header declares and its 8-bit pixels."""

    data: bytes
    sha256: str
    info: ImageInfo
    pixels: np.ndarray  # (H, W) gray or (H, W, 3) RGB uint8, as read_image gives it

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    def stored(self) -> tuple[str, bytes]:
        """The suffix and bytes of the image as feedback keeps it: the file itself, or a PNG of its pixels."""
        suffix = KEPT_SUFFIXES.get(self.info.format)
        return (suffix, self.data) if suffix else (".png", encode_png(self.pixels, 1))


def read_upload(data: bytes, max_pixels: int, spool_dir: Path | None = None) -> Upload:
    """Decode an upload; UploadError 415 for what is not an image, 422 for an image that cannot be used."""
    if not data:
        raise UploadError(422, "empty file")
    if sniff_format("upload", data[:132]) is None:
        raise UploadError(415, NOT_AN_IMAGE)
    with tempfile.NamedTemporaryFile(prefix=".upload-", dir=spool_dir) as handle:
        handle.write(data)
        handle.flush()
        try:
            info = probe_image(handle.name, max_pixels)
            pixels = read_image(handle.name, max_pixels)
        except DecompressionBombError as error:
            raise UploadError(422, error.reason) from None
        except ImageReadError as error:
            status = 415 if error.reason.startswith("unsupported image format") else 422
            raise UploadError(status, error.reason) from None
        except (cv2.error, ValueError, MemoryError) as error:
            raise UploadError(422, f"cannot decode ({type(error).__name__}: {error})") from None
    return Upload(data, hashlib.sha256(data).hexdigest(), info, pixels)
