"""Detection results made up for the tests of what detect writes from them (journal, tables, review files)."""

from __future__ import annotations

from pathlib import Path

from chestdet.core.detections import Detection, ImageResult
from chestdet.detection.inputs import InputImage

CLASS_NAMES = {1: "Atelectasis", 2: "Cardiomegaly", 3: "Effusion", 4: "Infiltrate", 5: "Mass", 6: "Nodule",
               7: "Pneumonia", 8: "Pneumothorax"}


def made_up_result(index: int, name: str | None = None) -> ImageResult:
    """A different result per index: 0 to 3 boxes of several classes and scores, and every fifth image
    unreadable (an error instead of a size and boxes)."""
    image = name or f"folder/{index:03d}.png"
    if index % 5 == 4:
        return ImageResult(image, f"/data/{image}", error=f"cannot decode {image} (damaged file)")
    boxes = tuple(
        Detection(1 + (index + 3 * k) % 8, round(0.9 / (k + 1) - index / 1000, 6), 10.5 * k + index, 3.25 + index,
                  100.0 + 7 * k + index, 120.75 + index)
        for k in range(index % 4)
    )
    return ImageResult(image, f"/data/{image}", 1024 + index, 768 + 2 * index, boxes)


def made_up_run(count: int) -> list[tuple[InputImage, ImageResult]]:
    """`count` images in listing order (ids 1..count) and their made-up results."""
    pairs = []
    for index in range(count):
        result = made_up_result(index)
        pairs.append((InputImage(result.image, Path(result.path), index + 1), result))
    return pairs
