"""Reading chestdet's SR and GSPS back the way a consumer would: highdicom's TID 1500 parsing, and dcmtk."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom

from chestdet.clinical.results import FINDING_CODES, SCORE


@dataclass(frozen=True)
class Finding:
    class_name: str
    box: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax in pixels
    score: float


def sr_findings(sr: pydicom.Dataset, film_uid: str | None = None) -> list[Finding]:
    """The boxes of a TID 1500 SR (only those on `film_uid`, when given), in report order."""
    report = hd.sr.Comprehensive3DSR.from_dataset(sr) if not isinstance(sr, hd.sr.Comprehensive3DSR) else sr
    by_code = {code.value: name for name, code in FINDING_CODES.items()}
    groups = report.content.get_planar_roi_measurement_groups(referenced_sop_instance_uid=film_uid)
    found = []
    for group in groups:
        points = np.asarray(group.roi.value)
        assert group.roi.graphic_type == hd.sr.GraphicTypeValues.POLYLINE and len(points) == 5
        assert np.array_equal(points[0], points[-1]), "the polyline is not closed"
        score = group.get_measurements(name=SCORE)[0].value
        box = (float(points[:, 0].min()), float(points[:, 1].min()), float(points[:, 0].max()),
               float(points[:, 1].max()))
        found.append(Finding(by_code[group.finding_type.value], box, float(score)))
    return found


def gsps_boxes(gsps: pydicom.Dataset) -> list[tuple[tuple[float, ...], str, tuple[int, ...]]]:
    """Each drawn box of a GSPS: (xmin, ymin, xmax, ymax), its text, its line colour (CIELab)."""
    found = []
    for annotation in gsps.get("GraphicAnnotationSequence", []):
        texts = [t.UnformattedTextValue for t in annotation.get("TextObjectSequence", [])]
        for graphic, text in zip(annotation.GraphicObjectSequence, texts, strict=True):
            points = np.asarray(graphic.GraphicData, dtype=np.float64).reshape(-1, 2)
            box = (points[:, 0].min(), points[:, 1].min(), points[:, 0].max(), points[:, 1].max())
            colour = tuple(graphic.LineStyleSequence[0].PatternOnColorCIELabValue)
            found.append((tuple(float(v) for v in box), text, colour))
    return found


def dcmtk_verdict(path: Path) -> tuple[bool, str]:
    """dsrdump for an SR, dcmpschk for a presentation state: (accepted, what the tool said). dcmpschk exits
    0 either way and says "Test passed." or "Test failed"; dsrdump exits non-zero and warns on stderr."""
    modality = pydicom.dcmread(path, stop_before_pixels=True).Modality
    tool = "dsrdump" if modality == "SR" else "dcmpschk"
    done = subprocess.run([shutil.which(tool) or tool, str(path)], capture_output=True, text=True, check=False)
    said = done.stdout + done.stderr
    if modality == "SR":
        return done.returncode == 0 and not done.stderr.strip() and "Comprehensive 3D SR" in done.stdout, said
    return modality == "PR" and "Test passed." in said and "failed" not in said, said
