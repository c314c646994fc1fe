"""The review loop through Label Studio and COCO: detect -> tasks -> a person's export -> records.

Label Studio's own converter does not install beside this stack, so the export side is tested
against the published JSON format: tests/fixtures/label_studio/export.json is written by hand (see its
README), and the round trip builds its export from the tasks as Label Studio would after a person
corrected them.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

import defusedxml.ElementTree as SafeElementTree
import pytest

from chestdet.commands.cli import ExitStatus, run_main
from chestdet.commands.generate_tfrecords import main as generate_tfrecords
from chestdet.core.contracts import (
    COCO_IMAGES_JSON,
    DETECTIONS_COCO_JSON,
    DETECTIONS_CSV,
    DETECTIONS_JSON,
    LABEL_STUDIO_CONFIG_XML,
    LABEL_STUDIO_TASKS_JSON,
    REJECTS_CSV,
    SPLIT_CSV,
    SUMMARY_JSON,
)
from chestdet.core.labels import load_label_map
from chestdet.core.rejects import RejectKind
from chestdet.data import dataset, labelstudio
from chestdet.data.annotations import read_nih_csv
from chestdet.data.image_index import ImageIndex
from chestdet.detection.review import ReviewOptions
from chestdet.detection.thresholds import Thresholds
from tests.conftest import LABEL_MAP, REPO, SAMPLE_CSV, SAMPLE_IMAGES
from tests.detection.test_detect import CLASS_NAMES, SAMPLE_NAMES, run
from tests.support.records import decode_records

FIXTURES = REPO / "tests" / "fixtures" / "label_studio"
EXPORT = FIXTURES / "export.json"
THRESHOLDS = Thresholds(0.1)  # the fake backend's Cardiomegaly and Nodule boxes are drawn
PIXEL_TOLERANCE = 0.5


def read_rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def corners(row: dict) -> list[float]:
    return [float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax")]


def record_boxes(records_dir: Path) -> dict[str, list[tuple[str, list[float]]]]:
    """{file name: sorted (class, [xmin, ymin, xmax, ymax] in pixels)} decoded by the OD API's TfExampleDecoder."""
    decoded = decode_records(sorted(records_dir.glob("*.tfrecord")))
    boxes = {}
    for name, example in decoded.items():
        height, width = example["image_shape"][:2]
        boxes[name] = sorted(
            (CLASS_NAMES[label], [float(xmin * width), float(ymin * height), float(xmax * width), float(ymax * height)])
            for (ymin, xmin, ymax, xmax), label in zip(example["boxes"], example["classes"], strict=True)
        )
    return boxes


def assert_same_boxes(got: list, want: list) -> None:
    assert [label for label, _ in got] == [label for label, _ in want]
    for (_, got_corners), (_, want_corners) in zip(got, want, strict=True):
        assert got_corners == pytest.approx(want_corners, abs=PIXEL_TOLERANCE)


def percent_region(label: str, box: list[float], size: tuple[int, int], region_id: str) -> dict:
    """A region as Label Studio stores a box a person drew (no score)."""
    width, height = size
    return {
        "original_width": width, "original_height": height, "image_rotation": 0,
        "value": {"x": 100 * box[0] / width, "y": 100 * box[1] / height, "width": 100 * (box[2] - box[0]) / width,
                  "height": 100 * (box[3] - box[1]) / height, "rotation": 0, "rectanglelabels": [label]},
        "id": region_id, "from_name": labelstudio.FROM_NAME, "to_name": labelstudio.TO_NAME,
        "type": labelstudio.RESULT_TYPE, "origin": "manual",
    }


