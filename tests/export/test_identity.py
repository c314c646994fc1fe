"""What an export is to the stages that receive it: its label map, checked against a given one, and its
version."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from chestdet.core.labels import LabelMapError
from chestdet.export.identity import model_labels, model_version
from tests.conftest import LABEL_MAP


def export_with_map(folder: Path, text: str | None = None) -> Path:
    folder.mkdir()
    if text is None:
        shutil.copyfile(LABEL_MAP, folder / "label_map.pbtxt")
    else:
        (folder / "label_map.pbtxt").write_text(text)
    return folder


def test_the_exports_own_map_is_used_and_a_copy_of_it_is_accepted(tmp_path: Path):
    export = export_with_map(tmp_path / "export")
    assert model_labels(export).names[-1] == "Pneumothorax"
    assert model_labels(export, LABEL_MAP).names == model_labels(export).names


def test_a_map_with_another_class_or_order_is_refused_in_one_line_naming_both(tmp_path: Path):
    export = export_with_map(tmp_path / "export")
    nine = tmp_path / "nine.pbtxt"
    nine.write_text(LABEL_MAP.read_text() + 'item { id: 9 name: "Fibrosis" }\n')
    with pytest.raises(LabelMapError, match=r"nine.pbtxt \(9 classes: .*Fibrosis\) differs from the model's label "
                                            r"map .*export/label_map.pbtxt \(8 classes: "):
        model_labels(export, nine)
    swapped = tmp_path / "swapped.pbtxt"
    swapped.write_text(LABEL_MAP.read_text().replace("'Atelectasis'", "'X'")
                       .replace("'Cardiomegaly'", "'Atelectasis'").replace("'X'", "'Cardiomegaly'"))
    with pytest.raises(LabelMapError, match="swapped.pbtxt .* differs from the model's label map"):
        model_labels(export, swapped)


def test_an_export_without_a_map_needs_one(tmp_path: Path):
    (tmp_path / "bare").mkdir()
    with pytest.raises(LabelMapError, match="the export has no label map"):
        model_labels(tmp_path / "bare")
    assert model_labels(tmp_path / "bare", LABEL_MAP).names[0] == "Atelectasis"


def test_model_version_names_the_export_and_its_checkpoint_step(tmp_path: Path):
    export = tmp_path / "nih v2"
    export.mkdir()
    assert model_version(export) == "nih v2"
    (export / "export.json").write_text(json.dumps({"checkpoint": "/runs/nih/ckpt-13", "step": 12000}))
    assert model_version(export) == "nih v2 step 12000"
    (export / "export.json").write_text(json.dumps({"checkpoint": "/runs/nih/ckpt-13", "step": None}))
    assert model_version(export) == "nih v2 ckpt-13"
