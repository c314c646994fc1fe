"""A detection run's tables, from its `ImageResult`s in listing order: detections.csv, images.csv,
errors.csv, detections.json (COCO results) and coco_images.json.

`TableWriter` appends each image's rows as it finishes, to temporary files published together by
`close()`, so memory does not grow with the number of images and no half table ever looks whole.
`read_detections_folder` reads detections.csv and images.csv back for the stages after detection.
Another output written per image sits beside it with the same `add(item, result)` / `close()` /
`abort()` (a `ResultWriter`); `ResultWriters` drives several as one.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Protocol

import pandas as pd

from chestdet.core import atomic
from chestdet.core.contracts import (
    COCO_IMAGES_JSON,
    DETECTION_COLUMNS,
    DETECTIONS_CSV,
    DETECTIONS_JSON,
    ERROR_COLUMNS,
    ERRORS_CSV,
    IMAGE_COLUMNS,
    IMAGES_CSV,
)
from chestdet.core.csvfiles import read_frame
from chestdet.core.detections import ImageResult
from chestdet.core.errors import InputError
from chestdet.detection.inputs import InputImage


def detection_rows(result: ImageResult, class_names: Mapping[int, str]) -> list[list]:
    """The image's rows of detections.csv, in DETECTION_COLUMNS order."""
    r = result
    return [
        [r.image, r.width, r.height, d.class_id, class_names.get(d.class_id, f"class {d.class_id}"), d.score,
         d.xmin, d.ymin, d.xmax, d.ymax]
        for d in r.detections
    ]


def image_row(result: ImageResult) -> list:
    """The image's row of images.csv, in IMAGE_COLUMNS order."""
    return [result.image, result.path, result.width, result.height, len(result.detections)]


def coco_results(image_id: int, result: ImageResult) -> list[dict]:
    """The image's detections as COCO results (bbox: x, y, width, height)."""
    return [
        {
            "image_id": image_id,
            "category_id": d.class_id,
            "bbox": [d.xmin, d.ymin, round(d.xmax - d.xmin, 2), round(d.ymax - d.ymin, 2)],
            "score": d.score,
        }
        for d in result.detections
    ]


def coco_image(image_id: int, result: ImageResult) -> dict:
    """The image's entry of coco_images.json."""
    return {"id": image_id, "file_name": result.image, "width": result.width, "height": result.height}


class ResultWriter(Protocol):
    """An output written image by image, in listing order, and published whole at the end."""

    def add(self, item: InputImage, result: ImageResult) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class PublishedWhole:
    """A writer used as a context manager: `close()` (publish) on success, `abort()` (discard) on error."""

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self):  # noqa: ANN204 - the writer itself
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


class ResultWriters(PublishedWhole):
    """Several `ResultWriter`s fed the same results; all published on success, all discarded on error."""

    def __init__(self, writers: Sequence[ResultWriter]) -> None:
        self.writers = list(writers)

    def add(self, item: InputImage, result: ImageResult) -> None:
        for writer in self.writers:
            writer.add(item, result)

    def close(self) -> None:
        for writer in self.writers:
            writer.close()

    def abort(self) -> None:
        for writer in self.writers:
            writer.abort()



class JsonArray:
    """A JSON array written item by item: the bytes `json.dumps` gives for the whole list, at
    `indent` (None: on one line) and nested `level` deep."""

    def __init__(self, handle: IO, indent: int | None = None, level: int = 0) -> None:
        self._handle, self._indent, self._level, self._count = handle, indent, level, 0
        handle.write("[")

    def append(self, item: object) -> None:
        if self._indent is None:
            self._handle.write((", " if self._count else "") + json.dumps(item))
        else:
            pad = "\n" + " " * (self._indent * (self._level + 1))
            self._handle.write(("," if self._count else "") + pad + json.dumps(item, indent=self._indent).replace(
                "\n", pad))
        self._count += 1

    def extend(self, items: Sequence[object]) -> None:
        """The bytes of appending each item, from one `json.dumps` call when on one line."""
        if self._indent is not None:
            for item in items:
                self.append(item)
        elif items:
            self._handle.write((", " if self._count else "") + json.dumps(items)[1:-1])
            self._count += len(items)

    def close(self) -> None:
        closing = "\n" + " " * (self._indent * self._level) if self._indent is not None and self._count else ""
        self._handle.write(closing + "]")