def exported_task(task_id: int, data: dict, result: list[dict], predictions: list | None = None) -> dict:
    """One task as Label Studio's JSON export writes it, with one submitted annotation."""
    return {
        "id": task_id, "data": data, "meta": {}, "project": 1, "drafts": [], "predictions": predictions or [],
        "created_at": "2024-06-01T08:00:00.000000Z", "updated_at": "2024-06-01T09:00:00.000000Z",
        "annotations": [{
            "id": 1000 + task_id, "completed_by": 1, "result": result, "was_cancelled": False, "ground_truth": False,
            "created_at": "2024-06-01T08:30:00.000000Z", "updated_at": "2024-06-01T09:00:00.000000Z",
            "lead_time": 12.5, "prediction": {}, "result_count": 0, "task": task_id, "project": 1,
        }],
    }


@pytest.fixture
def review_inputs(tmp_path: Path) -> Path:
    """Four real NIH images, one in a sub-folder with a space, and a broken file that gets no task."""
    root = tmp_path / "to review"
    (root / "second look").mkdir(parents=True)
    for name in SAMPLE_NAMES[:3]:
        shutil.copy(SAMPLE_IMAGES / name, root / name)
    shutil.copy(SAMPLE_IMAGES / SAMPLE_NAMES[3], root / "second look" / SAMPLE_NAMES[3])
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    return root


def detect_for_review(inputs: Path, out: Path) -> None:
    run(inputs, out, thresholds=THRESHOLDS, review=ReviewOptions(label_studio=True, model_version="nih step 1200"))


# --------------------------------------------------------------------------------------------------
# The labeling config


def test_the_shipped_labeling_config_is_the_label_maps_and_names_the_tasks_fields():
    shipped = REPO / "label_studio_config.xml"
    assert shipped.read_bytes() == labelstudio.labeling_config(load_label_map(LABEL_MAP))
    view = SafeElementTree.parse(str(shipped)).getroot()
    image, = view.findall("Image")
    labels, = view.findall("RectangleLabels")
    assert (image.get("name"), image.get("value")) == (labelstudio.TO_NAME, f"${labelstudio.DATA_KEY}")
    assert (labels.get("name"), labels.get("toName")) == (labelstudio.FROM_NAME, labelstudio.TO_NAME)
    assert labels.get("canRotate") == "false"
    names = load_label_map(LABEL_MAP)
    assert [label.get("value") for label in labels.findall("Label")] == [names[i] for i in sorted(names)]


# --------------------------------------------------------------------------------------------------
# detect -> tasks and COCO


def test_detect_writes_one_task_per_readable_image_with_the_drawn_boxes(review_inputs: Path, tmp_path: Path):
    out = tmp_path / "out"
    detect_for_review(review_inputs, out)
    tasks = json.loads((out / LABEL_STUDIO_TASKS_JSON).read_text())
    rows = read_rows(out / DETECTIONS_CSV)
    images = sorted({row["image"] for row in rows})
    assert len(tasks) == len(images) == 4  # the broken file has none
    assert (out / LABEL_STUDIO_CONFIG_XML).read_bytes() == labelstudio.labeling_config(CLASS_NAMES)
    by_url = {t["data"][labelstudio.DATA_KEY]: t for t in tasks}
    assert f"/data/local-files/?d=second%20look/{SAMPLE_NAMES[3]}" in by_url
    for image in images:
        task = by_url[labelstudio.image_url(image)]
        prediction, = task["predictions"]
        drawn = [row for row in rows if row["image"] == image and float(row["score"]) >= 0.1]
        assert len(drawn) == 2 and prediction["model_version"] == "nih step 1200"
        assert prediction["score"] == max(float(row["score"]) for row in drawn)
        for region, row in zip(prediction["result"], drawn, strict=True):
            width, height = region["original_width"], region["original_height"]
            assert (width, height) == (int(row["width"]), int(row["height"]))
            value = region["value"]
            assert value["rectanglelabels"] == [row["class_name"]] and region["score"] == float(row["score"])
            assert (region["from_name"], region["to_name"], region["type"]) == ("label", "image", "rectanglelabels")
            box = [value["x"] * width / 100, value["y"] * height / 100, (value["x"] + value["width"]) * width / 100,
                   (value["y"] + value["height"]) * height / 100]
            assert box == pytest.approx(corners(row), abs=1e-3)


