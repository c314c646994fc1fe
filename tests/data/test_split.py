"""Patient-grouped, class-stratified, seeded split."""

from collections import Counter, defaultdict

import pytest

from chestdet.data.annotations import read_nih_csv
from chestdet.data.split import (
    DataEntry,
    SplitItem,
    parse_fractions,
    patient_of,
    read_data_entry,
    split_by_patient,
)
from tests.conftest import SAMPLE_CSV, SAMPLE_DATA_ENTRY, SAMPLE_IMAGES, SAMPLE_UNLABELED


def items_from_csv(csv_path, image_names=None, data_entry=None) -> list[SplitItem]:
    boxes, _ = read_nih_csv(csv_path)
    labels = defaultdict(set)
    for box in boxes:
        if image_names is None or box.image in image_names:
            labels[box.image].add(box.label)
    return [SplitItem(image, patient_of(image, data_entry), frozenset(found)) for image, found in labels.items()]


def assert_patients_disjoint(items, assignment):
    splits_of_patient = defaultdict(set)
    for item in items:
        splits_of_patient[item.patient].add(assignment[item.image])
    assert all(len(splits) == 1 for splits in splits_of_patient.values())


def classes_per_split(items, assignment):
    found = defaultdict(set)
    for item in items:
        found[assignment[item.image]].update(item.labels)
    return found


def test_whole_nih_list_split_keeps_patients_apart_and_every_class_everywhere():
    items = items_from_csv(SAMPLE_CSV)
    assignment = split_by_patient(items, seed=0)
    assert set(assignment) == {item.image for item in items}
    assert_patients_disjoint(items, assignment)
    every = {label for item in items for label in item.labels}
    assert all(found == every for found in classes_per_split(items, assignment).values())
    sizes = Counter(assignment.values())
    assert abs(sizes["train"] / len(items) - 0.7) < 0.03
    assert abs(sizes["val"] / len(items) - 0.15) < 0.03


def test_bundled_sample_of_40_images_puts_every_class_in_every_split():
    names = {path.name for path in sorted(SAMPLE_IMAGES.iterdir())}
    entries, _ = read_data_entry(SAMPLE_DATA_ENTRY)
    items = items_from_csv(SAMPLE_CSV, names, entries)
    items += [SplitItem(path.name, patient_of(path.name, entries)) for path in sorted(SAMPLE_UNLABELED.iterdir())]
    assert len(items) == 40
    assignment = split_by_patient(items, seed=0)
    assert_patients_disjoint(items, assignment)
    patients_per_class = defaultdict(set)
    for item in items:
        for label in item.labels:
            patients_per_class[label].add(item.patient)
    found = classes_per_split(items, assignment)
    for label, patients in patients_per_class.items():
        if len(patients) >= 3:
            assert all(label in found[split] for split in ("train", "val", "test")), label
    # the 4 negatives belong to 2 patients: one each for train and test, as with any two-patient class
    assert {item.patient for item in items if not item.labels} == {"00000001", "00000002"}
    assert {assignment[item.image] for item in items if not item.labels} == {"train", "test"}


def test_a_class_with_two_patients_goes_to_train_and_test():
    items = [SplitItem(f"{i:08d}_000.png", f"{i:08d}", frozenset({"Mass"})) for i in range(20)]
    items += [SplitItem("00000100_000.png", "00000100", frozenset({"Nodule"})),
              SplitItem("00000101_000.png", "00000101", frozenset({"Nodule"}))]
    assignment = split_by_patient(items, seed=3)
    assert sorted(assignment[item.image] for item in items if "Nodule" in item.labels) == ["test", "train"]


def test_same_seed_same_split_other_seed_other_split():
    items = items_from_csv(SAMPLE_CSV)
    assert split_by_patient(items, seed=7) == split_by_patient(list(reversed(items)), seed=7)
    assert split_by_patient(items, seed=7) != split_by_patient(items, seed=8)


def test_many_images_of_one_patient_stay_together():
    items = [SplitItem(f"00000001_{i:03d}.png", "00000001", frozenset({"Mass"})) for i in range(30)]
    items += [SplitItem(f"{i:08d}_000.png", f"{i:08d}", frozenset({"Mass"})) for i in range(2, 12)]
    assignment = split_by_patient(items, seed=0)
    assert len({assignment[item.image] for item in items if item.patient == "00000001"}) == 1
    assert_patients_disjoint(items, assignment)


def test_zero_fraction_split_gets_nothing():
    items = items_from_csv(SAMPLE_CSV)
    assignment = split_by_patient(items, parse_fractions("0.8,0.2,0"), seed=0)
    assert set(assignment.values()) == {"train", "val"}


def test_patient_id_comes_from_data_entry_then_nih_name_then_file_name():
    entries = {"renamed.png": DataEntry("00000042")}
    assert patient_of("renamed.png", entries) == "00000042"
    assert patient_of("00013118_008.png", entries) == "00013118"
    assert patient_of("scan-7.png", entries) == "scan-7.png"


def test_data_entry_patient_ids_match_the_file_name_form():
    entries, rejects = read_data_entry(SAMPLE_DATA_ENTRY)
    assert rejects == []
    assert entries["00000032_037.png"] == DataEntry("00000032", "AP")
    assert all(patient_of(image, entries) == patient_of(image) for image in entries)


def test_data_entry_without_patient_column_is_a_reject(tmp_path):
    path = tmp_path / "entry.csv"
    path.write_text("Image Index,Finding Labels\n00000032_037.png,Mass\n")
    entries, rejects = read_data_entry(path)
    assert entries == {}
    assert [(r.location, r.reason) for r in rejects] == [("header", "missing column(s) Patient ID")]


@pytest.mark.parametrize(
    "text, message",
    [("0.7,0.3", "--split needs 3 comma-separated fractions (train,val,test), got '0.7,0.3'"),
     ("0.7,a,0.15", "--split fractions must be numbers, got '0.7,a,0.15'"),
     ("0.7,0.2,0.2", "--split fractions must add up to 1, got '0.7,0.2,0.2' (sum 1.1)"),
     ("0,0.5,0.5", "--split fractions must be >= 0 and train > 0, got '0,0.5,0.5'")],
)
def test_bad_fractions_say_why(text, message):
    with pytest.raises(ValueError) as caught:
        parse_fractions(text)
    assert str(caught.value) == message


def test_fractions_parse():
    assert parse_fractions(" 0.8, 0.1 ,0.1") == {"train": 0.8, "val": 0.1, "test": 0.1}
