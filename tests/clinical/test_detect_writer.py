"""detect's DICOM results: an SR and a GSPS per DICOM input, the drawn boxes, written beside the tables."""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from chestdet.clinical.detect_writer import DicomResults
from chestdet.clinical.results import ModelInfo, derived_uid
from chestdet.core.labels import CLASS_NAMES
from chestdet.detection import detect
from chestdet.detection.inputs import list_inputs
from chestdet.detection.thresholds import Thresholds
from tests.conftest import SAMPLE_IMAGES
from tests.support.dicom_films import Study, film_dataset, gray_from_png, make_film
from tests.support.dicom_peers import BoxesFromPixels
from tests.support.dicom_results import dcmtk_verdict, sr_findings

NAMES = {number: name for number, name in enumerate(CLASS_NAMES, start=1)}
MODEL = ModelInfo("export", "step 10", derived_uid("detect writer test model"))
PNGS = sorted(SAMPLE_IMAGES.glob("*.png"))


@pytest.fixture
def films(tmp_path: Path) -> Path:
    folder = tmp_path / "in put"
    make_film(PNGS[0], folder / "pa.dcm", "mono1-12bit-window", Study(), 1, size=320)
    make_film(PNGS[1], folder / "ward" / "portable", "jpeg2000", Study(seed="other"), 1, size=256)
    shutil.copy(PNGS[2], folder / "photo.png")
    broken = film_dataset(gray_from_png(PNGS[3], 64), "mono2-8bit", Study(seed="broken"))
    broken.PixelData = broken.PixelData[:100]
    broken.save_as(folder / "truncated.dcm", enforce_file_format=True)
    return folder


def run(films: Path, out: Path, min_score: float = 0.3) -> detect.RunSummary:
    thresholds = Thresholds(min_score)
    images = list_inputs(films, exclude=out)
    detect.prepare_output_dir(out, detect.run_settings(input=str(films)), resume=False, overwrite=True)
    options = detect.DetectOptions(thresholds=thresholds, extra_writers=(DicomResults(MODEL, thresholds, 100, images),))
    return detect.detect_images(images, BoxesFromPixels(), NAMES, out, options)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_every_dicom_input_gets_an_sr_and_gsps_of_its_drawn_boxes(films: Path, tmp_path: Path, caplog):
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="chestdet"):
        run(films, out)
    written = sorted(p.relative_to(out / "dicom").as_posix() for p in (out / "dicom").rglob("*.dcm"))
    assert written == ["pa.gsps.dcm", "pa.sr.dcm", "ward/portable.gsps.dcm", "ward/portable.sr.dcm"]
    rows = read_csv(out / "detections.csv")
    for name, stem in (("pa.dcm", "pa"), ("ward/portable", "ward/portable")):
        film = pydicom.dcmread(films / name, stop_before_pixels=True)
        found = sr_findings(pydicom.dcmread(out / "dicom" / f"{stem}.sr.dcm"), film_uid=film.SOPInstanceUID)
        drawn = [r for r in rows if r["image"] == name and float(r["score"]) >= 0.3]
        assert len(found) == len(drawn) == 1
        assert found[0].class_name == drawn[0]["class_name"]
        assert np.allclose(found[0].box, [float(drawn[0][k]) for k in ("xmin", "ymin", "xmax", "ymax")], atol=0.5)
        for suffix in ("sr", "gsps"):
            accepted, said = dcmtk_verdict(out / "dicom" / f"{stem}.{suffix}.dcm")
            assert accepted, said
    assert [r["image"] for r in read_csv(out / "errors.csv")] == ["truncated.dcm"]
    assert read_csv(out / "errors.csv")[0]["reason"].startswith("cannot decode DICOM pixel data")
    summary = [r.getMessage() for r in caplog.records if r.getMessage().startswith("DICOM results:")]
    assert summary == [f"DICOM results: 2 SR and 2 GSPS in {out / 'dicom'}; 1 DICOM inputs without results; "
                       "1 inputs are not DICOM and get none"]


def test_a_rerun_replaces_the_same_objects(films: Path, tmp_path: Path):
    run(films, tmp_path / "first")
    run(films, tmp_path / "second", 0.99)
    for suffix in ("sr", "gsps"):
        first = pydicom.dcmread(tmp_path / "first" / "dicom" / f"pa.{suffix}.dcm")
        second = pydicom.dcmread(tmp_path / "second" / "dicom" / f"pa.{suffix}.dcm")
        assert (first.SOPInstanceUID, first.SeriesInstanceUID) == (second.SOPInstanceUID, second.SeriesInstanceUID)
    empty = pydicom.dcmread(tmp_path / "second" / "dicom" / "pa.sr.dcm")
    assert sr_findings(empty) == []
