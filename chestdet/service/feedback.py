"""The feedback folder: reviewed images and their labelImg XML, which the records step reads as it is.

    FEEDBACK/images/<sha256>.png|.jpg|.dcm   the uploaded file (a TIFF as a PNG of its pixels)
    FEEDBACK/xml/<sha256>.xml                 the reviewed boxes (not the deleted ones), labelImg VOC
    FEEDBACK/reviews.jsonl                    one line per review, appended, never rewritten

`generate_tfrecords --xml-dir FEEDBACK/xml --image-dir FEEDBACK/images` reads them. An image is
known by its bytes' SHA-256, never by the client's file name; a later review of it replaces its
XML, while reviews.jsonl keeps every review with each box's verdict, so that accepted and rejected
detections can be counted per class. Files are written atomically and synced before a review is
acknowledged: a killed server loses nothing it acknowledged.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

from chestdet.core import atomic
from chestdet.core.detections import Detection
from chestdet.core.errors import ChestdetError
from chestdet.detection.voc import voc_xml
from chestdet.service.schemas import Review, ReviewedBox
from chestdet.service.uploads import Upload

IMAGES_DIR = "images"
XML_DIR = "xml"
REVIEWS_JSONL = "reviews.jsonl"


class ReviewError(ChestdetError):
    """A review that cannot be stored as given (an unknown class, a box outside the image)."""


class FeedbackStore:
    """Writes reviews under `root`, one at a time."""

    def __init__(self, root: Path, class_names: Mapping[int, str]) -> None:
        self.root = Path(root)
        self._ids = {name.lower(): class_id for class_id, name in class_names.items()}
        self._names = dict(class_names)
        self._lock = threading.Lock()
        for folder in (self.root / IMAGES_DIR, self.root / XML_DIR):
            folder.mkdir(parents=True, exist_ok=True)

    def save(self, upload: Upload, review: Review, model_version: str) -> dict:
        """Store the image, its XML and the review's line; returns where (paths relative to the folder)."""
        kept = [self._detection(number, box, upload) for number, box in enumerate(review.boxes, start=1)
                if box.verdict != "deleted"]
        for number, box in enumerate(review.boxes, start=1):
            if box.original is not None:
                self._class_id(number, box.original.class_name)
        suffix, data = upload.stored()
        image = self.root / IMAGES_DIR / f"{upload.sha256}{suffix}"
        xml = self.root / XML_DIR / f"{upload.sha256}.xml"
        depth = 1 if upload.pixels.ndim == 2 else 3
        with self._lock:
            replaced = xml.exists()
            if not image.exists():
                atomic.write_bytes(image, data)
            atomic.write_bytes(xml, voc_xml(image, upload.width, upload.height, depth, kept, self._names))
            line = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                    "sha256": upload.sha256, "image": _relative(image, self.root), "xml": _relative(xml, self.root),
                    "width": upload.width, "height": upload.height, "reviewer": review.reviewer,
                    "model": model_version, "operating_point": review.operating_point, "replaces": replaced,
                    "boxes": [box.model_dump(by_alias=True) for box in review.boxes]}
            _append_line(self.root / REVIEWS_JSONL, json.dumps(line))
            for folder in (image.parent, xml.parent, self.root):
                atomic.sync_folder(folder)
        return {"sha256": upload.sha256, "image": line["image"], "xml": line["xml"], "boxes": len(kept),
                "replaced": replaced}

    def _class_id(self, number: int, name: str) -> int:
        class_id = self._ids.get(name.strip().lower())
        if class_id is None:
            raise ReviewError(f"box {number}: unknown class {name!r}; the model has {', '.join(self._names.values())}")
        return class_id

    def _detection(self, number: int, box: ReviewedBox, upload: Upload) -> Detection:
        xmin, ymin, xmax, ymax = box.box
        width, height = upload.width, upload.height
        xmin, xmax = (min(max(v, 0.0), width) for v in (xmin, xmax))
        ymin, ymax = (min(max(v, 0.0), height) for v in (ymin, ymax))
        if xmax - xmin < 1 or ymax - ymin < 1:
            raise ReviewError(f"box {number}: {box.box} has no area inside the {width}x{height} image")
        return Detection(self._class_id(number, box.class_name), 1.0, xmin, ymin, xmax, ymax)

    def summary(self) -> dict:
        """The latest review of each image: how many, and each class's boxes by verdict (a model's box
        counted under the class the model gave it, a drawn one under its own)."""
        latest = latest_reviews(self.root)
        classes: dict[str, Counter] = {}
        for review in latest.values():
            for box in review.get("boxes", []):
                original = box.get("original") or {}
                name = original.get("class") or box.get("class")
                classes.setdefault(name, Counter())[box.get("verdict")] += 1
        return {"images": len(latest), "classes": {name: dict(counts) for name, counts in sorted(classes.items())}}


def latest_reviews(root: Path) -> dict[str, dict]:
    """reviews.jsonl's latest line per image; a line cut short by a crash (never acknowledged) is skipped."""
    latest: dict[str, dict] = {}
    path = Path(root) / REVIEWS_JSONL
    if not path.is_file():
        return latest
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                review = json.loads(line)
            except ValueError:
                continue
            if isinstance(review, dict) and "sha256" in review:
                latest[review["sha256"]] = review
    return latest


def _append_line(path: Path, line: str) -> None:
    """One write of a whole line, synced: appends never interleave and a crash cuts at most the last one,
    which the next line then starts after instead of running on."""
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        size = os.fstat(fd).st_size
        cut = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
        os.write(fd, ("\n" if cut else "").encode() + (line + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()