def test_the_coco_dataset_loads_in_pycocotools_and_pairs_with_the_coco_results(review_inputs: Path, tmp_path: Path):
    from pycocotools.coco import COCO

    out = tmp_path / "out"
    detect_for_review(review_inputs, out)
    coco = COCO(str(out / DETECTIONS_COCO_JSON))
    assert coco.dataset["info"]["description"] == "chestdet detections of nih step 1200"
    ids = {image["file_name"]: image["id"] for image in json.loads((out / COCO_IMAGES_JSON).read_text())["images"]}
    assert {image["file_name"]: image["id"] for image in coco.dataset["images"]} == ids
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == [CLASS_NAMES[i] for i in sorted(CLASS_NAMES)]
    rows = read_rows(out / DETECTIONS_CSV)
    for name, image_id in ids.items():
        drawn = [row for row in rows if row["image"] == name and float(row["score"]) >= 0.1]
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        assert [a["category_id"] for a in annotations] == [int(row["class_id"]) for row in drawn]
        for annotation, row in zip(annotations, drawn, strict=True):
            x, y, w, h = annotation["bbox"]
            assert [x, y, x + w, y + h] == pytest.approx(corners(row), abs=0.02)
            assert annotation["area"] == pytest.approx(w * h, abs=0.01) and annotation["iscrowd"] == 0
            assert annotation["score"] == float(row["score"])
    assert len({a["id"] for a in coco.dataset["annotations"]}) == len(coco.dataset["annotations"]) == 8
    results = coco.loadRes(str(out / DETECTIONS_JSON))  # detections.json stays COCO results, all kept boxes
    assert len(results.dataset["annotations"]) == len(rows)


def test_without_label_studio_only_the_coco_dataset_is_written(tmp_path: Path):
    out = tmp_path / "out"
    run(SAMPLE_IMAGES / SAMPLE_NAMES[0], out)
    assert (out / DETECTIONS_COCO_JSON).is_file()
    assert not (out / LABEL_STUDIO_TASKS_JSON).exists() and not (out / LABEL_STUDIO_CONFIG_XML).exists()
    coco = json.loads((out / DETECTIONS_COCO_JSON).read_text())
    assert len(coco["annotations"]) == 1  # the default --min-score 0.3 draws the Cardiomegaly box only


# --------------------------------------------------------------------------------------------------
# The round trip


def corrected_export(tasks: list[dict], rows: list[dict]) -> tuple[list[dict], dict[str, list]]:
    """The export a person makes: accept the predictions, move a box, delete one, draw one.

    Returns the export and the boxes each image should then have, in pixels: detections.csv's drawn
    boxes with the same edits made in pixels.
    """
    exported, expected = [], {}
    for number, task in enumerate(tasks, start=1):
        prediction = task["predictions"][0]
        regions = [{**{k: v for k, v in r.items() if k != "score"}, "origin": "prediction"}
                   for r in prediction["result"]]
        image = unquote(task["data"][labelstudio.DATA_KEY].removeprefix(labelstudio.DEFAULT_IMAGE_URL_PREFIX))
        boxes = [(row["class_name"], corners(row)) for row in rows if row["image"] == image
                 and float(row["score"]) >= THRESHOLDS.default]
        size = (regions[0]["original_width"], regions[0]["original_height"])
        if number == 1:  # drag the first box 40 px right and 10 px down
            regions[0]["value"] = {**regions[0]["value"], "x": regions[0]["value"]["x"] + 100 * 40 / size[0],
                                   "y": regions[0]["value"]["y"] + 100 * 10 / size[1]}
            regions[0]["origin"] = "prediction-changed"
            label, (xmin, ymin, xmax, ymax) = boxes[0]
            boxes[0] = (label, [xmin + 40, ymin + 10, xmax + 40, ymax + 10])
        if number == 2:  # delete the first box
            del boxes[0], regions[0]
        if number == 3:  # draw a missed finding
            boxes.append(("Pneumothorax", [700.0, 80.0, 900.0, 300.0]))
            regions.append(percent_region("Pneumothorax", boxes[-1][1], size, "drawn0001"))
        exported.append(exported_task(number, task["data"], regions, [{**prediction, "id": 500 + number}]))
        expected[PurePosixPath(image).name] = sorted(boxes)
    return exported, expected


