"""Records read back with the OD API's own TfExampleDecoder hold exactly the CSV's boxes."""

from __future__ import annotations

import csv
import glob
import hashlib
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from chestdet.commands.generate_tfrecords import main
from chestdet.core.labels import class_id
from chestdet.data.annotations import read_nih_csv
from chestdet.data.records import KEY_SHA256, shard_glob
from tests.conftest import SAMPLE_CSV, SAMPLE_DATA_ENTRY, SAMPLE_IMAGES, SAMPLE_UNLABELED
from tests.support.records import decode_records

TOLERANCE = 1e-6


def csv_boxes_by_image(csv_path: Path) -> dict[str, list]:
    boxes, _ = read_nih_csv(csv_path)
    by_image = defaultdict(list)
    for box in boxes:
        by_image[box.image].append(box)
    return by_image


def assert_boxes_match_csv(decoded: dict[str, dict], csv_path: Path, size: int = 1024) -> int:
    """Each decoded box equals the CSV box divided by the image size, with its class id; returns boxes checked."""
    expected = csv_boxes_by_image(csv_path)
    checked = 0
    for name, example in decoded.items():
        want = sorted(
            ([b.ymin / size, b.xmin / size, b.ymax / size, b.xmax / size], class_id(b.label))
            for b in expected.get(name, [])
        )
        got = sorted((list(map(float, row)), label) for row, label in zip(example["boxes"], example["classes"],
                                                                           strict=True))
        assert len(got) == len(want), name
        for (got_box, got_class), (want_box, want_class) in zip(got, want, strict=True):
            assert got_class == want_class, name
            np.testing.assert_allclose(got_box, want_box, rtol=0, atol=TOLERANCE, err_msg=name)
        checked += len(got)
    return checked


