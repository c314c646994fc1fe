"""The eight classes, NIH's other spelling, and the label map the OD API reads."""

import pytest

from chestdet.core import labels
from tests.conftest import LABEL_MAP, SAMPLE_CSV

EXPECTED = {
    1: "Atelectasis", 2: "Cardiomegaly", 3: "Effusion", 4: "Infiltrate",
    5: "Mass", 6: "Nodule", 7: "Pneumonia", 8: "Pneumothorax",
}


def test_label_map_parses_with_label_map_util_and_has_ids_1_to_8():
    assert labels.load_label_map(LABEL_MAP) == EXPECTED


def test_category_index_is_what_visualization_utils_wants():
    index = labels.category_index(LABEL_MAP)
    assert index[4] == {"id": 4, "name": "Infiltrate"}
    assert sorted(index) == list(range(1, 9))


def test_class_names_agree_with_the_label_map():
    assert dict(enumerate(labels.CLASS_NAMES, start=1)) == EXPECTED


@pytest.mark.parametrize("name", ["Infiltration", "infiltration", " Infiltrate ", "INFILTRATE"])
def test_nih_spellings_map_to_infiltrate(name):
    assert labels.canonical_label(name) == "Infiltrate"
    assert labels.class_id(name) == 4


def test_every_label_of_the_real_csv_is_known():
    names = {line.split(",")[1] for line in SAMPLE_CSV.read_text().splitlines()[1:]}
    assert {labels.canonical_label(name) for name in names} == set(EXPECTED.values())


def test_unknown_label_names_the_label_and_the_choices():
    with pytest.raises(labels.UnknownLabelError, match=r"unknown label 'Edema'; expected one of Atelectasis, "):
        labels.canonical_label("Edema")


def test_class_name_round_trips_and_refuses_out_of_range_ids():
    assert [labels.class_name(labels.class_id(name)) for name in labels.CLASS_NAMES] == list(labels.CLASS_NAMES)
    with pytest.raises(ValueError, match="class id 9 is outside 1..8"):
        labels.class_name(9)
    with pytest.raises(ValueError, match="class id 0 is outside 1..8"):
        labels.class_name(0)


def test_shipped_predefined_classes_for_labelimg_are_the_label_maps_names_in_id_order():
    from chestdet.core.resources import resource

    names = resource("predefined_classes.txt").read_text(encoding="utf-8").splitlines()
    label_map = labels.load_label_map(LABEL_MAP)
    assert names == [label_map[class_id] for class_id in sorted(label_map)]
