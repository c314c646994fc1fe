"""Per-class thresholds: the min-score CSV and operating_points.json, its one writer and reader."""

from __future__ import annotations

import json

import pytest

from chestdet.core.errors import DetectError
from chestdet.detection.thresholds import (
    POINT_NAMES,
    OperatingPoint,
    OperatingPoints,
    OperatingPointsError,
    Thresholds,
    read_operating_points,
    write_operating_points,
)

CLASS_NAMES = {1: "Atelectasis", 2: "Cardiomegaly", 6: "Nodule"}


def sample_points() -> OperatingPoints:
    return OperatingPoints(
        {"Cardiomegaly": {"1fp": OperatingPoint(0.41, 0.62, 0.98, 0.31, {"sensitivity": [0.5, 0.7]}),
                          "2fp": OperatingPoint(None)},
         "Nodule": {"1fp": OperatingPoint(0.12, 0.2, 1.0, 0.05)}},
        split="val", source={"detections": "d"},
    )


def test_operating_points_round_trip_and_give_per_class_thresholds(tmp_path):
    path = write_operating_points(tmp_path / "operating_points.json", sample_points())
    points = read_operating_points(path)
    assert points == sample_points()
    assert json.loads(path.read_text())["points"] == list(POINT_NAMES)
    assert points.thresholds("1fp", CLASS_NAMES, 0.3) == Thresholds(0.3, {2: 0.41, 6: 0.12})
    assert points.thresholds("2fp", CLASS_NAMES, 0.3) == Thresholds(0.3, {})  # unreachable: the default


@pytest.mark.parametrize("content, reason", [
    ("{", "not JSON"),
    ("[]", 'no "classes" object'),
    ('{"classes": {"Nodule": {"1fp": {"threshold": 1.5}}}}', "classes.Nodule.1fp: threshold 1.5 is not a score"),
])
def test_a_bad_file_is_one_line_naming_it(tmp_path, content, reason):
    path = tmp_path / "points.json"
    path.write_text(content)
    with pytest.raises(OperatingPointsError, match=reason) as error:
        read_operating_points(path)
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)


def test_an_unknown_point_name_lists_the_known_ones():
    with pytest.raises(OperatingPointsError, match="unknown operating point '3fp'; expected one of 0.25fp, 0.5fp"):
        sample_points().thresholds("3fp", CLASS_NAMES, 0.3)


def test_one_mechanism_for_every_form_of_per_class_thresholds(tmp_path):
    from chestdet.detection.thresholds import choose_thresholds

    csv = tmp_path / "min_scores.csv"
    csv.write_text("class,min_score\nnodule,0.05\n")
    points = write_operating_points(tmp_path / "operating_points.json", sample_points())
    assert choose_thresholds(0.3, CLASS_NAMES) == Thresholds(0.3)
    assert choose_thresholds(0.3, CLASS_NAMES, min_score_file=csv) == Thresholds(0.3, {6: 0.05})
    assert choose_thresholds(0.3, CLASS_NAMES, operating_points=points, point="1fp") == Thresholds(0.3, {2: 0.41,
                                                                                                         6: 0.12})
    with pytest.raises(DetectError, match="give one"):
        choose_thresholds(0.3, CLASS_NAMES, min_score_file=csv, operating_points=points, point="1fp")
