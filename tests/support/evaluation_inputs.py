"""Evaluation inputs from the bundled NIH sample: its boxes, jittered detections of them in a
detections folder, and NIH CSVs, for the evaluation and evaluate command tests."""

from __future__ import annotations

import csv
import random
from pathlib import Path

from chestdet.core.contracts import DETECTION_COLUMNS, DETECTIONS_CSV, IMAGE_COLUMNS, IMAGES_CSV
from chestdet.core.labels import class_id
from chestdet.data.annotations import Box, read_nih_csv
from tests.conftest import SAMPLE_CSV, SAMPLE_UNLABELED

# Real NIH images of the bundled sample, 7 boxes of 7 classes: 00000732_005 has two (Cardiomegaly,
# Pneumothorax).
BOXED = ["00000032_037.png", "00000072_000.png", "00000732_005.png", "00001558_016.png",
         "00002290_001.png", "00006821_002.png"]


def unlabeled_images() -> list[str]:
    return sorted(path.name for path in SAMPLE_UNLABELED.glob("*.png"))[:2]


def sample_boxes() -> list[Box]:
    boxes, _ = read_nih_csv(SAMPLE_CSV)
    chosen = [box for box in boxes if box.image in BOXED]
    assert {box.image for box in chosen} <= set(BOXED)
    return chosen


def fake_detections(boxes: list[Box], negatives: list[str], prefix: str = "") -> list[list]:
    """Jittered copies of the boxes (one with the wrong class), plus false positives on negatives."""
    rng = random.Random(7)
    rows = []
    for number, box in enumerate(boxes):
        label = "Nodule" if number == 0 else box.label
        jitter = [rng.uniform(-0.12, 0.12) * min(box.width, box.height) for _ in range(4)]
        rows.append([prefix + box.image, 1024, 1024, class_id(label), label, round(rng.uniform(0.2, 0.99), 3),
                     box.xmin + jitter[0], box.ymin + jitter[1], box.xmax + jitter[2], box.ymax + jitter[3]])
    for name in negatives:
        rows.append([prefix + name, 1024, 1024, 5, "Mass", 0.45, 300.0, 300.0, 420.0, 400.0])
    return rows


def write_detections_folder(folder: Path, rows: list[list], images: list[str] | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / DETECTIONS_CSV, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(DETECTION_COLUMNS)
        writer.writerows(rows)
    if images is not None:
        with open(folder / IMAGES_CSV, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(IMAGE_COLUMNS)
            for name in images:
                count = sum(1 for row in rows if row[0] == name)
                writer.writerow([name, f"/data/{name}", 1024, 1024, count])
    return folder / DETECTIONS_CSV


def write_nih_csv(path: Path, boxes: list[Box]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]"])
        for box in boxes:
            writer.writerow([box.image, box.label, repr(box.xmin), repr(box.ymin), repr(box.width), repr(box.height)])
    return path


