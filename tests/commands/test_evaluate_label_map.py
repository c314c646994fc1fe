"""evaluate.py --label-map: the classes of the detections and the ground truth are a label map's (a records
folder's own by default); a class of another map in detections.csv, or a map that is not the records', is
one line naming the files, never a silent reject of every row of a class."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chestdet.commands.cli import ExitStatus, run_main
from chestdet.commands.evaluate import main
from chestdet.commands.generate_tfrecords import main as generate_tfrecords
from chestdet.core.labels import CLASS_NAMES, LabelMap, default_label_map
from chestdet.data.annotations import Box
from tests.conftest import LABEL_MAP, SAMPLE_IMAGES
from tests.support.evaluation_inputs import (
    BOXED,
    fake_detections,
    sample_boxes,
    unlabeled_images,
    write_detections_folder,
    write_nih_csv,
)

FIBROSIS = Box(BOXED[1], "Fibrosis", 600.0, 120.0, 800.0, 330.0)
ADVICE = "evaluate with the label map of the model that made the detections (--label-map)"


def nine_map(folder: Path, order: tuple[str, ...] = (*CLASS_NAMES, "Fibrosis")) -> Path:
    path = folder / "nine classes.pbtxt"
    path.write_text("".join(f"item {{\n  id: {k}\n  name: '{name}'\n}}\n" for k, name in enumerate(order, start=1)))
    return path


def fibrosis_row(score: float = 0.8) -> list:
    return [FIBROSIS.image, 1024, 1024, 9, "Fibrosis", score, FIBROSIS.xmin + 4, FIBROSIS.ymin, FIBROSIS.xmax,
            FIBROSIS.ymax + 3]


@pytest.fixture
def nine_case(tmp_path):
    """A CSV of the sample boxes plus a Fibrosis box; detections of all of them (one Fibrosis row, row 9)."""
    negatives = unlabeled_images()
    rows = fake_detections(sample_boxes(), negatives)
    rows.insert(7, fibrosis_row())
    detections = write_detections_folder(tmp_path / "detect output", rows, [*BOXED, *negatives])
    truth = write_nih_csv(tmp_path / "boxes with fibrosis.csv", [*sample_boxes(), FIBROSIS])
    return detections, truth


def errors(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelname == "ERROR"]


def run(detections: Path, truth: Path, out: Path, *extra: str) -> int:
    return run_main(main, ["--detections", str(detections), "--ground-truth", str(truth), "--output-dir", str(out),
                           "--no-plots", "--gallery", "0", *extra])


def test_a_class_outside_the_map_refuses_the_detections_in_one_line(tmp_path, nine_case, caplog):
    detections, truth = nine_case
    assert run(detections, truth, tmp_path / "eval") == ExitStatus.ERROR
    assert errors(caplog) == [f"error: {detections}: row 9: class 'Fibrosis' is not in the label map "
                              f"{default_label_map().describe()}; {ADVICE}"]
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_the_given_map_evaluates_its_ninth_class_and_the_paper_table_keeps_the_eight(tmp_path, nine_case):
    detections, truth = nine_case
    out = tmp_path / "eval"
    assert run(detections, truth, out, "--label-map", str(nine_map(tmp_path))) == ExitStatus.SUCCESS
    document = json.loads((out / "metrics.json").read_text())
    assert list(document["boxes"]) == [*CLASS_NAMES, "Fibrosis"] and document["boxes"]["Fibrosis"] == 1
    assert document["coco"]["per_class"]["Fibrosis"]["ap50"] == pytest.approx(1.0)
    assert document["froc"]["per_class"]["Fibrosis"]["hits"] == 1
    assert document["rejects"] == 0
    report = (out / "report.md").read_text()
    assert "| Fibrosis | 1 |" in report
    paper_header = next(line for line in report.splitlines() if line.startswith("| T(IoBB) |"))
    assert paper_header == "| T(IoBB) |  | " + " | ".join(CLASS_NAMES) + " |"
    points = json.loads((out / "operating_points.json").read_text())
    assert "Fibrosis" in points["classes"]


def test_a_reordered_map_is_refused_by_the_detections_class_ids(tmp_path, nine_case, caplog):
    detections, truth = nine_case
    swapped = nine_map(tmp_path, ("Cardiomegaly", "Atelectasis", *CLASS_NAMES[2:], "Fibrosis"))
    assert run(detections, truth, tmp_path / "eval", "--label-map", str(swapped)) == ExitStatus.ERROR
    [error] = errors(caplog)
    assert error.startswith(f"error: {detections}: row ") and error.endswith(f"in the label map "
                                                                               f"{LabelMap.load(swapped).describe()}; "
                                                                               f"{ADVICE}")
    assert ("class 'Cardiomegaly' has id 2 here but 1" in error) or ("class 'Atelectasis' has id 1 here but 2" in error)


def test_class_ids_without_names_are_named_by_the_map(tmp_path, nine_case, caplog):
    _, truth = nine_case
    row = fibrosis_row()
    row[4] = ""
    detections = write_detections_folder(tmp_path / "ids only", [row], [FIBROSIS.image])
    out = tmp_path / "eval"
    assert run(detections, truth, out, "--label-map", str(nine_map(tmp_path))) == ExitStatus.SUCCESS
    assert json.loads((out / "metrics.json").read_text())["froc"]["per_class"]["Fibrosis"]["hits"] == 1
    assert run(detections, truth, tmp_path / "eval 8") == ExitStatus.ERROR
    assert errors(caplog) == [f"error: {detections}: row 2: class id 9 is not in the label map "
                              f"{default_label_map().describe()}; {ADVICE}"]


@pytest.fixture
def nine_records(tmp_path, nine_case):
    """generate_tfrecords with the 9-class map: the records folder holds its copy of the map."""
    _, truth = nine_case
    records = tmp_path / "records"
    assert run_main(generate_tfrecords, ["--nih-csv", str(truth), "--image-dir", str(SAMPLE_IMAGES), "--output-dir",
                                         str(records), "--label-map", str(nine_map(tmp_path)), "--split", "1,0,0",
                                         "--workers", "1"]) == ExitStatus.SUCCESS
    return records


def test_records_ground_truth_brings_its_own_map(tmp_path, nine_case, nine_records, caplog):
    detections, _ = nine_case
    out = tmp_path / "eval"
    assert run(detections, nine_records, out, "--split", "train") == ExitStatus.SUCCESS  # the records' own map
    document = json.loads((out / "metrics.json").read_text())
    assert document["boxes"]["Fibrosis"] == 1 and document["froc"]["per_class"]["Fibrosis"]["hits"] == 1
    assert run(detections, nine_records, tmp_path / "eval 8", "--split", "train", "--label-map",
               str(LABEL_MAP)) == ExitStatus.ERROR
    [error] = errors(caplog)
    assert error.startswith(f"error: {LABEL_MAP} (8 classes: ") and " differs from the ground-truth records' label " \
        f"map {nine_records / 'label_map.pbtxt'} (9 classes: " in error


def test_a_map_with_a_class_named_like_a_report_row_is_refused(tmp_path, nine_case, caplog):
    detections, truth = nine_case
    odd = nine_map(tmp_path, (*CLASS_NAMES, "all"))
    assert run(detections, truth, tmp_path / "eval", "--label-map", str(odd)) == ExitStatus.ERROR
    [error] = errors(caplog)
    assert error.startswith(f"error: {odd}: a class may not be named 'all'")
