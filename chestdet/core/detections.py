"""The records detect hands to its outputs and to evaluate: one box, and one image's result.

An `ImageResult` round-trips through `to_dict`/`from_dict` (and JSON) unchanged; the journal of a
detection run holds one per line, and the tables are written from them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Detection:
    """One box in pixels of the original image (top-left origin)."""

    class_id: int
    score: float
    xmin: float
    ymin: float
    xmax: float
    ymax: float

    def as_printed(self) -> Detection:
        """The detection as the tables print it: score to 6 decimals, pixel corners to 2."""
        return Detection(self.class_id, round(self.score, 6), round(self.xmin, 2), round(self.ymin, 2),
                         round(self.xmax, 2), round(self.ymax, 2))


@dataclass(frozen=True)
class ImageResult:
    """One processed image: its size and detections, or the reason it could not be read."""

    image: str  # the name in the tables: the path relative to the input folder
    path: str
    width: int = 0
    height: int = 0
    detections: tuple[Detection, ...] = ()
    error: str | None = None

    def to_dict(self) -> dict:
        if self.error is not None:
            return {"image": self.image, "path": self.path, "error": self.error}
        rows = [[d.class_id, d.score, d.xmin, d.ymin, d.xmax, d.ymax] for d in self.detections]
        return {"image": self.image, "path": self.path, "width": self.width, "height": self.height, "detections": rows}

    @classmethod
    def from_dict(cls, data: dict) -> ImageResult:
        if "error" in data:
            return cls(data["image"], data["path"], error=data["error"])
        detections = tuple(Detection(int(r[0]), *(float(v) for v in r[1:])) for r in data["detections"])
        return cls(data["image"], data["path"], data["width"], data["height"], detections)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> ImageResult:
        return cls.from_dict(json.loads(text))
