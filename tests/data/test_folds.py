"""k-fold cross-validation: fold invariants on the bundled sample and the 440 NIH images, and
generate_tfrecords --folds."""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from chestdet.commands.generate_tfrecords import main
from chestdet.data import dataset
from chestdet.data.folds import plan_folds
from chestdet.data.split import fold_splits, split_into_folds
from tests.conftest import SAMPLE_CSV, SAMPLE_DATA_ENTRY, SAMPLE_IMAGES, SAMPLE_UNLABELED
from tests.support.records import decode_records

VAL_SHARE = 0.15 / 0.85


def rows(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def nih_inputs(full_nih) -> dataset.Inputs:
    """The 440 NIH images with boxes (and the negatives beside them), read as generate_tfrecords reads them."""
    entry = next(full_nih.glob("Data_Entry*.csv"), None)
    spec = dataset.DatasetSpec(nih_csv=full_nih / "BBox_List_2017.csv", image_dirs=(full_nih / "images",),
                               unlabeled_dirs=(full_nih / "unlabeled",) if (full_nih / "unlabeled").is_dir() else (),
                               data_entry=entry)
    return dataset.read_inputs(spec)


def test_folds_on_440_images_keep_patients_apart_and_spread_every_class(nih_inputs):
    items = dataset.split_items(nih_inputs)
    assert len([item for item in items if item.labels]) == 440
    folds = split_into_folds(items, 5, seed=0)
    assert set(folds) == {item.image for item in items}  # every image in exactly one test fold
    assert set(folds.values()) == {1, 2, 3, 4, 5}
    folds_of_patient = defaultdict(set)
    for item in items:
        folds_of_patient[item.patient].add(folds[item.image])
    assert all(len(found) == 1 for found in folds_of_patient.values())
    sizes = Counter(folds.values())
    assert max(sizes.values()) - min(sizes.values()) <= 0.1 * len(items) / 5
    per_class, largest = defaultdict(Counter), Counter()
    for item in items:
        for label in item.labels or {"(no finding)"}:
            per_class[label][folds[item.image]] += 1
    for patient_label, images in Counter((item.patient, label) for item in items
                                         for label in item.labels or {"(no finding)"}).items():
        largest[patient_label[1]] = max(largest[patient_label[1]], images)
    assert len(per_class) == 9  # the 8 classes and the negatives
    for label, counts in per_class.items():
        assert set(counts) == {1, 2, 3, 4, 5}, label  # every class in every fold
        # as even as whole patients allow
        assert max(counts.values()) - min(counts.values()) <= max(2, 0.2 * sum(counts.values()) / 5) + largest[label]


@pytest.fixture(params=["bundled sample", "440 NIH images"])
def any_inputs(request) -> dataset.Inputs:
    """The bundled sample (always there), and the full NIH copy where it is."""
    if request.param == "440 NIH images":
        return request.getfixturevalue("nih_inputs")
    spec = dataset.DatasetSpec(nih_csv=SAMPLE_CSV, image_dirs=(SAMPLE_IMAGES,), unlabeled_dirs=(SAMPLE_UNLABELED,),
                               data_entry=SAMPLE_DATA_ENTRY)
    return dataset.read_inputs(spec)


def test_every_fold_keeps_each_patient_on_one_side(any_inputs):
    items = dataset.split_items(any_inputs)
    folds_count = 5 if len(items) > 100 else 3
    plan = plan_folds(any_inputs, folds_count, VAL_SHARE, seed=0)
    patient = {item.image: item.patient for item in items}
    folds_of_patient = defaultdict(set)
    for image, fold in plan.fold_of.items():
        folds_of_patient[patient[image]].add(fold)
    assert all(len(found) == 1 for found in folds_of_patient.values())
    assert set(plan.fold_of) == set(patient) and set(plan.fold_of.values()) == set(range(1, folds_count + 1))
    for splits in plan.splits:
        parts = defaultdict(set)
        for image, split in splits.items():
            parts[split].add(patient[image])
        assert not parts["val"] & parts["test"] and not parts["train"] & parts["test"]
        assert not parts["val"] & parts["train"] and parts["train"] and parts["test"]


def test_each_folds_val_comes_from_its_training_patients(nih_inputs):
    items = dataset.split_items(nih_inputs)
    patient = {item.image: item.patient for item in items}
    folds = split_into_folds(items, 5, seed=0)
    tested = Counter()
    for fold in range(1, 6):
        splits = fold_splits(items, folds, fold, VAL_SHARE, seed=0)
        assert {image for image, split in splits.items() if split == "test"} == {
            image for image, found in folds.items() if found == fold}
        parts = defaultdict(set)
        for image, split in splits.items():
            parts[split].add(patient[image])
        assert not parts["val"] & parts["test"] and not parts["train"] & parts["test"]
        assert not parts["val"] & parts["train"]
        share = Counter(splits.values())
        assert abs(share["val"] / (share["val"] + share["train"]) - VAL_SHARE) < 0.03
        val_classes = {label for item in items if splits[item.image] == "val" for label in item.labels}
        assert len(val_classes) == 8
        tested.update(image for image, split in splits.items() if split == "test")
    assert set(tested.values()) == {1} and len(tested) == len(items)


def test_same_seed_same_folds_other_seed_other_folds(any_inputs):
    folds_count = 5 if len(dataset.split_items(any_inputs)) > 100 else 3
    first = plan_folds(any_inputs, folds_count, VAL_SHARE, seed=3)
    again = plan_folds(any_inputs, folds_count, VAL_SHARE, seed=3)
    other = plan_folds(any_inputs, folds_count, VAL_SHARE, seed=4)
    assert first.fold_of == again.fold_of and first.splits == again.splits and first.jobs == again.jobs
    assert first.fold_of != other.fold_of


def test_fewer_folds_than_two_is_refused():
    with pytest.raises(ValueError, match="at least 2 folds"):
        split_into_folds([], 1)


def sample_argv(output: Path, *extra: str) -> list[str]:
    return ["--nih-csv", str(SAMPLE_CSV), "--image-dir", str(SAMPLE_IMAGES), "--data-entry", str(SAMPLE_DATA_ENTRY),
            "--unlabeled-dir", str(SAMPLE_UNLABELED), "--output-dir", str(output), *extra]


@pytest.fixture(scope="module")
def sample_folds(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("folds") / "fold records"
    assert main(sample_argv(output, "--folds", "3", "--workers", "2")) == 0
    return output


def test_folds_layout_on_the_bundled_sample(sample_folds):
    names = sorted(path.name for path in sample_folds.iterdir())
    assert names == ["fold-1", "fold-2", "fold-3", "folds.csv", "label_map.pbtxt", "rejects.csv", "summary.json"]
    folds = rows(sample_folds / "folds.csv")
    assert list(folds[0]) == ["image", "patient", "fold"] and len(folds) == 40
    assert Counter(row["fold"] for row in folds).keys() == {"1", "2", "3"}
    summary = json.loads((sample_folds / "summary.json").read_text())
    assert summary["options"]["folds"] == 3 and list(summary["splits"]) == ["fold-1", "fold-2", "fold-3"]
    assert summary["totals"]["images"] == 40
    for fold in (1, 2, 3):
        folder = sample_folds / f"fold-{fold}"
        assert sorted(path.name for path in folder.iterdir()) == [
            "split.csv", "test-00000-of-00001.tfrecord", "test-images.txt", "train-00000-of-00001.tfrecord",
            "val-00000-of-00001.tfrecord"]
        assert set(summary["folds"][f"fold-{fold}"]) == {"train", "val", "test"}


def test_fold_records_decode_to_their_split_and_match_the_single_split_records(sample_folds, tmp_path):
    folds = {row["image"]: row["fold"] for row in rows(sample_folds / "folds.csv")}
    assert main(sample_argv(tmp_path / "plain")) == 0
    plain = decode_records(sorted((tmp_path / "plain").glob("*.tfrecord")))
    for fold in ("1", "2", "3"):
        folder = sample_folds / f"fold-{fold}"
        split = {row["image"]: row for row in rows(folder / "split.csv")}
        assert set(split) == set(folds)
        for part in ("train", "val", "test"):
            decoded = decode_records(sorted(folder.glob(f"{part}-*.tfrecord")))
            assert set(decoded) == {image for image, row in split.items() if row["split"] == part}
            for image, example in decoded.items():
                assert example["raw"] == plain[image]["raw"]  # the same Example, byte for byte
                assert len(example["classes"]) == int(split[image]["boxes"])
        tests = {image for image, row in split.items() if row["split"] == "test"}
        assert tests == {image for image, found in folds.items() if found == fold}
        listed = (folder / "test-images.txt").read_text().splitlines()
        assert {Path(line).name for line in listed} == tests
        assert all((folder / line).is_file() for line in listed)


def test_folds_over_a_single_split_run_remove_its_shards_and_split(tmp_path):
    output = tmp_path / "records"
    assert main(sample_argv(output)) == 0
    assert (output / "split.csv").is_file() and list(output.glob("train-*"))
    assert main(sample_argv(output, "--folds", "2")) == 0
    assert not (output / "split.csv").exists() and not list(output.glob("*.tfrecord"))
    assert (output / "fold-2" / "split.csv").is_file()


def test_too_few_patients_for_the_folds_exits_2_and_reports(tmp_path, caplog):
    from chestdet.commands.cli import run_main

    one = tmp_path / "one.csv"
    one.write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\n00000032_037.png,Mass,100,200,50,60\n")
    output = tmp_path / "out"
    assert run_main(main, ["--nih-csv", str(one), "--image-dir", str(SAMPLE_IMAGES), "--output-dir", str(output),
                           "--folds", "2"]) == 2
    assert "2 folds need at least 2 patients; the images have 1" in caplog.text
    assert (output / "rejects.csv").is_file() and (output / "summary.json").is_file()
