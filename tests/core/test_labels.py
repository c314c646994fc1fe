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
    assert labels.default_label_map().ids == EXPECTED


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


NINE = 'item {\n  id: 9\n  name: "Fibrosis"\n}\n'


def own_map(tmp_path, text: str):
    path = tmp_path / "own.pbtxt"
    path.write_text(text)
    return path


def test_a_users_map_names_its_own_classes_and_keeps_the_nih_aliases(tmp_path):
    nine = labels.LabelMap.load(own_map(tmp_path, LABEL_MAP.read_text() + NINE))
    assert nine.names == (*labels.CLASS_NAMES, "Fibrosis")
    assert nine.canonical(" fibrosis ") == "Fibrosis" and nine.id_of("FIBROSIS") == 9
    assert nine.canonical("Infiltration") == "Infiltrate"
    tb = labels.LabelMap.load(own_map(tmp_path, 'item { id: 1 name: "ActiveTuberculosis" }\n'
                                                 'item { id: 2 name: "ObsoletePulmonaryTuberculosis" }\n'))
    assert tb.class_ids == {"ActiveTuberculosis": 1, "ObsoletePulmonaryTuberculosis": 2}
    with pytest.raises(labels.UnknownLabelError, match="unknown label 'Nodule'; expected one of ActiveTuberculosis, "
                                                       "ObsoletePulmonaryTuberculosis$"):
        tb.canonical("Nodule")


@pytest.mark.parametrize("text, reason", [
    ('item {\n  id: 1\n  name: "A"\n\n item { id: 2 }\n', r"own.pbtxt:5:2: not a valid label map: Message type "),
    ('item {\n  id: 1\n  name: "A"\n', r"own.pbtxt:3:9: not a valid label map: Expected \"}\""),
    ('item { id: 1 name: "A" }\nitem { id: 3 name: "B" }\n', r"own.pbtxt: ids 1, 3; a label map names ids 1..N"),
    ('item { id: 1 name: "A" }\nitem { id: 2 name: "a" }\n', r"own.pbtxt: every class needs a name of its own"),
])
def test_a_malformed_map_is_one_line_with_file_line_and_column(tmp_path, text, reason):
    with pytest.raises(labels.LabelMapError, match=reason) as error:
        labels.LabelMap.load(own_map(tmp_path, text))
    assert "\n" not in str(error.value)


def test_a_map_that_differs_from_the_models_is_refused_naming_both(tmp_path):
    model = labels.default_label_map()
    reordered = labels.LabelMap.from_items([(1, "Cardiomegaly"), (2, "Atelectasis"),
                                            *((i, n) for i, n in model.ids.items() if i > 2)], "reordered.pbtxt")
    with pytest.raises(labels.LabelMapError, match=r"^reordered.pbtxt \(8 classes: Cardiomegaly, Atelectasis, .*\) "
                                                   r"differs from the model's label map .*label_map.pbtxt \(8 "):
        reordered.check_same_as(model)
    model.check_same_as(labels.LabelMap.load(LABEL_MAP))


def test_shipped_predefined_classes_for_labelimg_are_the_label_maps_names_in_id_order():
    from chestdet.core.resources import resource

    names = resource("predefined_classes.txt").read_text(encoding="utf-8").splitlines()
    label_map = labels.load_label_map(LABEL_MAP)
    assert names == [label_map[class_id] for class_id in sorted(label_map)]
