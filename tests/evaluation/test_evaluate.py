"""The evaluation stage on real NIH sample rows: the three ground-truth sources, image selection,
splits, rejected rows and the library entry point used by training."""

from __future__ import annotations

import csv
import json
import math
import shutil
from dataclasses import replace
from pathlib import Path
from xml.sax.saxutils import escape

import pandas as pd
import pytest

from chestdet.core.errors import ChestdetError as UserError
from chestdet.core.labels import CLASS_NAMES as CLASS_NAMES_BY_ID
from chestdet.core.labels import class_id
from chestdet.data.annotations import Box, read_nih_csv
from chestdet.data.split import read_split
from chestdet.detection.inputs import list_inputs
from chestdet.evaluation import detection_set, evaluate, ground_truth, selection
from chestdet.evaluation.metrics import EvaluationSettings, compute_metrics
from tests.conftest import SAMPLE_CSV, SAMPLE_IMAGES, SAMPLE_UNLABELED
from tests.support.evaluation_inputs import (
    BOXED,
    fake_detections,
    sample_boxes,
    unlabeled_images,
    write_detections_folder,
    write_nih_csv,
)


def write_voc_folder(folder: Path, boxes: list[Box]) -> Path:
    """labelImg's layout: one XML per image, corners in pixels, the image itself elsewhere."""
    folder.mkdir(parents=True, exist_ok=True)
    by_image: dict[str, list[Box]] = {}
    for box in boxes:
        by_image.setdefault(box.image, []).append(box)
    for image, image_boxes in by_image.items():
        objects = "".join(
            f"<object><name>{escape(b.label)}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<difficult>{int(b.difficult)}</difficult><bndbox><xmin>{b.xmin!r}</xmin><ymin>{b.ymin!r}</ymin>"
            f"<xmax>{b.xmax!r}</xmax><ymax>{b.ymax!r}</ymax></bndbox></object>"
            for b in image_boxes
        )
        (folder / f"{Path(image).stem}.xml").write_text(
            f"<annotation><folder>images</folder><filename>{image}</filename><path>/elsewhere/{image}</path>"
            f"<source><database>Unknown</database></source><size><width>1024</width><height>1024</height>"
            f"<depth>1</depth></size><segmented>0</segmented>{objects}</annotation>"
        )
    return folder


def tf_example(image_path: Path, boxes: list[Box], stored: tuple[bytes, int, int] | None = None):
    """A record the way the OD API reads them: keys from TfExampleFields, corners normalised by the
    original 1024x1024 size; `stored` replaces the image by other PNG bytes (width, height)."""
    import tensorflow as tf
    from object_detection.core.standard_fields import TfExampleFields as keys
    from object_detection.utils import dataset_util

    floats, ints, strings = (
        dataset_util.float_list_feature, dataset_util.int64_list_feature, dataset_util.bytes_list_feature
    )
    width = height = 1024
    data, stored_width, stored_height = stored or (image_path.read_bytes(), width, height)
    feature = {
        keys.image_encoded: strings([data]),
        keys.image_format: strings([b"png"]),
        keys.filename: strings([image_path.name.encode()]),
        keys.source_id: strings([image_path.name.encode()]),
        keys.height: ints([stored_height]),
        keys.width: ints([stored_width]),
        keys.object_bbox_xmin: floats([b.xmin / width for b in boxes]),
        keys.object_bbox_ymin: floats([b.ymin / height for b in boxes]),
        keys.object_bbox_xmax: floats([b.xmax / width for b in boxes]),
        keys.object_bbox_ymax: floats([b.ymax / height for b in boxes]),
        keys.object_class_text: strings([b.label.encode() for b in boxes]),
        keys.object_class_label: ints([class_id(b.label) for b in boxes]),
        keys.object_difficult: ints([int(b.difficult) for b in boxes]),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


def write_tfrecords(path: Path, images: list[Path], boxes: list[Box], downscale_to: int | None = None) -> Path:
    import cv2
    import tensorflow as tf

    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for image in images:
            stored = None
            if downscale_to:  # what the dataset step's --max-size does: a smaller copy, same normalised boxes
                pixels = cv2.resize(cv2.imread(str(image), cv2.IMREAD_GRAYSCALE), (downscale_to, downscale_to),
                                    interpolation=cv2.INTER_AREA)
                stored = (cv2.imencode(".png", pixels)[1].tobytes(), downscale_to, downscale_to)
            example = tf_example(image, [b for b in boxes if b.image == image.name], stored)
            writer.write(example.SerializeToString())
    return path


def flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flatten(item, f"{prefix}/{key}").items()}
    if isinstance(value, list):
        return {k: v for n, item in enumerate(value) for k, v in flatten(item, f"{prefix}[{n}]").items()}
    return {prefix: value}