class TableWriter(PublishedWhole):
    """detections.csv, images.csv, errors.csv, detections.json and coco_images.json, a row at a time.

    Use as a context manager (an error discards every table) or call `close()` / `abort()`.
    """

    def __init__(self, output_dir: Path, class_names: Mapping[int, str]) -> None:
        self._class_names = dict(class_names)
        names = (DETECTIONS_CSV, IMAGES_CSV, ERRORS_CSV, DETECTIONS_JSON, COCO_IMAGES_JSON)
        self._files = {name: atomic.PendingFile(output_dir / name, "w", newline="", encoding="utf-8")
                       for name in names}
        self._csv = {}
        for name, columns in ((DETECTIONS_CSV, DETECTION_COLUMNS), (IMAGES_CSV, IMAGE_COLUMNS),
                              (ERRORS_CSV, ERROR_COLUMNS)):
            self._csv[name] = csv.writer(self._files[name].handle)
            self._csv[name].writerow(columns)
        self._results = JsonArray(self._files[DETECTIONS_JSON].handle)
        self._files[COCO_IMAGES_JSON].handle.write('{\n  "images": ')
        self._images = JsonArray(self._files[COCO_IMAGES_JSON].handle, indent=2, level=1)

    def add(self, item: InputImage, result: ImageResult) -> None:
        """One image's rows; images are added in listing order."""
        if result.error is not None:
            self._csv[ERRORS_CSV].writerow([result.image, result.error])
            return
        self._csv[DETECTIONS_CSV].writerows(detection_rows(result, self._class_names))
        self._csv[IMAGES_CSV].writerow(image_row(result))
        self._results.extend(coco_results(item.image_id, result))
        self._images.append(coco_image(item.image_id, result))

    def close(self) -> None:
        """Finish the JSON files and publish every table."""
        self._results.close()
        self._files[DETECTIONS_JSON].handle.write("\n")
        self._images.close()
        categories = [{"id": k, "name": v} for k, v in sorted(self._class_names.items())]
        self._files[COCO_IMAGES_JSON].handle.write(
            ',\n  "categories": ' + json.dumps(categories, indent=2).replace("\n", "\n  ") + "\n}\n"
        )
        for pending in self._files.values():
            pending.commit()

    def abort(self) -> None:
        """Remove the unfinished tables; earlier published ones stay as they were."""
        for pending in self._files.values():
            pending.discard()


@dataclass(frozen=True)
class DetectionsFolder:
    """A detections folder's detections.csv and images.csv as written: every cell a string, each row's
    index its line number minus 2 (csvfiles.read_frame)."""

    detections: pd.DataFrame
    detections_path: Path
    images: pd.DataFrame | None  # None when images.csv is absent (a detections.csv handed on its own)
    images_path: Path


def read_detections_folder(path: str | Path) -> DetectionsFolder:
    """detections.csv (or the folder holding it) and the images.csv beside it."""
    path = Path(path)
    csv_path = path / DETECTIONS_CSV if path.is_dir() else path
    if not csv_path.is_file():
        raise InputError(f"{csv_path}: detections file not found")
    detections = read_frame(csv_path)
    images_path = csv_path.parent / IMAGES_CSV
    images = read_frame(images_path) if images_path.is_file() else None
    return DetectionsFolder(detections, csv_path, images, images_path)


def write_detections_folder(folder: Path, detections: pd.DataFrame, images: pd.DataFrame | None) -> None:
    """A detections folder from tables read by read_detections_folder (concatenated, for instance); no
    images.csv when `images` is None (an earlier one is removed)."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic.write_text(folder / DETECTIONS_CSV, detections.to_csv(index=False, lineterminator="\n"))
    if images is not None:
        atomic.write_text(folder / IMAGES_CSV, images.to_csv(index=False, lineterminator="\n"))
    else:
        (folder / IMAGES_CSV).unlink(missing_ok=True)
