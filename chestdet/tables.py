"""A detection run's tables, from its `ImageResult`s in listing order: detections.csv, images.csv,
errors.csv, detections.json (COCO results) and coco_images.json."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from chestdet import atomic
from chestdet.contracts import (
    COCO_IMAGES_JSON,
    DETECTION_COLUMNS,
    DETECTIONS_CSV,
    DETECTIONS_JSON,
    ERROR_COLUMNS,
    ERRORS_CSV,
    IMAGE_COLUMNS,
    IMAGES_CSV,
)
from chestdet.detections import ImageResult
from chestdet.inputs import InputImage


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


def write_tables(
    output_dir: Path, images: Sequence[InputImage], results: Mapping[str, ImageResult],
    class_names: Mapping[int, str],
) -> None:
    """detections.csv, images.csv, detections.json, coco_images.json and errors.csv, in listing order."""
    ordered = [(i, results[i.name]) for i in images if i.name in results]
    readable = [(i, r) for i, r in ordered if r.error is None]
    _write_csv(output_dir / DETECTIONS_CSV, DETECTION_COLUMNS,
               (row for _, r in readable for row in detection_rows(r, class_names)))
    _write_csv(output_dir / IMAGES_CSV, IMAGE_COLUMNS, (image_row(r) for _, r in readable))
    _write_csv(output_dir / ERRORS_CSV, ERROR_COLUMNS, ([r.image, r.error] for _, r in ordered if r.error is not None))
    coco = [entry for i, r in readable for entry in coco_results(i.image_id, r)]
    atomic.write_text(output_dir / DETECTIONS_JSON, json.dumps(coco) + "\n")
    atomic.write_json(
        output_dir / COCO_IMAGES_JSON,
        {
            "images": [
                {"id": i.image_id, "file_name": r.image, "width": r.width, "height": r.height} for i, r in readable
            ],
            "categories": [{"id": k, "name": v} for k, v in sorted(class_names.items())],
        },
    )


def _write_csv(path: Path, columns: Sequence[str], rows: Iterable[Sequence]) -> None:
    with atomic.atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)