def assert_same_metrics(a: dict, b: dict) -> None:
    flat_a, flat_b = flatten(a), flatten(b)
    assert flat_a.keys() == flat_b.keys()
    for key, value in flat_a.items():
        if isinstance(value, float):
            assert flat_b[key] == pytest.approx(value, abs=1e-6), key
        else:
            assert flat_b[key] == value, key


@pytest.fixture
def sample_case(tmp_path):
    boxes = sample_boxes()
    negatives = unlabeled_images()
    images = [*BOXED, *negatives]
    detections = write_detections_folder(tmp_path / "detections run", fake_detections(boxes, negatives), images)
    return boxes, negatives, images, detections


# ---------------------------------------------------------------------------------------------


def test_three_ground_truth_sources_give_the_same_metrics(tmp_path, sample_case):
    boxes, negatives, images, detections = sample_case
    csv_gt = write_nih_csv(tmp_path / "gt boxes.csv", boxes)
    voc_gt = write_voc_folder(tmp_path / "voc xml", boxes)
    image_paths = [SAMPLE_IMAGES / name for name in BOXED] + [SAMPLE_UNLABELED / name for name in negatives]
    records = write_tfrecords(tmp_path / "records" / "test-00000-of-00001.tfrecord", image_paths, boxes)

    results = {
        name: evaluate.run_evaluation(detections, spec, tmp_path / f"out {name}", plots=False)
        for name, spec in (("csv", csv_gt), ("voc", voc_gt), ("tfrecord", records))
    }
    documents = {name: json.loads((run.output_dir / "metrics.json").read_text()) for name, run in results.items()}
    for document in documents.values():
        document.pop("sources")
    assert documents["csv"]["images"] == len(images) == 8
    assert sum(documents["csv"]["boxes"].values()) == len(boxes) == 7
    assert documents["csv"]["coco"]["overall"]["ap50"] > 0.3  # jittered boxes mostly hit
    assert_same_metrics(documents["csv"], documents["voc"])
    assert_same_metrics(documents["csv"], documents["tfrecord"])
    # The boxes themselves agree too, the TFRecord ones to float32 precision.
    truth = {name: selection.prepare_inputs(detections, spec).ground_truth
             for name, spec in (("csv", csv_gt), ("voc", voc_gt), ("tfrecord", records))}
    key = ["image", "label", "xmin"]
    reference = truth["csv"].sort_values(key).reset_index(drop=True)
    for name in ("voc", "tfrecord"):
        other = truth[name].sort_values(key).reset_index(drop=True)
        pd.testing.assert_frame_equal(reference, other, atol=1e-3, check_exact=False)


def test_difficult_flags_of_labelimg_xml_and_records_are_honoured(tmp_path, sample_case):
    boxes, negatives, images, detections = sample_case
    hard = [replace(boxes[0], difficult=True), *boxes[1:]]
    image_paths = [SAMPLE_IMAGES / name for name in BOXED] + [SAMPLE_UNLABELED / name for name in negatives]
    sources = {
        "voc": write_voc_folder(tmp_path / "voc xml", hard),
        "tfrecord": write_tfrecords(tmp_path / "records" / "test-00000-of-00001.tfrecord", image_paths, hard),
    }
    documents = {}
    for name, spec in sources.items():
        run = evaluate.run_evaluation(detections, spec, tmp_path / f"out {name}", plots=False)
        assert run.inputs.ground_truth["difficult"].tolist().count(True) == 1
        documents[name] = json.loads((run.output_dir / "metrics.json").read_text())
        documents[name].pop("sources")
        assert f"- Difficult boxes ignored: 1 ({boxes[0].label} 1)" in (run.output_dir / "report.md").read_text()
    assert documents["voc"]["ignored_boxes"][boxes[0].label] == 1
    assert sum(documents["voc"]["boxes"].values()) == len(boxes) - 1
    assert_same_metrics(documents["voc"], documents["tfrecord"])
    plain = evaluate.run_evaluation(detections, write_voc_folder(tmp_path / "plain xml", boxes), tmp_path / "plain",
                                    plots=False)
    assert sum(plain.metrics.boxes.values()) == len(boxes) and sum(plain.metrics.ignored.values()) == 0


