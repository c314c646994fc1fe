"""The error gallery: per class, the highest-scoring false positives and the missed boxes, drawn.

Each picture shows the ground truth dashed (for a false positive every box of the image, named, so
a class confusion shows; for a miss the missed box) and the detection solid, under a caption with
the kind, class, score, IoU (with the nearest box of the detection's class) and image.

The rules are the FROC's: a false positive is a detection (any score) that hits no box of its class
at IoU >= `hit_iou` nor sits on a difficult one; a missed box is an ordinary box that no detection
of its class scoring above `score_threshold` hits at IoU >= `hit_iou`, shown with the detection of
its class (any score) that overlaps it most. Misses are shown largest box first, the most
conspicuous ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from chestdet.core import atomic
from chestdet.core.geometry import pairwise_iou
from chestdet.core.imaging import ImageReadError, read_image, to_rgb
from chestdet.detection.drawing import FONT, dashed_rectangle, encode_bgr
from chestdet.evaluation.boxes import NO_BOXES, BoxArrays, group_boxes
from chestdet.evaluation.froc import FALSE_POSITIVE, HIT, label_froc_detections
from chestdet.evaluation.metrics import EvaluationSettings

log = logging.getLogger("chestdet.evaluation.gallery")

GALLERY_DIR = "gallery"
DEFAULT_PER_CLASS = 8
TRUTH_RGB = (0, 255, 0)  # dashed
DETECTION_RGB = (255, 0, 0)  # solid
MAX_SIDE = 768  # pictures are drawn at most this large
CAPTION_RGB = (255, 255, 255)
FALSE_POSITIVE_KIND, MISSED_KIND = "false-positive", "missed"


@dataclass(frozen=True)
class GalleryCase:
    kind: str  # FALSE_POSITIVE_KIND or MISSED_KIND
    label: str
    image: str
    score: float | None  # the detection's; None for a missed box no detection overlaps
    iou: float  # between the detection and the box
    truth: tuple[tuple[float, float, float, float], ...]  # (xmin, ymin, xmax, ymax) boxes drawn dashed
    detection: tuple[float, float, float, float] | None  # drawn solid
    truth_labels: tuple[str, ...] = ()  # names written beside the dashed boxes (none: not written)

    def caption(self) -> str:
        score = "no detection" if self.score is None else f"score {self.score:.2f}"
        return f"{self.kind} {self.label} | {score} | IoU {self.iou:.2f} | {self.image}"


def _xyxy(yxyx: np.ndarray) -> tuple[float, float, float, float]:
    ymin, xmin, ymax, xmax = (float(v) for v in yxyx)
    return (xmin, ymin, xmax, ymax)


def false_positive_cases(
    ground_truth: pd.DataFrame, detections: pd.DataFrame, name: str, hit_iou: float, count: int
) -> list[GalleryCase]:
    """The `count` highest-scoring false positives of one class, with every box of their image."""
    gt_groups, det_groups = group_boxes(ground_truth, by_label=True), group_boxes(detections, by_label=True)
    by_image = group_boxes(ground_truth)
    cases = []
    for (image, label), found in det_groups.items():
        if label != name:
            continue
        truth, every = gt_groups.get((image, label), NO_BOXES), by_image.get(image, NO_BOXES)
        outcome = label_froc_detections(truth.yxyx, found.yxyx, hit_iou, truth.difficult)
        ious = pairwise_iou(found.yxyx, truth.yxyx)
        for k in np.flatnonzero(outcome == FALSE_POSITIVE):
            cases.append(GalleryCase(
                FALSE_POSITIVE_KIND, name, image, float(found.scores[k]),
                float(ious[k].max()) if ious.shape[1] else 0.0,
                tuple(_xyxy(box) for box in every.yxyx), _xyxy(found.yxyx[k]),
                tuple(f"{n} (difficult)" if hard else str(n) for n, hard in zip(every.labels, every.difficult,
                                                                                 strict=True)),
            ))
    cases.sort(key=lambda case: (-case.score, case.image))
    return cases[:count]


def missed_cases(
    ground_truth: pd.DataFrame, detections: pd.DataFrame, name: str, settings: EvaluationSettings, count: int
) -> list[GalleryCase]:
    """The `count` largest ordinary boxes of one class that no kept detection hits, each with the
    detection of its class (any score) that overlaps it most, if any does."""
    gt_groups, det_groups = group_boxes(ground_truth, by_label=True), group_boxes(detections, by_label=True)
    cases = []
    for (image, label), truth in gt_groups.items():
        if label != name:
            continue
        found = det_groups.get((image, label), NO_BOXES)
        ious = pairwise_iou(truth.yxyx, found.yxyx)
        for g in np.flatnonzero(~_hit_boxes(truth, found, ious, settings) & ~truth.difficult):
            best = int(np.argmax(ious[g])) if found.yxyx.size and ious[g].max() > 0 else None
            cases.append(GalleryCase(
                MISSED_KIND, name, image, None if best is None else float(found.scores[best]),
                0.0 if best is None else float(ious[g, best]), (_xyxy(truth.yxyx[g]),),
                None if best is None else _xyxy(found.yxyx[best]),
            ))
    cases.sort(key=lambda case: (-_area(case.truth[0]), case.image))
    return cases[:count]


def _hit_boxes(truth: BoxArrays, found: BoxArrays, ious: np.ndarray, settings: EvaluationSettings) -> np.ndarray:
    """Which of the boxes the detections above the threshold hit, by label_froc_detections' rule."""
    kept = found.scores > settings.score_threshold
    outcome = label_froc_detections(truth.yxyx, found.yxyx[kept], settings.hit_iou, truth.difficult)
    kept_ious = ious[:, kept]
    hit = np.zeros(len(truth.yxyx), dtype=bool)
    for d in np.flatnonzero(outcome == HIT):  # in score order, each hit takes the free box it overlaps most
        free = ~hit & ~truth.difficult & (kept_ious[:, d] >= settings.hit_iou)
        hit[int(np.argmax(np.where(free, kept_ious[:, d], -1.0)))] = True
    return hit


