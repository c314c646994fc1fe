"""One ground truth: evaluate applies the records step's own rules to an NIH CSV, so one bad CSV gives the
same boxes and the same rejects to generate_tfrecords and to evaluate, and records as ground truth give
evaluate those same boxes."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from chestdet.commands.cli import ExitStatus, run_main
from chestdet.commands.generate_tfrecords import main as generate_tfrecords
from chestdet.core.contracts import REJECTS_CSV
from chestdet.core.labels import CLASS_NAMES
from chestdet.evaluation import evaluate, selection
from tests.conftest import SAMPLE_CSV, SAMPLE_IMAGES
from tests.support.evaluation_inputs import BOXED, write_detections_folder
from tests.support.records import decode_records

ALONE = "00000149_006.png"  # a sample image whose only row below lies outside it
BAD_ROWS = [
    f"{BOXED[2]},Nodule,1000,500,200,40",  # 176 px outside the 1024x1024 film: rejected
    f"{BOXED[2]},Nodule,300,300,-10,20",  # negative size: rejected
    f"{BOXED[3]},Tumour,100,100,50,50",  # not in the label map: rejected
    f"{BOXED[4]},Mass,990,300,39,60",  # 5 px over the border: clipped to it
    f"{ALONE},Nodule,1000,500,200,40",  # the image's only box, outside: the image is left out
]


@pytest.fixture(scope="module")
def bad_csv(tmp_path_factory) -> Path:
    lines = SAMPLE_CSV.read_text(encoding="utf-8").splitlines()
    rows = [line for line in lines[1:] if line.split(",", 1)[0] in BOXED]
    path = tmp_path_factory.mktemp("one truth") / "BBox_List bad.csv"
    path.write_text("\n".join([lines[0], *rows, rows[0], *BAD_ROWS]) + "\n", encoding="utf-8")  # rows[0] twice
    return path


@pytest.fixture(scope="module")
def records(bad_csv) -> Path:
    folder = bad_csv.parent / "records"
    assert run_main(generate_tfrecords, ["--nih-csv", str(bad_csv), "--image-dir", str(SAMPLE_IMAGES),
                                         "--output-dir", str(folder), "--split", "1,0,0", "--shards", "1",
                                         "--workers", "1"]) == ExitStatus.SUCCESS
    return folder


@pytest.fixture(scope="module")
def detections(bad_csv) -> Path:
    """What detect writes for the CSV's images: one detection, and images.csv with the sizes it saw."""
    rows = [[BOXED[4], 1024, 1024, 5, "Mass", 0.7, 980.0, 290.0, 1020.0, 350.0]]
    return write_detections_folder(bad_csv.parent / "detections", rows, [*BOXED, ALONE]).parent


def corners(frame) -> dict[str, list[tuple]]:
    boxes: dict[str, list[tuple]] = {}
    for row in frame.itertuples(index=False):
        boxes.setdefault(row.image, []).append((row.label, *(round(v, 2) for v in (row.xmin, row.ymin, row.xmax,
                                                                                    row.ymax))))
    return {image: sorted(found) for image, found in boxes.items()}


def record_corners(folder: Path) -> dict[str, list[tuple]]:
    boxes = {}
    for image, example in decode_records(sorted(folder.glob("train-*"))).items():
        boxes[image] = sorted((CLASS_NAMES[label - 1], *(round(float(v) * 1024, 2) for v in (xmin, ymin, xmax, ymax)))
                              for label, (ymin, xmin, ymax, xmax) in zip(example["classes"], example["boxes"],
                                                                          strict=True))
    return boxes


def box_rejects(rejects) -> set[tuple[str, str, str]]:
    """(file name, location, reason) of the rejected rows; whole images apart (their wording differs)."""
    return {(Path(source).name, location, reason) for source, location, reason in rejects if location != "image"}


def test_one_bad_csv_gives_the_same_boxes_to_the_records_and_to_evaluate(bad_csv, records, detections):
    inputs = selection.prepare_inputs(detections, bad_csv)
    from_csv = corners(inputs.ground_truth)
    assert from_csv == record_corners(records)
    assert len(from_csv[BOXED[2]]) == 2 and ("Mass", 990.0, 300.0, 1024.0, 360.0) in from_csv[BOXED[4]]
    assert sum(map(len, from_csv.values())) == 8  # the 7 sample boxes (the duplicate row once) and the clipped one
    assert ALONE not in inputs.images and BOXED[3] in inputs.images
    assert any(note.startswith("1 images whose every ground-truth box was rejected") for note in inputs.notes)


def test_one_bad_csv_gives_the_same_rejects_to_the_records_and_to_evaluate(bad_csv, records, detections):
    inputs = selection.prepare_inputs(detections, bad_csv)
    with open(records / REJECTS_CSV, newline="") as handle:
        written = [(row["source"], row["location"], row["reason"]) for row in csv.DictReader(handle)]
    ours = [(reject.source, reject.location, reject.reason) for reject in inputs.rejects]
    assert box_rejects(ours) == box_rejects(written)
    assert {reason.split(":")[0] for reason in (r for _, location, r in box_rejects(ours))} >= {BOXED[2], ALONE}
    assert len(box_rejects(ours)) == 4
    assert [(r.image, r.reason) for r in inputs.rejects if r.location == "image"] == [
        (ALONE, f"{ALONE}: all 1 boxes rejected; image not evaluated")]
    assert {row[1] for row in written if row[1] == "image"} and ALONE not in record_corners(records)


def test_records_as_ground_truth_give_evaluate_the_same_boxes(bad_csv, records, detections):
    from_records = selection.prepare_inputs(detections, records, split="train")
    assert corners(from_records.ground_truth) == corners(selection.prepare_inputs(detections, bad_csv).ground_truth)
    assert from_records.rejects == []


def test_a_model_that_detected_nothing_is_evaluated(bad_csv, tmp_path):
    nothing = write_detections_folder(tmp_path / "nothing", [], [*BOXED, ALONE]).parent
    run = evaluate.run_evaluation(nothing, bad_csv, tmp_path / "eval", plots=False)
    assert run.metrics.detections == 0 and sum(run.metrics.boxes.values()) == 8
    assert run.metrics.froc.overall.hits == 0