def test_patients_come_from_the_split_file_else_from_nih_file_names(tmp_path):
    split = write_split(tmp_path / "split.csv", [("00000032_037.png", "test"), ("scan.png", "test")])
    patients, note = selection.image_patients(["00000032_037.png", "00000072_000.png", "other.png"])
    assert patients == ["00000032", "00000072", "other.png"]
    assert note.startswith("bootstrap: 1 images have no patient id")
    frame = pd.read_csv(split, dtype=str)
    frame.loc[frame["image"] == "scan.png", "patient"] = "P9"
    frame.to_csv(split, index=False)
    patients, note = selection.image_patients(["00000032_037.png", "scan.png"], read_split(split))
    assert patients == [frame.loc[0, "patient"], "P9"] and note == ""


def test_downscaled_records_are_scored_in_the_pixels_detection_saw(tmp_path, sample_case):
    boxes, negatives, images, detections = sample_case
    image_paths = [SAMPLE_IMAGES / name for name in BOXED] + [SAMPLE_UNLABELED / name for name in negatives]
    small = write_tfrecords(tmp_path / "small" / "test-00000-of-00001.tfrecord", image_paths, boxes, downscale_to=512)
    assert ground_truth.read_ground_truth(small).sizes[BOXED[0]] == (512, 512)
    from_records = evaluate.run_evaluation(detections, small, tmp_path / "a", plots=False)
    from_csv = evaluate.run_evaluation(detections, SAMPLE_CSV, tmp_path / "b", plots=False)
    assert from_records.inputs.rejects == []
    csv_metrics, record_metrics = from_csv.metrics.to_dict(), from_records.metrics.to_dict()
    assert csv_metrics.pop("notes")[0].endswith("were not among the evaluated images and are left out")
    assert record_metrics.pop("notes") == []
    assert_same_metrics(csv_metrics, record_metrics)
    assert from_csv.metrics.coco.overall.ap > 0.2


def test_record_of_another_aspect_ratio_than_the_detected_image_is_rejected(tmp_path):
    boxes = [b for b in sample_boxes() if b.image == BOXED[0]]
    records = write_tfrecords(tmp_path / "r" / "test-00000-of-00001.tfrecord", [SAMPLE_IMAGES / BOXED[0]], boxes)
    rows = [[BOXED[0], 1024, 800, 4, "Infiltrate", 0.9, 1, 1, 50, 50]]
    folder = tmp_path / "d"
    write_detections_folder(folder, rows, None)
    inputs = selection.prepare_inputs(folder, records)
    assert inputs.ground_truth.empty
    assert [r.reason for r in inputs.rejects] == [
        f"{BOXED[0]}: the boxes are for a 1024x1024 image but detection saw 1024x800 (different aspect ratio)"]
    assert inputs.rejects[0].location == f"record 1 ({BOXED[0]}) object 1"


def test_nih_boxes_meet_detections_on_a_resized_copy(tmp_path, sample_case):
    # Detection ran on 512x512 copies of the NIH PNGs: its boxes are half the size, and so must the
    # ground truth's be; the metrics are those of the full-size run.
    boxes, negatives, images, detections = sample_case
    rows = pd.read_csv(detections)
    rows[["xmin", "ymin", "xmax", "ymax"]] /= 2
    rows[["width", "height"]] = 512
    folder = tmp_path / "half"
    write_detections_folder(folder, rows.values.tolist(), None)
    (folder / "images.csv").write_text("image,path,width,height,detections\n"
                                       + "".join(f"{name},{name},512,512,1\n" for name in images))
    half = evaluate.run_evaluation(folder, SAMPLE_CSV, tmp_path / "a", plots=False)
    full = evaluate.run_evaluation(detections, SAMPLE_CSV, tmp_path / "b", plots=False)
    assert half.inputs.ground_truth["xmax"].max() <= 512
    assert_same_metrics(full.metrics.to_dict(), half.metrics.to_dict())


