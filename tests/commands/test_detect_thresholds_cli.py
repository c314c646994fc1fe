"""detect.py's per-class thresholds flags and its default Label Studio URL prefix (checked before any model loads)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from chestdet.commands.cli import ExitStatus, run_main
from chestdet.commands.detect import _image_url_prefix, main
from chestdet.detection.inputs import Listing, read_listing


@pytest.fixture
def export(tmp_path: Path) -> Path:
    (tmp_path / "export" / "saved_model").mkdir(parents=True)
    return tmp_path / "export"


@pytest.mark.parametrize("extra, message", [
    (["--min-score-file", "t.csv", "--operating-points", "p.json", "--operating-point", "1fp"],
     "--min-score-file and --operating-points are two forms of per-class minimum scores; give one"),
    (["--operating-points", "p.json"], "--operating-points FILE and --operating-point NAME go together"),
    (["--operating-point", "1fp"], "--operating-points FILE and --operating-point NAME go together"),
])
def test_per_class_thresholds_come_in_one_form_only(export, tmp_path, caplog, extra, message):
    argv = ["--model", str(export), "--input", str(tmp_path), "--output-dir", str(tmp_path / "out"), *extra]
    assert run_main(main, argv) == ExitStatus.ERROR
    assert f"error: {message}" in caplog.text


def test_an_unknown_point_is_refused_by_the_parser(export, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--model", str(export), "--input", str(tmp_path), "--output-dir", str(tmp_path / "o"),
              "--operating-points", "p.json", "--operating-point", "3fp"])
    assert "invalid choice: '3fp'" in capsys.readouterr().err


def test_label_studio_urls_name_the_input_folder_under_the_document_root(tmp_path):
    folder = tmp_path / "held out"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.png", "sub/b.png"):
        (folder / name).write_bytes(b"\x89PNG\r\n\x1a\n")
    args = argparse.Namespace(image_url_prefix=None, split_file=None, image_dir=[])
    assert _image_url_prefix(args, read_listing(folder)) == "/data/local-files/?d=held%20out/"
    assert _image_url_prefix(args, read_listing(folder / "sub" / "b.png")) == "/data/local-files/?d=sub/"
    split = argparse.Namespace(image_url_prefix=None, split_file=Path("split.csv"), image_dir=[folder / "sub"])
    assert _image_url_prefix(split, Listing([])) == "/data/local-files/?d=sub/"
    given = argparse.Namespace(image_url_prefix="http://files/x/", split_file=None, image_dir=[])
    assert _image_url_prefix(given, read_listing(folder)) == "http://files/x/"
