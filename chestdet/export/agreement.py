"""How far the TFLite model reproduces the SavedModel's boxes: measured on images at export time and
recorded in export.json (`tflite_agreement`), and by detect and the benchmarks."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chestdet.core import atomic
from chestdet.core.contracts import EXPORT_RECORD
from chestdet.core.detections import Detection
from chestdet.core.errors import ExportError
from chestdet.core.geometry import pairwise_iou
from chestdet.core.imaging import IMAGE_SUFFIXES

AGREEMENT_MIN_SCORE = 0.3
AGREEMENT_MIN_IOU = 0.95
AGREEMENT_MAX_SCORE_DIFFERENCE = 0.02


@dataclass(frozen=True)
class Agreement:
    reference_boxes: int  # reference boxes scoring at least min_score
    matched: int

    @property
    def share(self) -> float:
        return self.matched / self.reference_boxes if self.reference_boxes else 1.0


def backend_agreement(
    reference: Sequence[Sequence[Detection]],
    candidate: Sequence[Sequence[Detection]],
    min_score: float = 0.3,
    min_iou: float = 0.95,
    max_score_difference: float = 0.02,
    same_class: bool = True,
) -> Agreement:
    """Share of the reference's boxes (score >= min_score) that the candidate reproduces.

    Per image, a reference box is matched by a candidate box of the same class with IoU >= min_iou
    and a score within max_score_difference; each candidate box matches at most once, reference
    boxes taking theirs best first. Used to compare TFLite with the SavedModel (detect and export
    both report it). `same_class=False` is a diagnostic for untrained models, whose eight class
    scores tie exactly, so that the backends pick the class of a box arbitrarily.
    """
    if len(reference) != len(candidate):
        raise ValueError(f"{len(reference)} reference images but {len(candidate)} candidate images")
    total = matched = 0
    for ref_boxes, cand_boxes in zip(reference, candidate, strict=True):
        refs = sorted((d for d in ref_boxes if d.score >= min_score), key=lambda d: -d.score)
        total += len(refs)
        matched += len(matched_pairs(refs, list(cand_boxes), min_iou, max_score_difference, same_class))
    return Agreement(total, matched)


def matched_pairs(
    refs: Sequence[Detection], cands: Sequence[Detection], min_iou: float, max_score_difference: float,
    same_class: bool = True,
) -> list[tuple[Detection, Detection]]:
    """Greedy one-to-one matching in `refs` order, each taking the first fitting unused candidate:
    the (reference, candidate) pairs."""
    if not refs or not cands:
        return []
    iou = pairwise_iou(_corners(refs), _corners(cands))
    unused = list(range(len(cands)))
    matched = []
    for r, ref in enumerate(refs):
        match = next(
            (
                c
                for c in unused
                if (cands[c].class_id == ref.class_id or not same_class)
                and abs(cands[c].score - ref.score) <= max_score_difference
                and iou[r, c] >= min_iou
            ),
            None,
        )
        if match is not None:
            unused.remove(match)
            matched.append((ref, cands[match]))
    return matched


def _corners(detections: Sequence[Detection]) -> np.ndarray:
    """[N, 4] float64 (ymin, xmin, ymax, xmax), the order pairwise_iou takes."""
    return np.array([[d.ymin, d.xmin, d.ymax, d.xmax] for d in detections], dtype=np.float64)


def measure_agreement(
    export_dir: Path,
    images: Sequence[Path],
    min_score: float = AGREEMENT_MIN_SCORE,
    min_iou: float = AGREEMENT_MIN_IOU,
    max_score_difference: float = AGREEMENT_MAX_SCORE_DIFFERENCE,
) -> Agreement:
    """Run the export's SavedModel and TFLite model on `images`; how many of the SavedModel's boxes
    scoring >= min_score does TFLite reproduce (same class, IoU >= min_iou, score within the margin)?"""
    from chestdet.core.imaging import read_image, to_rgb
    from chestdet.export.backends import open_backend, to_pixels

    saved_model = open_backend("savedmodel", export_dir)
    saved_model.load()
    tflite = open_backend("tflite", export_dir)
    reference, candidate = [], []
    for path in images:
        rgb = to_rgb(read_image(path))
        height, width = rgb.shape[:2]
        [saved_output] = saved_model.infer([saved_model.prepare(rgb)])
        [tflite_output] = tflite.infer([tflite.prepare(rgb)])
        reference.append(to_pixels(saved_output, width, height))
        candidate.append(to_pixels(tflite_output, width, height))
    return backend_agreement(reference, candidate, min_score, min_iou, max_score_difference)


def record_agreement(export_dir: Path, image_dir: Path) -> dict:
    """measure_agreement on the images of `image_dir`, added to export.json as `tflite_agreement`."""
    images = sorted(path for path in image_dir.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise ExportError(f"{image_dir}: no images to measure the TFLite agreement on")
    agreement = measure_agreement(export_dir, images)
    result = {
        "images": str(image_dir.resolve()),
        "image_count": len(images),
        "min_score": AGREEMENT_MIN_SCORE,
        "min_iou": AGREEMENT_MIN_IOU,
        "max_score_difference": AGREEMENT_MAX_SCORE_DIFFERENCE,
        "reference_boxes": agreement.reference_boxes,
        "matched": agreement.matched,
        "share": round(agreement.share, 4),
    }
    record = json.loads((export_dir / EXPORT_RECORD).read_text(encoding="utf-8"))
    record["tflite_agreement"] = result
    atomic.write_json(export_dir / EXPORT_RECORD, record)
    return result