def test_tfrecord_folder_glob_and_split_shards(tmp_path):
    boxes = sample_boxes()
    test_images = [SAMPLE_IMAGES / BOXED[0], SAMPLE_UNLABELED / unlabeled_images()[0]]
    folder = tmp_path / "records dir"
    write_tfrecords(folder / "test-00000-of-00001.tfrecord", test_images, boxes)
    write_tfrecords(folder / "val-00000-of-00001.tfrecord", [SAMPLE_IMAGES / BOXED[1]], boxes)
    (folder / "test-summary.json").write_text("{}")  # not a record: skipped
    test_truth = ground_truth.read_ground_truth(folder, split="test")
    assert test_truth.images == [BOXED[0], unlabeled_images()[0]]
    assert {box.image for box in test_truth.boxes} == {BOXED[0]}
    assert test_truth.rejects == []
    val_truth = ground_truth.read_ground_truth(folder, split="val")
    assert val_truth.images == [BOXED[1]]
    by_glob = ground_truth.read_ground_truth(str(folder / "*-00000-of-00001.tfrecord"))
    assert sorted(by_glob.images) == sorted([*test_truth.images, *val_truth.images])
    shutil.copy(folder / "test-00000-of-00001.tfrecord", folder / "test-00001-of-00001.tfrecord")
    twice = ground_truth.read_ground_truth(folder, split="test")
    assert twice.images == test_truth.images and len(twice.boxes) == len(test_truth.boxes)
    assert [(r.location, r.reason) for r in twice.rejects] == [
        ("record 1", f"{BOXED[0]} is in an earlier record too"),
        ("record 2", f"{unlabeled_images()[0]} is in an earlier record too")]
    first = [b for b in boxes if b.image == BOXED[0]][0]
    decoded = test_truth.boxes[0]
    assert (decoded.label, decoded.source) == (first.label, "tfrecord")
    assert decoded.xmin == pytest.approx(first.xmin, abs=1e-3) and decoded.ymax == pytest.approx(first.ymax, abs=1e-3)


def test_corrupt_tfrecord_is_a_reject_not_a_crash(tmp_path):
    boxes = sample_boxes()
    good = write_tfrecords(tmp_path / "test-00000-of-00002.tfrecord", [SAMPLE_IMAGES / BOXED[0]], boxes)
    bad = tmp_path / "test-00001-of-00002.tfrecord"
    data = good.read_bytes()
    bad.write_bytes(data[:20] + bytes(b ^ 0xFF for b in data[20:60]) + data[60:])
    truth = ground_truth.read_ground_truth(tmp_path, split="test")
    assert truth.images == [BOXED[0]]
    assert len(truth.rejects) == 1
    assert truth.rejects[0].source == str(bad)
    assert truth.rejects[0].reason.startswith("corrupt file:")


def test_tfrecord_with_unknown_class_id_rejects_that_box(tmp_path):
    import tensorflow as tf

    example = tf_example(SAMPLE_IMAGES / BOXED[0], [b for b in sample_boxes() if b.image == BOXED[0]])
    example.features.feature["image/object/class/label"].int64_list.value[0] = 12
    path = tmp_path / "one.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(example.SerializeToString())
    truth = ground_truth.read_ground_truth(path)
    assert truth.boxes == [] and truth.images == [BOXED[0]]
    assert truth.rejects[0].location == f"record 1 ({BOXED[0]}) object 1"
    assert truth.rejects[0].reason == "class id 12 is outside 1..8"


def test_images_are_matched_by_file_name(tmp_path, sample_case):
    boxes, negatives, images, _ = sample_case
    nested = [f"batch 1/{name}" for name in images]
    rows = fake_detections(boxes, negatives, prefix="batch 1/")
    folder = tmp_path / "nested"
    write_detections_folder(folder, rows, nested)
    flat = evaluate.run_evaluation(tmp_path / "detections run", SAMPLE_CSV, tmp_path / "flat", plots=False)
    deep = evaluate.run_evaluation(folder, SAMPLE_CSV, tmp_path / "deep", plots=False)
    assert deep.metrics.images == 8 and sum(deep.metrics.boxes.values()) == 7
    assert_same_metrics(flat.metrics.to_dict(), deep.metrics.to_dict())


