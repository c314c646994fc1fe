"""The SR and GSPS of a film, read back as a consumer reads them (highdicom's TID 1500 parsing, dcmtk)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from chestdet.clinical import results
from chestdet.clinical.result_pool import dicom_bytes
from chestdet.core.detections import Detection
from chestdet.core.labels import CLASS_NAMES, class_colour
from tests.conftest import SAMPLE_IMAGES
from tests.support.dicom_films import Study, film_dataset, gray_from_png
from tests.support.dicom_results import dcmtk_verdict, gsps_boxes, sr_findings

NAMES = {number: name for number, name in enumerate(CLASS_NAMES, start=1)}
MODEL = results.ModelInfo("nih-export", "step 1200", results.derived_uid("test model"))
BOXES = [Detection(2, 0.87, 100.5, 200.25, 600.0, 700.0), Detection(5, 0.41, 10.0, 5.0, 80.0, 90.0)]


@pytest.fixture(scope="module")
def film() -> pydicom.Dataset:
    return film_dataset(gray_from_png(sorted(SAMPLE_IMAGES.glob("*.png"))[0]), "mono1-12bit-window", Study())


def round_trip(dataset: pydicom.Dataset) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(dicom_bytes(dataset)))


def test_every_class_has_a_snomed_code_and_the_scheme_is_named(film: pydicom.Dataset):
    assert set(results.FINDING_CODES) == set(CLASS_NAMES)
    assert {c.scheme_designator for c in results.FINDING_CODES.values()} == {"SCT"}
    assert len({c.value for c in results.FINDING_CODES.values()}) == len(CLASS_NAMES)
    sr = round_trip(results.structured_report(film, BOXES, NAMES, MODEL, 0.3))
    schemes = {s.CodingSchemeDesignator: s for s in sr.CodingSchemeIdentificationSequence}
    assert schemes["SCT"].CodingSchemeName == "SNOMED CT" and schemes["SCT"].CodingSchemeUID == "2.16.840.1.113883.6.96"


def test_the_sr_holds_each_box_its_class_score_tracking_and_algorithm(film: pydicom.Dataset):
    sr = hd.sr.srread(io.BytesIO(dicom_bytes(results.structured_report(film, BOXES, NAMES, MODEL, 0.3))))
    found = sr_findings(sr, film_uid=film.SOPInstanceUID)
    assert [(f.class_name, f.box, f.score) for f in found] == [
        ("Cardiomegaly", (100.5, 200.25, 600.0, 700.0), 0.87), ("Mass", (10.0, 5.0, 80.0, 90.0), 0.41)]
    groups = sr.content.get_planar_roi_measurement_groups()
    assert len({g.tracking_uid for g in groups}) == 2
    assert [g.finding_type.meaning for g in groups] == ["Cardiomegaly", "Mass"]
    algorithm = {item.ConceptNameCodeSequence[0].CodeMeaning: item.TextValue
                 for item in groups[0][0].ContentSequence if item.ValueType == "TEXT"}
    assert (algorithm["Algorithm Name"], algorithm["Algorithm Version"]) == ("nih-export", "step 1200")
    assert sr.content.get_observer_contexts()[0].observer_identifying_attributes.uid == MODEL.uid


def test_the_sr_is_preliminary_in_the_film_study_in_its_own_series_and_references_the_film(film: pydicom.Dataset):
    sr = round_trip(results.structured_report(film, BOXES, NAMES, MODEL, 0.3))
    assert (sr.PreliminaryFlag, sr.VerificationFlag, sr.CompletionFlag) == ("PRELIMINARY", "UNVERIFIED", "COMPLETE")
    assert (sr.StudyInstanceUID, sr.PatientID, sr.AccessionNumber) == (
        film.StudyInstanceUID, film.PatientID, film.AccessionNumber)
    assert sr.SeriesInstanceUID != film.SeriesInstanceUID and sr.Modality == "SR"
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence
    assert [e.ReferencedSOPInstanceUID for e in evidence] == [film.SOPInstanceUID]
    assert sr_findings(sr, film_uid="1.2.3.4") == []


def test_a_film_without_a_box_above_the_threshold_gets_an_sr_saying_so(film: pydicom.Dataset):
    sr = hd.sr.srread(io.BytesIO(dicom_bytes(results.structured_report(film, [], NAMES, MODEL, 0.35))))
    assert sr.content.get_planar_roi_measurement_groups() == []
    [group] = sr.content.get_image_measurement_groups()
    assert (group.finding_type.value, group.finding_type.meaning) == ("281900007", "No abnormality detected")
    assert group.get_measurements(name=results.THRESHOLD)[0].value == pytest.approx(0.35)
    assert [s.referenced_sop_instance_uid for s in group.source_images] == [film.SOPInstanceUID]


def test_uids_follow_from_the_film_and_the_model_only(film: pydicom.Dataset):
    first = results.result_uids(film, MODEL)
    assert results.result_uids(round_trip(film), MODEL) == first
    sr = results.structured_report(film, BOXES[:1], NAMES, MODEL, 0.5)
    again = results.structured_report(film, BOXES, NAMES, MODEL, 0.3)
    assert sr.SOPInstanceUID == again.SOPInstanceUID == first.sr_instance
    other_model = results.ModelInfo("nih-export", "step 2400", results.derived_uid("another model"))
    assert results.result_uids(film, other_model).sr_instance != first.sr_instance
    neighbour = film_dataset(gray_from_png(sorted(SAMPLE_IMAGES.glob("*.png"))[0], 64), "mono2-8bit", Study(), 2)
    theirs = results.result_uids(neighbour, MODEL)
    assert theirs.sr_instance != first.sr_instance and theirs.sr_series == first.sr_series
    assert len({*first.__dict__.values()}) == 4


def test_the_gsps_draws_the_boxes_with_text_in_class_colours_on_one_layer(film: pydicom.Dataset):
    gsps = round_trip(results.presentation_state(film, BOXES, NAMES, MODEL))
    assert [layer.GraphicLayer for layer in gsps.GraphicLayerSequence] == ["CHESTDET"]
    colours = [tuple(hd.color.CIELabColor.from_rgb(*class_colour(c)).value) for c in (2, 5)]
    assert gsps_boxes(gsps) == [((100.5, 200.25, 600.0, 700.0), "Cardiomegaly 0.87", colours[0]),
                                ((10.0, 5.0, 80.0, 90.0), "Mass 0.41", colours[1])]
    assert gsps.PresentationLUTShape == "INVERSE"  # the film is MONOCHROME1
    assert gsps.ReferencedSeriesSequence[0].ReferencedImageSequence[0].ReferencedSOPInstanceUID == film.SOPInstanceUID
    assert gsps.StudyInstanceUID == film.StudyInstanceUID and gsps.Modality == "PR"


def test_dcmtk_accepts_the_sr_and_the_gsps(film: pydicom.Dataset, tmp_path: Path):
    for name, made in (("sr", results.structured_report(film, BOXES, NAMES, MODEL, 0.3)),
                       ("empty-sr", results.structured_report(film, [], NAMES, MODEL, 0.3)),
                       ("gsps", results.presentation_state(film, BOXES, NAMES, MODEL)),
                       ("empty-gsps", results.presentation_state(film, [], NAMES, MODEL))):
        made.save_as(tmp_path / f"{name}.dcm", enforce_file_format=True)
        accepted, said = dcmtk_verdict(tmp_path / f"{name}.dcm")
        assert accepted, f"{name}: {said}"


def test_dcmpschk_verdict_sees_a_broken_presentation_state(film: pydicom.Dataset, tmp_path: Path):
    broken = results.presentation_state(film, BOXES, NAMES, MODEL)
    del broken.ContentLabel
    broken.save_as(tmp_path / "broken.dcm", enforce_file_format=True)
    assert not dcmtk_verdict(tmp_path / "broken.dcm")[0]


def test_model_info_names_the_export_and_step_and_its_uid_follows_the_export(tmp_path: Path):
    export = tmp_path / "nih v2"
    export.mkdir()
    (export / "export.json").write_text(json.dumps({"step": 1200, "checkpoint": "/runs/x/ckpt-7"}))
    info = results.model_info(export)
    assert (info.name, info.version, info.label) == ("nih v2", "step 1200", "nih v2 step 1200")
    assert results.model_info(export) == info
    (export / "export.json").write_text(json.dumps({"step": 2400}))
    assert results.model_info(export).uid != info.uid
    (export / "export.json").write_text(json.dumps({"step": None, "checkpoint": "/runs/x/ckpt-7"}))
    assert results.model_info(export).version == "ckpt-7"
