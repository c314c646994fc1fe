"""detect --dicom-results: dicom/<path stem>.sr.dcm and .gsps.dcm for every DICOM input of a run.

`DicomResults` is handed to detect through `DetectOptions.extra_writers` (detection does not know
this package); each run makes one `DicomResultWriter` from it, which detect feeds every image's
result in listing order, like its tables. The boxes are those drawn: the same thresholds and limit.
Inputs that are not DICOM get no DICOM results; the run's summary counts them in one line.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom

from chestdet.clinical.results import ModelInfo, film_results
from chestdet.core import atomic
from chestdet.core.contracts import DICOM_DIR, GSPS_SUFFIX, SR_SUFFIX
from chestdet.core.detections import ImageResult
from chestdet.core.imaging import is_dicom
from chestdet.detection.detect import OutputLayout
from chestdet.detection.inputs import InputImage
from chestdet.detection.thresholds import Thresholds

log = logging.getLogger("chestdet.clinical.detect_writer")


@dataclass(frozen=True)
class DicomResults:
    """What a run's DICOM results need; called with (output folder, class names) it makes the run's writer."""

    model: ModelInfo
    thresholds: Thresholds
    max_boxes: int
    images: Sequence[InputImage]

    def __call__(self, output_dir: Path, class_names: Mapping[int, str]) -> DicomResultWriter:
        return DicomResultWriter(output_dir, class_names, self)


class DicomResultWriter:
    """Writes each DICOM input's SR and GSPS as its result arrives (each file atomically)."""

    def __init__(self, output_dir: Path, class_names: Mapping[int, str], settings: DicomResults) -> None:
        self.folder = Path(output_dir) / DICOM_DIR
        self.class_names, self.settings = dict(class_names), settings
        self.layout = OutputLayout(Path(output_dir), settings.images, "dcm")
        self.written = self.not_dicom = self.failed = 0
        for stale in self.folder.glob("**/.*.tmp"):  # a killed run's temporaries, never under a final name
            stale.unlink(missing_ok=True)

    def add(self, item: InputImage, result: ImageResult) -> None:
        if not is_dicom(item.path):
            self.not_dicom += 1
            return
        if result.error is not None:
            self.failed += 1  # errors.csv already says why
            return
        try:
            source = pydicom.dcmread(item.path, stop_before_pixels=True)
            shown = self.settings.thresholds.shown(result.detections, self.settings.max_boxes)
            sr, gsps = film_results(source, shown, self.class_names, self.settings.model,
                                    lowest(self.settings.thresholds))
        except (AttributeError, ValueError, TypeError, KeyError, OSError) as error:
            self.failed += 1
            log.warning("%s: no DICOM results: %s", item.path, error)
            return
        stem = self.layout.stem(item.name)
        for suffix, dataset in ((SR_SUFFIX, sr), (GSPS_SUFFIX, gsps)):
            with atomic.atomic_path(self.folder / f"{stem}{suffix}") as temporary:
                dataset.save_as(temporary, enforce_file_format=True)
        self.written += 1

    def close(self) -> None:
        parts = [f"DICOM results: {self.written} SR and {self.written} GSPS in {self.folder}"]
        if self.failed:
            parts.append(f"{self.failed} DICOM inputs without results")
        if self.not_dicom:
            parts.append(f"{self.not_dicom} inputs are not DICOM and get none")
        log.info("; ".join(parts))

    def abort(self) -> None:
        """Files already written are whole; nothing to undo."""


def lowest(thresholds: Thresholds) -> float:
    """The lowest score any class needs to be shown."""
    return min([thresholds.default, *thresholds.per_class.values()])