def test_whole_nih_list_keeps_only_processed_images_and_says_so(tmp_path, sample_case):
    _, _, _, detections = sample_case
    inputs = selection.prepare_inputs(detections, SAMPLE_CSV)
    assert inputs.images == [*BOXED, *unlabeled_images()]
    assert set(inputs.ground_truth["image"]) == set(BOXED)
    assert "874 ground-truth images (977 boxes) were not among the evaluated images and are left out" in inputs.notes


def test_images_without_detections_count_as_negatives(tmp_path):
    boxes = sample_boxes()
    rows = fake_detections(boxes, [])  # nothing on the negatives
    negatives = unlabeled_images()
    with_list = write_detections_folder(tmp_path / "a", rows, [*BOXED, *negatives])
    run = evaluate.run_evaluation(with_list, SAMPLE_CSV, tmp_path / "out a", plots=False)
    assert run.metrics.images == 8
    # Nodule: 00002290_001's Nodule is found (TP); 00000032_037's Infiltrate is reported as a Nodule (FP);
    # the other 6 images, the two without any detection among them, are true negatives.
    nodule = run.metrics.image_level["Nodule"]
    counts = (nodule.true_positives, nodule.false_positives, nodule.false_negatives, nodule.true_negatives)
    assert counts == (1, 1, 0, 6)
    assert nodule.specificity == pytest.approx(6 / 7)
    without_negatives = write_detections_folder(tmp_path / "b", rows, BOXED)
    fewer = evaluate.run_evaluation(without_negatives, SAMPLE_CSV, tmp_path / "out b", plots=False)
    assert fewer.metrics.image_level["Nodule"].true_negatives == 4


def test_without_images_csv_only_detected_images_count_and_a_log_line_says_so(tmp_path, caplog):
    boxes = sample_boxes()
    folder = write_detections_folder(tmp_path / "no list", fake_detections(boxes, []), None)
    with caplog.at_level("INFO", logger="chestdet"):
        run = evaluate.run_evaluation(folder, SAMPLE_CSV, tmp_path / "out", plots=False)
    assert run.metrics.images == 6
    assert ("images.csv not found beside the detections: evaluating only the images that have detections, "
            "so images without any detection are not counted") in caplog.text


def write_split(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "patient", "split", "boxes"])
        for image, split in rows:
            writer.writerow([image, image.split("_")[0], split, 1])
    return path


def test_split_restricts_ground_truth_and_detections(tmp_path, sample_case):
    boxes, negatives, images, detections = sample_case
    test_images = [BOXED[0], BOXED[5], negatives[0]]
    split = write_split(tmp_path / "split.csv", [(name, "test" if name in test_images else "train") for name in images])
    inputs = selection.prepare_inputs(detections, SAMPLE_CSV, split, "test")
    assert inputs.images == [BOXED[0], BOXED[5], negatives[0]]
    assert set(inputs.ground_truth["image"]) == {BOXED[0], BOXED[5]}
    assert set(inputs.detections["image"]) <= set(test_images)
    assert "5 processed images are outside the split and are not evaluated" in inputs.notes
    library = evaluate.evaluate_detections(
        pd.read_csv(detections), boxes, images=test_images, settings=EvaluationSettings()
    ).to_dict()
    direct = compute_metrics(inputs.ground_truth, inputs.detections, inputs.images).to_dict()
    assert library.pop("notes") == ["5 ground-truth boxes on images not evaluated were left out"]
    direct.pop("notes")
    assert library == direct


def test_split_without_images_csv_adds_the_split_images(tmp_path):
    boxes = sample_boxes()
    negative = unlabeled_images()[0]
    folder = write_detections_folder(tmp_path / "d", fake_detections(boxes, []), None)
    split = write_split(tmp_path / "split.csv", [(BOXED[0], "test"), (negative, "test"), (BOXED[1], "val")])
    inputs = selection.prepare_inputs(folder, SAMPLE_CSV, split, "test")
    assert inputs.images == [BOXED[0], negative]
    assert any("plus every image of the split" in note for note in inputs.notes)