def test_round_trip_detect_tasks_corrected_export_records_keeps_the_boxes(review_inputs: Path, tmp_path: Path):
    out = tmp_path / "detections"
    detect_for_review(review_inputs, out)
    tasks = json.loads((out / LABEL_STUDIO_TASKS_JSON).read_text())
    export, expected = corrected_export(tasks, read_rows(out / DETECTIONS_CSV))
    assert [len(boxes) for boxes in expected.values()] == [2, 1, 3, 2]
    export_path = tmp_path / "project-1-at-2024-06-01.json"
    export_path.write_text(json.dumps(export, indent=1))

    records = tmp_path / "records"
    assert generate_tfrecords(["--label-studio", str(export_path), "--image-dir", str(review_inputs),
                               "--output-dir", str(records), "--split", "1,0,0"]) == ExitStatus.SUCCESS
    assert read_rows(records / REJECTS_CSV) == []
    decoded = record_boxes(records)
    assert sorted(decoded) == sorted(expected)
    for image, boxes in expected.items():
        assert_same_boxes(decoded[image], boxes)
    summary = json.loads((records / SUMMARY_JSON).read_text())
    assert summary["inputs"]["boxes_per_source"] == {str(export_path): 8}
    assert summary["inputs"]["label_studio"] == [str(export_path)]


# --------------------------------------------------------------------------------------------------
# Reading an export: the hand-written fixture


def test_the_hand_written_export_gives_the_latest_annotations_boxes_and_a_reject_per_bad_item():
    result = labelstudio.read_export(EXPORT, ImageIndex([SAMPLE_IMAGES]))
    boxes = sorted((b.image, b.label, [b.xmin, b.ymin, b.xmax, b.ymax]) for b in result.boxes)
    assert [(image, label) for image, label, _ in boxes] == [
        ("00000032_037.png", "Cardiomegaly"), ("00000032_037.png", "Effusion"),  # the latest of 2, not the cancelled
        ("00000072_000.png", "Atelectasis"),  # an uploaded file's name, without Label Studio's prefix
        ("00000149_006.png", "Infiltrate"),  # NIH's other spelling; no original size recorded: the real one
    ]
    expected = [[256, 409.6, 384, 512], [512, 512, 768, 640], [102.4, 204.8, 409.6, 358.4], [512, 256, 768, 460.8]]
    for (_, _, got), want in zip(boxes, expected, strict=True):
        assert got == pytest.approx(want, abs=1e-6)
    assert {b.source for b in result.boxes} == {labelstudio.SOURCE_LABEL_STUDIO}
    assert [(r.location, r.kind, r.image) for r in result.rejects] == [
        ("task 102, annotation 204, result 2", RejectKind.UNKNOWN_LABEL, "00000072_000.png"),
        ("task 102, annotation 204, result 3", RejectKind.EMPTY_BOX, "00000072_000.png"),
        ("task 102, annotation 204, result 4", RejectKind.UNSUPPORTED_RESULT, "00000072_000.png"),
        ("task 102, annotation 204, result 5", RejectKind.UNSUPPORTED_RESULT, "00000072_000.png"),
        ("task 102, annotation 204, result 6", RejectKind.SIZE_MISMATCH, "00000072_000.png"),
        ("task 103, annotation 205", RejectKind.IMAGE_NOT_FOUND, "99999999_000.png"),
        ("task 106", RejectKind.MISSING_VALUE, ""),
    ]
    reasons = [r.reason for r in result.rejects]
    assert reasons[0].startswith("unknown label 'Edema'")
    assert reasons[2] == "a 'polygonlabels' result, not a rectangle with a class (rectanglelabels); only those are read"
    assert reasons[3] == "a rectangle rotated by 30 degrees; only axis-aligned boxes are read"
    assert reasons[5] == ("image 99999999_000.png (data.image '/data/local-files/?d=nih/images/99999999_000.png') "
                          "not found in the --image-dir folders")
    assert result.notes == {
        labelstudio.NOTE_CANCELLED: 1, labelstudio.NOTE_SUPERSEDED: 1, labelstudio.NOTE_UNANNOTATED: 1,
        labelstudio.NOTE_NO_BOXES: 1, labelstudio.NOTE_REAL_SIZE: 1, "boxes rescaled from 2048x2048 to 1024x1024": 1,
    }
    assert result.covered == {"00000032_037.png", "00000072_000.png", "00000149_006.png", "00000732_005.png"}


