"""Which instances the node reads: the default rules, and rules from a JSON file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import Comprehensive3DSRStorage, CTImageStorage, GrayscaleSoftcopyPresentationStateStorage

from chestdet.clinical.filters import FilterError, load_filter
from tests.support.dicom_films import Study, film_dataset

GRAY = np.full((8, 8), 100, np.uint8)


def film(modality: str = "DX", **changes: object) -> pydicom.Dataset:
    dataset = film_dataset(GRAY, "mono2-8bit", Study(), 1, modality)
    for keyword, value in changes.items():
        if value is None:
            delattr(dataset, keyword)
        else:
            setattr(dataset, keyword, value)
    return dataset


@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")  # a lower-case body part, as some modalities send
def test_the_default_filter_reads_cr_dx_and_secondary_capture_chest_films():
    accept = load_filter(None)
    assert accept.reason(film("DX")) is None
    assert accept.reason(film("CR")) is None
    assert accept.reason(film("OT")) is None  # Secondary Capture
    assert accept.reason(film("DX", BodyPartExamined=None)) is None  # the tag is often missing
    assert accept.reason(film("DX", BodyPartExamined="chest ")) is None


@pytest.mark.parametrize(("changes", "reason"), [
    ({"SOPClassUID": Comprehensive3DSRStorage, "Modality": "SR"},
     "SOPClassUID 1.2.840.10008.5.1.4.1.1.88.34 (Comprehensive 3D SR Storage) is not one of those read"),
    ({"SOPClassUID": GrayscaleSoftcopyPresentationStateStorage, "Modality": "PR"},
     "SOPClassUID 1.2.840.10008.5.1.4.1.1.11.1 (Grayscale Softcopy Presentation State Storage) is not one of "
     "those read"),
    ({"Modality": "CT"}, "Modality 'CT' is not one of those read"),
    ({"SOPClassUID": CTImageStorage}, "SOPClassUID 1.2.840.10008.5.1.4.1.1.2 (CT Image Storage) is not one of "
     "those read"),
    ({"BodyPartExamined": "KNEE"}, "BodyPartExamined 'KNEE' is not one of those read"),
    ({"Modality": None}, "no Modality"),
    ({"PixelData": None}, "no pixel data"),
])
def test_the_default_filter_says_why_it_turns_an_instance_away(changes: dict, reason: str):
    assert load_filter(None).reason(film("DX", **changes)) == reason


def test_rules_from_a_file_by_keyword_or_uid(tmp_path: Path):
    rules = tmp_path / "filter.json"
    rules.write_text(json.dumps({
        "SOPClassUID": {"allowed": ["DigitalXRayImageStorageForPresentation", "1.2.840.10008.5.1.4.1.1.1"]},
        "BodyPartExamined": {"allowed": ["CHEST"]},
        "ViewPosition": {"allowed": ["PA", "AP"], "if_absent": True},
    }))
    accept = load_filter(rules)
    assert accept.reason(film("DX")) is None and accept.reason(film("CR")) is None
    assert accept.reason(film("DX", BodyPartExamined=None)) == "no BodyPartExamined"
    assert accept.reason(film("DX", ViewPosition="LL")) == "ViewPosition 'LL' is not one of those read"
    assert accept.reason(film("CR", Modality="CT")) is None  # this file has no Modality rule
    assert accept.sop_classes == {"1.2.840.10008.5.1.4.1.1.1.1", "1.2.840.10008.5.1.4.1.1.1"}


@pytest.mark.parametrize(("content", "message"), [
    ('{"Modalty": {"allowed": ["DX"]}}', "'Modalty' is not a DICOM keyword"),
    ('{"Modality": ["DX"]}', 'Modality: expected {"allowed": [values]'),
    ('{"Modality": {"allowed": "DX"}}', 'Modality: expected {"allowed": [values]'),
    ('{"SOPClassUID": {"allowed": ["NoSuchStorage"]}}', "'NoSuchStorage' is neither a UID nor a pydicom UID keyword"),
    ('["DX"]', "expected a JSON object of DICOM keywords"),
    ("{", "not JSON"),
])
def test_a_bad_filter_file_gets_one_line_naming_it(tmp_path: Path, content: str, message: str):
    rules = tmp_path / "filter.json"
    rules.write_text(content)
    with pytest.raises(FilterError, match=str(rules).replace(".", r"\.")) as raised:
        load_filter(rules)
    assert message in str(raised.value)