def test_unknown_split_names_the_splits_present(tmp_path, sample_case):
    _, _, images, detections = sample_case
    split = write_split(tmp_path / "split.csv", [(name, "train") for name in images])
    with pytest.raises(UserError) as error:
        selection.prepare_inputs(detections, SAMPLE_CSV, split, "test")
    assert str(error.value) == f"{split}: no image is in split 'test' (splits present: train)"


def test_bad_detection_rows_are_rejected_with_row_numbers(tmp_path, sample_case):
    boxes, negatives, images, _ = sample_case
    rows = fake_detections(boxes, negatives)
    rows.insert(1, [BOXED[0], 1024, 1024, "x", "", 0.5, 1, 1, 2, 2])  # no class (one of another map: refused)
    rows.insert(2, [BOXED[0], 1024, 1024, 5, "Mass", "high", 1, 1, 2, 2])
    rows.insert(3, [BOXED[0], 1024, 1024, 5, "Mass", 0.5, 10, 1, 2, 2])
    rows.insert(4, ["", 1024, 1024, 5, "Mass", 0.5, 1, 1, 2, 2])
    detections = write_detections_folder(tmp_path / "bad", rows, images)
    run = evaluate.run_evaluation(detections, SAMPLE_CSV, tmp_path / "out", plots=False)
    assert [(r.location, r.reason) for r in run.inputs.rejects] == [
        ("row 3", "no usable class_name or class_id (class_id 'x')"),
        ("row 4", "score is 'high', not a number"),
        ("row 5", "box corners out of order (xmin 10, ymin 1, xmax 2, ymax 2)"),
        ("row 6", "empty image name"),
    ]
    with open(tmp_path / "out" / "rejects.csv", newline="") as handle:
        written = list(csv.DictReader(handle))
    assert [row["location"] for row in written] == ["row 3", "row 4", "row 5", "row 6"]
    assert written[0]["source"] == str(detections)
    assert run.metrics.detections == len(rows) - 4


def test_duplicate_file_names_in_different_folders_are_refused(tmp_path):
    rows = [["a/x.png", 10, 10, 5, "Mass", 0.5, 1, 1, 2, 2]]
    folder = write_detections_folder(tmp_path / "d", rows, ["a/x.png", "b/x.png"])
    with pytest.raises(UserError, match="2 processed images share a file name|processed images share a file name"):
        selection.prepare_inputs(folder, SAMPLE_CSV)