def _area(box: tuple[float, float, float, float]) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


# ---------------------------------------------------------------------------------------------
# Drawing


def draw_case(pixels: np.ndarray, case: GalleryCase) -> np.ndarray:
    """An RGB picture: the image (scaled to at most MAX_SIDE), truth dashed, detection solid, the caption
    on a black band above."""
    rgb = to_rgb(pixels)
    scale = min(1.0, MAX_SIDE / max(rgb.shape[:2]))
    if scale < 1.0:
        rgb = cv2.resize(rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)),
                         interpolation=cv2.INTER_AREA)
    canvas = np.ascontiguousarray(rgb)
    thickness = max(2, round(min(canvas.shape[:2]) / 250))
    font_scale = max(0.4, canvas.shape[1] / 1600)
    for k, box in enumerate(case.truth):
        dashed_rectangle(canvas, [v * scale for v in box], TRUTH_RGB, thickness, dash=4 * thickness)
        if k < len(case.truth_labels):
            corner = (int(round(box[0] * scale)) + thickness, int(round(box[3] * scale)) - 2 * thickness)
            cv2.putText(canvas, case.truth_labels[k], corner, FONT, font_scale, TRUTH_RGB, 1,
                        cv2.LINE_AA)
    if case.detection is not None:
        x0, y0, x1, y1 = (int(round(v * scale)) for v in case.detection)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), DETECTION_RGB, thickness, cv2.LINE_8)
    (_, text_height), baseline = cv2.getTextSize(case.caption(), FONT, font_scale, 1)
    band = np.zeros((text_height + baseline + 12, canvas.shape[1], 3), dtype=np.uint8)
    cv2.putText(band, case.caption(), (6, text_height + 6), FONT, font_scale, CAPTION_RGB, 1,
                cv2.LINE_AA)
    return np.vstack([band, canvas])


def write_gallery(
    ground_truth: pd.DataFrame,
    detections: pd.DataFrame,
    settings: EvaluationSettings,
    output_dir: Path,
    find_image: Callable[[str], Path | None],
    per_class: int = DEFAULT_PER_CLASS,
) -> tuple[dict[str, dict[str, list[Path]]], list[str]]:
    """Write gallery/<class>/<kind>-NN.png; returns {class: {kind: paths}} and notes on images not found."""
    written: dict[str, dict[str, list[Path]]] = {}
    missing: set[str] = set()
    for name in settings.classes:
        cases = {
            FALSE_POSITIVE_KIND: false_positive_cases(ground_truth, detections, name, settings.hit_iou, per_class),
            MISSED_KIND: missed_cases(ground_truth, detections, name, settings, per_class),
        }
        written[name] = {kind: _write_cases(found, output_dir / GALLERY_DIR / name, kind, find_image, missing)
                         for kind, found in cases.items()}
    notes = []
    if missing:
        notes.append(f"error gallery: {len(missing)} images not found (e.g. {min(missing)}); pass --image-dir")
    return written, notes


def _write_cases(cases: list[GalleryCase], folder: Path, kind: str, find_image: Callable[[str], Path | None],
                 missing: set[str]) -> list[Path]:
    paths = []
    for number, case in enumerate(cases, start=1):
        source = find_image(case.image)
        try:
            pixels = read_image(source) if source is not None else None
        except (ImageReadError, OSError) as error:
            log.warning("error gallery: %s", error)
            pixels = None
        if pixels is None:
            missing.add(case.image)
            continue
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{kind}-{number:02d}.png"
        atomic.write_bytes(path, encode_bgr(cv2.cvtColor(draw_case(pixels, case), cv2.COLOR_RGB2BGR), "png"))
        paths.append(path)
    return paths


def clear_gallery(output_dir: Path) -> None:
    """Remove the pictures an earlier run left in gallery/ (a report being replaced, of any label map), nothing
    else."""
    root = output_dir / GALLERY_DIR
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if not folder.is_dir() or folder.is_symlink():
            continue
        for kind in (FALSE_POSITIVE_KIND, MISSED_KIND):
            for path in folder.glob(f"{kind}-[0-9][0-9].png"):
                path.unlink()
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()