def test_the_export_through_generate_tfrecords_writes_records_rejects_and_counts(tmp_path: Path):
    records = tmp_path / "records"
    argv = ["--label-studio", str(EXPORT), "--image-dir", str(SAMPLE_IMAGES), "--output-dir", str(records),
            "--split", "1,0,0"]
    assert generate_tfrecords(argv) == ExitStatus.SUCCESS
    assert [row["image"] for row in read_rows(records / SPLIT_CSV)] == [
        "00000032_037.png", "00000072_000.png", "00000149_006.png"]
    rejects = read_rows(records / REJECTS_CSV)
    assert [(row["source"], row["location"]) for row in rejects][:2] == [
        (str(EXPORT), "task 102, annotation 204, result 2"), (str(EXPORT), "task 102, annotation 204, result 3")]
    summary = json.loads((records / SUMMARY_JSON).read_text())
    assert summary["rejects"]["by_kind"] == {"not an axis-aligned labelled rectangle": 2, "unknown label": 1,
                                             "empty box": 1, "size mismatch": 1, "missing value": 1,
                                             "image not found": 1}
    assert summary["conversions"][labelstudio.NOTE_SUPERSEDED] == 1
    assert summary["conversions"][labelstudio.NOTE_CANCELLED] == 1
    assert_same_boxes(record_boxes(records)["00000032_037.png"],
                      [("Cardiomegaly", [256, 409.6, 384, 512]), ("Effusion", [512, 512, 768, 640])])
    assert generate_tfrecords([*argv, "--strict", "--output-dir", str(tmp_path / "strict")]) == ExitStatus.REJECTS


@pytest.mark.parametrize("content, reason", [
    ((FIXTURES / "truncated_export.json").read_text(),
     "not JSON (Expecting property name enclosed in double quotes at line 2 column 1)"),
    ('{"tasks": 3}', "a task without 'annotations'"),
    ("42", "expected a list of tasks, found a JSON int"),
    ("[]", "no tasks in the export"),
    ('[{"image": "/data/local-files/?d=a.png", "label": []}]', "a task without 'annotations' (a JSON-MIN export? "
                                                                "export as JSON)"),
])
def test_an_export_that_is_not_label_studios_json_is_one_reject_line(tmp_path: Path, content: str, reason: str):
    path = tmp_path / "export.json"
    path.write_text(content)
    result = labelstudio.read_export(path, ImageIndex([SAMPLE_IMAGES]))
    assert result.boxes == [] and [r.reason for r in result.rejects] == [reason]


def test_a_truncated_export_is_a_malformed_json_reject():
    result = labelstudio.read_export(FIXTURES / "truncated_export.json", ImageIndex([SAMPLE_IMAGES]))
    assert [(r.location, r.kind) for r in result.rejects] == [("file", RejectKind.MALFORMED_JSON)]