def test_ground_truth_that_is_neither_xml_nor_records(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(UserError) as error:
        ground_truth.read_ground_truth(tmp_path)
    assert str(error.value) == f"{tmp_path}: holds neither labelImg .xml files nor test-* TFRecord shards"
    with pytest.raises(UserError, match="no TFRecord files match this pattern"):
        ground_truth.read_ground_truth(str(tmp_path / "test-*.tfrecord"))


def test_ground_truth_without_a_usable_box_is_an_error(tmp_path, sample_case):
    _, _, _, detections = sample_case
    bad = tmp_path / "boxes.csv"
    bad.write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\n00000032_037.png,Tumour,1,1,5,5\n")
    with pytest.raises(UserError) as error:
        selection.prepare_inputs(detections, bad)
    assert str(error.value) == f"{bad}: no usable ground-truth box (1 rejected)"


def test_library_entry_point_takes_detections_csv_frames(sample_case):
    boxes, negatives, images, detections = sample_case
    frame = pd.read_csv(detections)
    metrics = evaluate.evaluate_detections(frame, boxes, images=[f"/abs/{name}" for name in images])
    assert metrics.images == 8 and sum(metrics.boxes.values()) == 7
    assert metrics.notes == []
    without_images = evaluate.evaluate_detections(frame, boxes)
    assert without_images.images == 8  # every image here has a detection or a box
    only_some = evaluate.evaluate_detections(frame, boxes, images=BOXED[:2])
    assert only_some.images == 2
    assert any("left out" in note for note in only_some.notes)
    bad = frame.copy()
    bad.loc[0, "score"] = math.nan
    with pytest.raises(ValueError, match="unusable detections: row 2: score is nan, not a finite number"):
        evaluate.evaluate_detections(bad, boxes)


def test_detections_csv_without_class_columns_is_refused(tmp_path):
    path = tmp_path / "detections.csv"
    path.write_text("image,score,xmin,ymin,xmax,ymax\nx.png,0.5,1,1,2,2\n")
    with pytest.raises(UserError) as error:
        detection_set.read_detections(path)
    assert str(error.value) == f"{path}: missing column(s) class_name"


def test_xml_folder_beside_its_images_uses_the_real_image(tmp_path):
    # labelImg saves XML next to the image; the reader then checks the real image size.
    boxes = [b for b in sample_boxes() if b.image == BOXED[0]]
    folder = write_voc_folder(tmp_path / "labelled", boxes)
    shutil.copy(SAMPLE_IMAGES / BOXED[0], folder / BOXED[0])
    truth = ground_truth.read_ground_truth(folder)
    assert [(b.image, b.label) for b in truth.boxes] == [(b.image, b.label) for b in boxes]
    assert truth.rejects == []


def perfect_detections(folder: Path, boxes: list[Box], images: list[str]) -> Path:
    rows = [[b.image, 1024, 1024, class_id(b.label), b.label, 0.9, b.xmin, b.ymin, b.xmax, b.ymax] for b in boxes]
    return write_detections_folder(folder, rows, images)


def assert_perfect(metrics, boxes: list[Box]) -> None:
    from collections import Counter

    counts = Counter(box.label for box in boxes)
    present = [name for name, count in counts.items() if count]
    assert metrics.coco.overall.ap == pytest.approx(1.0)
    for name in present:
        assert metrics.coco.per_class[name].ap == pytest.approx(1.0), name
        assert metrics.froc.per_class[name].at_rates == [1.0] * 7, name
        assert metrics.iobb.per_class[name].accuracy == [1.0] * 5, name
        assert metrics.image_level[name].sensitivity == 1.0 and metrics.image_level[name].specificity == 1.0
    assert all(row.afp == [0.0] * 5 for row in metrics.iobb.per_class.values())
    matrix = metrics.confusion.matrix
    labels = metrics.confusion.labels
    assert [int(matrix[k, k]) for k in range(8)] == [counts[name] for name in labels[:8]]
    assert int(matrix.sum()) == len(boxes)


def test_perfect_detections_on_the_bundled_sample(tmp_path):
    images = sorted(p.name for p in SAMPLE_IMAGES.glob("*.png")) + unlabeled_images()
    all_boxes, _ = read_nih_csv(SAMPLE_CSV)
    boxes = [b for b in all_boxes if b.image in images]
    assert len(boxes) == 40
    run = evaluate.run_evaluation(perfect_detections(tmp_path / "d", boxes, images), SAMPLE_CSV, tmp_path / "o",
                                  plots=False)
    assert run.metrics.images == 38 and run.metrics.images_with_boxes == 36
    assert_perfect(run.metrics, boxes)


def test_perfect_detections_on_the_full_dev_copy(tmp_path, full_nih):
    images = sorted(p.name for p in (full_nih / "images").glob("*.png"))
    all_boxes, _ = read_nih_csv(full_nih / "BBox_List_2017.csv")
    boxes = [b for b in all_boxes if b.image in set(images)]
    run = evaluate.run_evaluation(perfect_detections(tmp_path / "d", boxes, images),
                                  full_nih / "BBox_List_2017.csv", tmp_path / "o", plots=False)
    assert run.metrics.images == len(images) == 440
    assert_perfect(run.metrics, boxes)


class FixedBackend:
    """A stand-in model for detect.detect_images: the same Cardiomegaly (0.9) and Nodule (0.2) box on
    every image, none on images listed as empty."""

    name = "fixed"
    max_batch = 1
    concurrency = 1

    def prepare(self, pixels):
        import numpy as np

        return np.array([pixels.size])  # only whether the image is empty matters: its pixel count

    def load(self) -> None:
        pass

    def infer(self, batch):
        import numpy as np

        from chestdet.export.backends import ModelOutput

        boxes = np.array([[0.3, 0.3, 0.7, 0.8], [0.1, 0.1, 0.2, 0.2]], np.float32)
        return [ModelOutput(boxes, np.array([2, 6], np.int32), np.array([0.9, 0.2], np.float32)) for _ in batch]


def test_reads_what_detect_writes(tmp_path):
    """The contract between the stages: detect.py's own writer, a list of absolute paths (so the
    image column holds absolute paths), images with and without boxes."""
    from chestdet.detection import detect

    images = sorted(SAMPLE_IMAGES.glob("*.png")) + sorted(SAMPLE_UNLABELED.glob("*.png"))
    listing = tmp_path / "held out.txt"
    listing.write_text("".join(f"{path}\n" for path in images))
    out = tmp_path / "detect out"
    inputs = list_inputs(listing, exclude=out)
    detect.prepare_output_dir(out, detect.run_settings(input=str(listing)), resume=False, overwrite=False)
    names = {k: name for k, name in enumerate(CLASS_NAMES_BY_ID, start=1)}
    detect.detect_images(inputs, FixedBackend(), names, out, detect.DetectOptions(workers=1))
    run = evaluate.run_evaluation(out, SAMPLE_CSV, tmp_path / "eval", plots=False)
    assert run.inputs.rejects == []
    assert run.metrics.images == len(images) == 40 and run.metrics.detections == 80
    all_boxes, _ = read_nih_csv(SAMPLE_CSV)
    present = {path.name for path in images}
    cardio = {b.image for b in all_boxes if b.image in present and b.label == "Cardiomegaly"}
    nodule = {b.image for b in all_boxes if b.image in present and b.label == "Nodule"}
    # Cardiomegaly predicted on every image: TP on its images, FP on all others, no TN, no FN.
    level = run.metrics.image_level["Cardiomegaly"]
    assert (level.true_positives, level.false_positives, level.true_negatives, level.false_negatives) == (
        len(cardio), 40 - len(cardio), 0, 0)
    # Nodule scores 0.2, not above 0.3: never predicted.
    level = run.metrics.image_level["Nodule"]
    assert (level.true_positives, level.false_negatives, level.true_negatives) == (0, len(nodule), 40 - len(nodule))
    # With the 0.2 Nodule boxes let in, each is a false positive: the fixed box (pixels 102-204 of the
    # 1024 ones) touches none of the sample's Nodule boxes.
    fixed = (0.1 * 1024, 0.2 * 1024)
    assert all(b.xmin > fixed[1] or b.ymin > fixed[1] or b.xmax < fixed[0] or b.ymax < fixed[0]
               for b in all_boxes if b.image in nodule and b.label == "Nodule")
    low = evaluate.run_evaluation(out, SAMPLE_CSV, tmp_path / "eval low",
                                  settings=EvaluationSettings(score_threshold=0.1), plots=False)
    assert low.metrics.iobb.per_class["Nodule"].accuracy == [0.0] * 5
    assert low.metrics.iobb.per_class["Nodule"].fp_per_image == [1.0] * 5
    boxed = {b.image for b in all_boxes if b.image in present}
    pairs = {(b.image, b.label) for b in all_boxes if b.image in present}
    assert low.metrics.iobb.per_class["Nodule"].afp == [pytest.approx(len(boxed) / len(pairs))] * 5


def test_reads_what_the_dataset_step_writes(tmp_path, sample_case):
    """The contract with generate_tfrecords: its test shards and split.csv give the metrics the NIH CSV
    gives for the same split."""
    from chestdet.commands import generate_tfrecords

    _, _, _, detections = sample_case
    records = tmp_path / "records"
    status = generate_tfrecords.main([
        "--nih-csv", str(SAMPLE_CSV), "--image-dir", str(SAMPLE_IMAGES), "--unlabeled-dir", str(SAMPLE_UNLABELED),
        "--output-dir", str(records), "--shards", "1", "--workers", "1"])
    assert status == 0
    split = records / "split.csv"
    from_records = evaluate.run_evaluation(detections, records, tmp_path / "a", split, "test", plots=False)
    from_csv = evaluate.run_evaluation(detections, SAMPLE_CSV, tmp_path / "b", split, "test", plots=False)
    assert from_records.inputs.rejects == []
    assert set(from_records.inputs.images) == set(from_csv.inputs.images)
    assert 0 < len(from_records.inputs.images) < 8
    a, b = from_records.metrics.to_dict(), from_csv.metrics.to_dict()
    a.pop("notes"), b.pop("notes")
    assert_same_metrics(b, a)
