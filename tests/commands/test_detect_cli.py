"""detect refuses a label map that is not the model's own before it loads anything."""

from __future__ import annotations

import shutil
from pathlib import Path

from chestdet.commands.cli import ExitStatus, run_main
from chestdet.commands.detect import main
from tests.conftest import LABEL_MAP, SAMPLE_IMAGES


def test_a_label_map_with_a_ninth_class_is_refused_naming_both_maps(tmp_path: Path, caplog):
    export = tmp_path / "export"
    export.mkdir()
    shutil.copyfile(LABEL_MAP, export / "label_map.pbtxt")
    nine = tmp_path / "nine.pbtxt"
    nine.write_text(LABEL_MAP.read_text() + "item {\n  id: 9\n  name: 'Fibrosis'\n}\n")
    argv = ["--model", str(export), "--label-map", str(nine), "--input", str(SAMPLE_IMAGES),
            "--output-dir", str(tmp_path / "out")]
    assert run_main(main, argv) == ExitStatus.ERROR
    [error] = [record.getMessage() for record in caplog.records if record.levelname == "ERROR"]
    assert error.startswith(f"error: {nine} (9 classes: ") and "Fibrosis) differs from the model's label map " \
        f"{export / 'label_map.pbtxt'} (8 classes: " in error
    assert not (tmp_path / "out" / "detections.csv").exists()