@pytest.mark.parametrize("url, names", [
    ("/data/local-files/?d=nih/images/00000032_037.png", ["00000032_037.png"]),
    ("http://ls.example:8080/data/local-files/?d=my%20scans%2Fa%2Bb.png", ["a+b.png"]),
    ("/data/local-files/?d=C:%5Cscans%5Cx.png", ["x.png"]),
    ("/data/upload/3/8f3a2b1c-00013118_008.png", ["00013118_008.png", "8f3a2b1c-00013118_008.png"]),
    ("s3://bucket/xrays/00013118_008.png", ["00013118_008.png"]),
    ("https://host/files/8f3a2b1c-x.png", ["8f3a2b1c-x.png"]),
    ("/data/local-files/?d=", []),
])
def test_image_names_from_task_urls(url: str, names: list[str]):
    assert labelstudio.image_names(url) == names


def test_image_urls_quote_the_relative_path_and_read_back():
    url = labelstudio.image_url("second look/a+b#1.png")
    assert url == "/data/local-files/?d=second%20look/a%2Bb%231.png"
    assert labelstudio.image_names(url) == ["a+b#1.png"]
    assert labelstudio.image_url("x.png", "https://bucket.example/xrays/") == "https://bucket.example/xrays/x.png"


# --------------------------------------------------------------------------------------------------
# Merging with the other sources


def test_label_studio_corrects_nih_boxes_and_a_later_export_corrects_an_earlier_one(tmp_path: Path):
    image = "00000032_037.png"
    nih, _ = read_nih_csv(SAMPLE_CSV)
    box = next(b for b in nih if b.image == image)
    csv_path = tmp_path / "boxes.csv"
    lines = SAMPLE_CSV.read_text().splitlines()
    csv_path.write_text("\n".join([lines[0], *(line for line in lines[1:] if line.startswith(image))]) + "\n")
    url = f"/data/local-files/?d=nih/{image}"
    exports = []
    for number, shift in enumerate((2.0, 4.0), start=1):  # each IoU >= 0.9 with the one before
        moved = [box.xmin + shift, box.ymin, box.xmax + shift, box.ymax]
        path = tmp_path / f"export {number}.json"
        path.write_text(json.dumps([exported_task(number, {"image": url},
                                                  [percent_region(box.label, moved, (1024, 1024), "r1")])]))
        exports += ["--label-studio", str(path)]
    records = tmp_path / "records"
    assert generate_tfrecords(["--nih-csv", str(csv_path), *exports, "--image-dir", str(SAMPLE_IMAGES),
                               "--output-dir", str(records), "--split", "1,0,0"]) == ExitStatus.SUCCESS
    assert_same_boxes(record_boxes(records)[image], [(box.label, [box.xmin + 4, box.ymin, box.xmax + 4, box.ymax])])
    summary = json.loads((records / SUMMARY_JSON).read_text())
    assert summary["conversions"][dataset.NOTE_MERGED] == 2


def test_an_image_in_several_tasks_keeps_its_latest_annotation(tmp_path: Path):
    image = SAMPLE_NAMES[0]
    early, late = [100.0, 100.0, 300.0, 300.0], [120.0, 110.0, 320.0, 330.0]
    tasks = [
        exported_task(1, {"image": f"/data/upload/1/0a1b2c3d-{image}"},
                      [percent_region("Mass", late, (1024, 1024), "a")]),
        exported_task(2, {"image": f"/data/local-files/?d=again/{image}"},
                      [percent_region("Mass", early, (1024, 1024), "b")]),
    ]
    tasks[1]["annotations"][0]["updated_at"] = "2024-05-31T23:59:59.000000Z"  # before task 1's annotation
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks))
    result = labelstudio.read_export(path, ImageIndex([SAMPLE_IMAGES]))
    assert [[b.xmin, b.ymin, b.xmax, b.ymax] for b in result.boxes] == [pytest.approx(late)]
    assert result.notes[labelstudio.NOTE_SUPERSEDED] == 1
    for annotation in (tasks[0]["annotations"][0], tasks[1]["annotations"][0]):
        del annotation["updated_at"], annotation["created_at"]
    path.write_text(json.dumps(tasks))
    result = labelstudio.read_export(path, ImageIndex([SAMPLE_IMAGES]))  # no times: the last listed counts
    assert [[b.xmin, b.ymin, b.xmax, b.ymax] for b in result.boxes] == [pytest.approx(early)]


