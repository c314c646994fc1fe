"""A malformed label map is one error line naming the file, the line and the column, in every command
that reads one."""

from __future__ import annotations

from pathlib import Path

import pytest

from chestdet.commands import detect, evaluate, export, generate_tfrecords, train
from chestdet.commands.cli import ExitStatus, run_main
from tests.conftest import REPO, SAMPLE_CSV, SAMPLE_IMAGES
from tests.support.run_folders import empty_records

PIPELINE = REPO / "chestdet" / "resources" / "pipelines" / "ssd_mobilenet_v2_fpnlite_320x320.config"
BROKEN = "item {\n  id: 1\n  name: 'Atelectasis'\n}\nitem {\n  id: 2\n  name: 'Mass'\n"  # the last } is missing


def train_argv(folder: Path, label_map: Path) -> list[str]:
    return ["--records", str(empty_records(folder / "records")), "--from-scratch", "--label-map", str(label_map)]


def export_argv(folder: Path, label_map: Path) -> list[str]:
    run = folder / "run"
    run.mkdir()
    for suffix in (".index", ".data-00000-of-00001"):
        (run / f"ckpt-1{suffix}").write_bytes(b"")
    return ["--checkpoint", str(run / "ckpt-1"), "--config", str(PIPELINE), "--label-map", str(label_map)]


def records_argv(folder: Path, label_map: Path) -> list[str]:
    return ["--nih-csv", str(SAMPLE_CSV), "--image-dir", str(SAMPLE_IMAGES), "--output-dir", str(folder / "out"),
            "--label-map", str(label_map)]


def detect_argv(folder: Path, label_map: Path) -> list[str]:
    (folder / "export").mkdir()
    return ["--model", str(folder / "export"), "--input", str(SAMPLE_IMAGES), "--output-dir", str(folder / "out"),
            "--label-map", str(label_map), "--no-progress"]


def evaluate_argv(folder: Path, label_map: Path) -> list[str]:
    (folder / "detections.csv").write_text("image,class_name,score,xmin,ymin,xmax,ymax\n")
    return ["--detections", str(folder / "detections.csv"), "--ground-truth", str(SAMPLE_CSV), "--output-dir",
            str(folder / "out"), "--label-map", str(label_map)]


@pytest.mark.parametrize(("command", "argv"), [
    (train.main, train_argv), (export.main, export_argv), (generate_tfrecords.main, records_argv),
    (detect.main, detect_argv), (evaluate.main, evaluate_argv),
], ids=["train", "export", "generate_tfrecords", "detect", "evaluate"])
def test_a_malformed_label_map_is_one_line_with_its_line_and_column(command, argv, tmp_path: Path, caplog):
    broken = tmp_path / "my labels.pbtxt"
    broken.write_text(BROKEN)
    assert run_main(command, argv(tmp_path, broken)) == ExitStatus.ERROR
    errors = [record.getMessage() for record in caplog.records if record.levelname == "ERROR"]
    assert errors == [f"error: {broken}:7:9: not a valid label map: Expected \"}}\"."]