@pytest.fixture(scope="module")
def sample_records(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("records") / "out dir"
    status = main([
        "--nih-csv", str(SAMPLE_CSV), "--image-dir", str(SAMPLE_IMAGES), "--unlabeled-dir", str(SAMPLE_UNLABELED),
        "--data-entry", str(SAMPLE_DATA_ENTRY), "--output-dir", str(output), "--workers", "2",
    ])
    assert status == 0
    return output


@pytest.fixture(scope="module")
def sample_decoded(sample_records) -> dict[str, dict]:
    return decode_records(sorted(sample_records.glob("*.tfrecord")))


def test_sample_boxes_decoded_by_the_od_api_equal_the_csv(sample_decoded):
    assert len(sample_decoded) == 40
    assert assert_boxes_match_csv(sample_decoded, SAMPLE_CSV) == 40


def test_sample_examples_carry_name_key_and_full_image(sample_decoded):
    for name, example in sample_decoded.items():
        path = SAMPLE_IMAGES / name if (SAMPLE_IMAGES / name).exists() else SAMPLE_UNLABELED / name
        assert example["source_id"] == name
        assert example["key"] == hashlib.sha256(path.read_bytes()).hexdigest()  # bytes stored unchanged
        assert example["image_shape"] == (1024, 1024, 3)
        assert example["difficult"] == [False] * len(example["classes"])


def test_negatives_are_written_without_boxes(sample_decoded):
    for path in SAMPLE_UNLABELED.iterdir():
        assert sample_decoded[path.name]["classes"] == []


def test_feature_keys_are_the_od_api_standard_ones(sample_decoded):
    import tensorflow as tf
    from object_detection.core.standard_fields import TfExampleFields

    standard = {value for name, value in vars(TfExampleFields).items() if not name.startswith("_")}
    for example in sample_decoded.values():
        parsed = tf.train.Example.FromString(example["raw"])
        keys = set(parsed.features.feature)
        assert keys - standard == {KEY_SHA256}
        assert parsed.features.feature[TfExampleFields.image_format].bytes_list.value == [b"png"]
        assert {TfExampleFields.image_encoded, TfExampleFields.object_class_text} <= keys


def test_split_globs_match_exactly_the_split_shards(sample_records):
    rows = list(csv.DictReader((sample_records / "split.csv").open()))
    for split in ("train", "val", "test"):
        shards = glob.glob(str(sample_records / f"{split}-*"))
        assert sorted(shards) == sorted(glob.glob(shard_glob(sample_records, split)))
        names = set(decode_records(shards))
        assert names == {row["image"] for row in rows if row["split"] == split}


def test_worker_count_does_not_change_a_byte(sample_records, tmp_path):
    output = tmp_path / "serial"
    main(["--nih-csv", str(SAMPLE_CSV), "--image-dir", str(SAMPLE_IMAGES), "--unlabeled-dir", str(SAMPLE_UNLABELED),
          "--data-entry", str(SAMPLE_DATA_ENTRY), "--output-dir", str(output), "--workers", "1"])
    for shard in sorted(sample_records.glob("*.tfrecord")):
        assert (output / shard.name).read_bytes() == shard.read_bytes(), shard.name
    assert (output / "split.csv").read_text() == (sample_records / "split.csv").read_text()


def test_max_size_keeps_boxes_right(tmp_path):
    output = tmp_path / "small"
    assert main(["--nih-csv", str(SAMPLE_CSV), "--image-dir", str(SAMPLE_IMAGES), "--output-dir", str(output),
                 "--max-size", "640", "--shards", "1"]) == 0
    decoded = decode_records(sorted(output.glob("*.tfrecord")))
    assert len(decoded) == 36
    assert assert_boxes_match_csv(decoded, SAMPLE_CSV) == 40
    assert {example["image_shape"] for example in decoded.values()} == {(640, 640, 3)}


def test_full_nih_copy_decodes_to_the_csv_boxes(full_nih, tmp_path):
    output = tmp_path / "full"
    assert main(["--nih-csv", str(full_nih / "BBox_List_2017.csv"), "--image-dir", str(full_nih / "images"),
                 "--data-entry", str(full_nih / "Data_Entry_2017_bbox_subset.csv"), "--output-dir", str(output)]) == 0
    decoded = decode_records(sorted(output.glob("*.tfrecord")))
    assert len(decoded) == len(list((full_nih / "images").iterdir())) == 440
    assert assert_boxes_match_csv(decoded, full_nih / "BBox_List_2017.csv") == 485
    rows = list(csv.DictReader((output / "split.csv").open()))
    patients = defaultdict(set)
    for row in rows:
        patients[row["patient"]].add(row["split"])
    assert all(len(splits) == 1 for splits in patients.values())


def test_default_shard_counts_grow_with_the_split_and_never_leave_a_shard_empty():
    from chestdet.data.records import shard_counts

    assert shard_counts({"train": 308, "val": 66, "test": 0}, None) == {"train": 4, "val": 1}
    assert shard_counts({"train": 150, "val": 20}, None) == {"train": 2, "val": 1}
    assert shard_counts({"train": 2, "val": 30}, 3) == {"train": 2, "val": 3}


def test_serialized_example_is_the_example_tf_train_example_builds(tmp_path):
    import tensorflow as tf
    from object_detection.utils import dataset_util

    from chestdet.core.imaging import stored_image
    from chestdet.data.annotations import Box
    from chestdet.data.records import serialize_example

    image = sorted(SAMPLE_IMAGES.glob("*.png"))[0]
    stored = stored_image(image)
    boxes = [Box(image.name, "Mass", 10, 20, 300, 400), Box(image.name, "Nodule", 500, 510, 530, 560, difficult=True)]
    ids = {"Mass": 5, "Nodule": 6}

    floats, ints, texts = (
        dataset_util.float_list_feature, dataset_util.int64_list_feature, dataset_util.bytes_list_feature
    )
    name = image.name.encode()
    expected = tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": texts([stored.data]), "image/filename": texts([name]), "image/source_id": texts([name]),
        "image/key/sha256": texts([hashlib.sha256(stored.data).hexdigest().encode()]),
        "image/format": texts([b"png"]), "image/height": ints([1024]), "image/width": ints([1024]),
        "image/object/bbox/xmin": floats([10 / 1024, 500 / 1024]),
        "image/object/bbox/ymin": floats([20 / 1024, 510 / 1024]),
        "image/object/bbox/xmax": floats([300 / 1024, 530 / 1024]),
        "image/object/bbox/ymax": floats([400 / 1024, 560 / 1024]),
        "image/object/class/text": texts([b"Mass", b"Nodule"]), "image/object/class/label": ints([5, 6]),
        "image/object/difficult": ints([0, 1]),
    }))
    first = serialize_example(stored, image.name, boxes, ids)
    assert tf.train.Example.FromString(first) == expected
    # The per-image message is reused: a following image keeps nothing of this one.
    negative = tf.train.Example.FromString(serialize_example(stored, "other.png", [], ids))
    assert negative.features.feature["image/filename"].bytes_list.value == [b"other.png"]
    assert not negative.features.feature["image/object/bbox/xmin"].float_list.value
    assert serialize_example(stored, image.name, boxes, ids) == first


def test_examples_serialised_in_threads_at_once_are_those_serialised_one_by_one():
    from concurrent.futures import ThreadPoolExecutor

    from chestdet.core.imaging import stored_image
    from chestdet.data.annotations import Box
    from chestdet.data.records import serialize_example

    images = sorted(SAMPLE_IMAGES.glob("*.png"))[:8]
    stored = {image.name: stored_image(image) for image in images}
    boxes = {image.name: [Box(image.name, "Mass", 10 + i, 20, 300, 400 + i)] * (i % 3)
             for i, image in enumerate(images)}

    def one(name: str) -> bytes:
        return serialize_example(stored[name], name, boxes[name], {"Mass": 5})

    expected = [one(name) for name in stored] * 25
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(one, list(stored) * 25)) == expected


def test_the_parent_takes_a_fair_share_of_the_shards():
    from chestdet.data.records import ShardTask, _parent_share

    def task(name: str, images: int) -> ShardTask:
        return ShardTask(Path(name), Path(name + ".tmp"), tuple(range(images)))

    tasks = [task("train-0", 77), task("train-1", 77), task("train-2", 76), task("train-3", 76), task("val", 66),
             task("test", 66)]
    own, forked = _parent_share(tasks, workers=2)
    assert sorted(t.path.name for t in own + forked) == sorted(t.path.name for t in tasks)
    assert abs(sum(len(t.jobs) for t in own) - sum(len(t.jobs) for t in forked)) <= 11
    own, forked = _parent_share(tasks, workers=3)
    assert sum(len(t.jobs) for t in own) == pytest.approx(sum(len(t.jobs) for t in tasks) / 3, abs=10)