def test_with_xml_replaces_csv_an_annotation_without_boxes_removes_the_images_nih_boxes(tmp_path: Path):
    image, kept = "00000032_037.png", "00000072_000.png"
    csv_path = tmp_path / "boxes.csv"
    lines = SAMPLE_CSV.read_text().splitlines()
    csv_path.write_text("\n".join([lines[0], *(line for line in lines[1:] if line.split(",")[0] in (image, kept))]))
    export = tmp_path / "export.json"
    export.write_text(json.dumps([exported_task(1, {"image": f"/data/local-files/?d={image}"}, [])]))
    argv = ["--nih-csv", str(csv_path), "--label-studio", str(export), "--image-dir", str(SAMPLE_IMAGES),
            "--split", "1,0,0"]
    assert generate_tfrecords([*argv, "--output-dir", str(tmp_path / "merged")]) == ExitStatus.SUCCESS
    assert sorted(row["image"] for row in read_rows(tmp_path / "merged" / SPLIT_CSV)) == [image, kept]
    replaced = tmp_path / "replaced"
    assert generate_tfrecords([*argv, "--output-dir", str(replaced), "--xml-replaces-csv"]) == ExitStatus.SUCCESS
    assert [row["image"] for row in read_rows(replaced / SPLIT_CSV)] == [kept]
    summary = json.loads((replaced / SUMMARY_JSON).read_text())
    assert summary["conversions"][dataset.NOTE_REPLACED] == 1
    assert summary["conversions"][labelstudio.NOTE_NO_BOXES] == 1


# --------------------------------------------------------------------------------------------------
# Command line


def test_image_url_prefix_needs_label_studio(tmp_path: Path, caplog):
    from chestdet.commands.detect import main

    export = tmp_path / "export"
    (export / "saved_model").mkdir(parents=True)
    assert run_main(main, ["--model", str(export), "--input", str(SAMPLE_IMAGES), "--output-dir",
                           str(tmp_path / "out"), "--image-url-prefix", "/data/local-files/?d=x/"]) == ExitStatus.ERROR
    assert "error: --image-url-prefix needs --label-studio" in caplog.text


def test_a_labeling_config_is_read_for_its_boxes_and_the_shipped_one_fits_the_tasks():
    config = labelstudio.read_labeling_config((REPO / "label_studio_config.xml").read_text())
    assert (config.from_name, config.to_name, config.data_key) == (labelstudio.FROM_NAME, labelstudio.TO_NAME,
                                                                   labelstudio.DATA_KEY)
    assert config.labels == tuple(load_label_map(LABEL_MAP)[i] for i in sorted(load_label_map(LABEL_MAP)))
    other = labelstudio.read_labeling_config('<View><Text name="t" value="$text"/><Image name="xray" value="$film"/>'
                                             '<RectangleLabels name="boxes" toName="xray"><Label value="Mass"/>'
                                             '</RectangleLabels></View>')
    assert (other.from_name, other.to_name, other.data_key, other.labels) == ("boxes", "xray", "film", ("Mass",))


@pytest.mark.parametrize("text, reason", [
    ("<View><Image name='i' value='$image'/></View>", "no <RectangleLabels"),
    ("<View><RectangleLabels name='l' toName='i'/></View>", 'no <Image name="i" value="$...">'),
    ("<!DOCTYPE v [<!ENTITY e 'x'>]><View>&e;</View>", "not XML that can be read safely"),
])
def test_a_labeling_config_without_boxes_says_what_it_lacks(text, reason):
    with pytest.raises(ValueError, match=re.escape(reason)):
        labelstudio.read_labeling_config(text)


def test_local_files_urls_are_relative_to_the_folder_above_the_images():
    assert labelstudio.local_files_prefix("held out") == "/data/local-files/?d=held%20out/"
    assert labelstudio.local_files_prefix("") == "/data/local-files/?d="
