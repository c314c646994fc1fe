"""generate_tfrecords end to end, in-process: every kind of bad input is a reject line, the rest is written."""

from __future__ import annotations

import csv
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from chestdet.commands.cli import run_main
from chestdet.commands.generate_tfrecords import build_parser, main
from tests.conftest import LABEL_MAP, REPO, SAMPLE_CSV, SAMPLE_DATA_ENTRY, SAMPLE_IMAGES, SAMPLE_UNLABELED
from tests.support.datasets import (
    BOMB,
    CUT,
    GRAY,
    GRAY16,
    HEADER,
    JPEG,
    PALETTE,
    RESIZED,
    RGBA,
    XML_ONLY,
    make_messy_dataset,
)
from tests.support.datasets import run_records as run
from tests.support.records import decode_records


def rows(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def dataset(tmp_path) -> Path:
    return make_messy_dataset(tmp_path)


def error_line(caplog) -> str:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR][-1]


def test_every_bad_input_is_one_reject_line_and_the_rest_is_written(dataset, tmp_path):
    output = tmp_path / "records out"
    assert run(dataset, output) == 0
    rejects = rows(output / "rejects.csv")
    csv_path = str(dataset / "boxes.csv")
    by_location = {(r["source"], r["location"]): r["reason"] for r in rejects if r["source"] == csv_path}
    assert by_location == {
        (csv_path, "row 10"): "unknown label 'Edema'; expected one of Atelectasis, Cardiomegaly, Effusion, "
                              "Infiltrate, Mass, Nodule, Pneumonia, Pneumothorax",
        (csv_path, "row 11"): "x is 'ten', not a number",
        (csv_path, "row 12"): "box of zero or negative size (xmin 10, ymin 10, xmax 10, ymax 110)",
        (csv_path, "row 13"): f"{GRAY}: box (xmin 900, ymin 10, xmax 1100, ymax 110) lies 76 px outside the "
                              "1024x1024 image",
        (csv_path, "row 14"): "image 99999999_000.png not found in the --image-dir folders",
    }
    by_file = {Path(r["source"]).name: r for r in rejects if r["source"] != csv_path}
    assert by_file[CUT]["reason"].startswith("corrupt, truncated or unreadable PNG")
    assert by_file[CUT]["reason"].endswith("(1 boxes not written)")
    assert "possible decompression bomb" in by_file[BOMB]["reason"]
    assert by_file["xml_bomb.xml"]["reason"].startswith("refused: the XML declares entities")
    assert by_file["xxe.xml"]["reason"].startswith("refused: the XML declares entities")
    assert by_file["filename_escape.xml"]["reason"].endswith("resolves outside the allowed folders; refused")
    assert by_file["path_escape.xml"]["reason"].endswith("resolves outside the allowed folders; refused")
    assert by_file["malformed.xml"]["reason"].startswith("malformed XML")
    assert len(rejects) == 5 + 2 + 5

    written = {row["image"]: row for row in rows(output / "split.csv")}
    assert set(written) == {GRAY, RGBA, GRAY16, PALETTE, RESIZED, JPEG.replace(".png", ".jpg"), XML_ONLY,
                            "00000002_000.png"}
    assert written[GRAY]["boxes"] == "3"  # CSV Mass + clipped Effusion, XML duplicate Mass dropped, XML Nodule
    assert written["00000002_000.png"]["boxes"] == "0"

    summary = json.loads((output / "summary.json").read_text())
    assert summary["totals"]["images"] == 8 and summary["totals"]["boxes"] == 9
    assert summary["rejects"]["count"] == 12
    assert summary["rejects"]["by_kind"] == {
        "path outside the allowed folders": 2, "unsafe XML refused": 2, "unknown label": 1, "not a number": 1,
        "empty box": 1, "box outside the image": 1, "malformed XML": 1, "image not found": 1,
        "unreadable image": 1, "decompression bomb": 1}
    conversions = summary["conversions"]
    assert conversions["boxes clipped to the image border"] == 1
    assert conversions["duplicate boxes removed"] == 1
    assert conversions["converted: PNG RGBA -> 8-bit gray"] == 1
    assert conversions["converted: PNG 16-bit gray -> 8-bit gray"] == 1
    assert conversions["converted: PNG palette -> 8-bit gray"] == 1
    assert conversions["boxes rescaled from 1024x1024 to 512x512"] == 1
    assert conversions["boxes rescaled from 2048x2048 to 1024x1024"] == 1
    assert conversions["images stored unchanged"] == 5
    assert (output / "label_map.pbtxt").read_bytes() == LABEL_MAP.read_bytes()


def test_converted_and_rescaled_images_decode_to_the_right_boxes(dataset, tmp_path):
    output = tmp_path / "out"
    run(dataset, output)
    decoded = decode_records(sorted(output.glob("*.tfrecord")))

    by_class = dict(zip(decoded[GRAY]["classes"], decoded[GRAY]["boxes"].tolist(), strict=True))
    assert sorted(by_class) == [3, 5, 6]
    np.testing.assert_allclose(by_class[5], [200 / 1024, 100 / 1024, 260 / 1024, 150 / 1024], atol=1e-6)
    np.testing.assert_allclose(by_class[3], [500 / 1024, 1000 / 1024, 530 / 1024, 1.0], atol=1e-6)  # clipped
    np.testing.assert_allclose(by_class[6], [600 / 1024, 600 / 1024, 650 / 1024, 640 / 1024], atol=1e-6)
    np.testing.assert_allclose(decoded[RESIZED]["boxes"], [[256 / 1024, 512 / 1024, 320 / 1024, 640 / 1024]],
                               atol=1e-6)
    assert decoded[RESIZED]["image_shape"] == (512, 512, 3)
    np.testing.assert_allclose(decoded[GRAY16]["boxes"], [[20.5 / 1024, 10.5 / 1024, 60.5 / 1024, 40.5 / 1024]],
                               atol=1e-6)
    assert decoded[PALETTE]["classes"] == [4]
    jpeg = decoded[JPEG.replace(".png", ".jpg")]
    assert jpeg["difficult"] == [True] and jpeg["classes"] == [8]
    np.testing.assert_allclose(decoded[XML_ONLY]["boxes"], [[512 / 1024, 500 / 1024, 550 / 1024, 1000 / 1024]],
                               atol=1e-6)
    for example in decoded.values():
        assert example["image_shape"][2] == 3


def test_strict_makes_any_reject_exit_1(dataset, tmp_path):
    assert run(dataset, tmp_path / "out", "--strict") == 1


def test_strict_clean_run_exits_0(tmp_path):
    argv = ["--nih-csv", str(tmp_path / "one.csv"), "--image-dir", str(SAMPLE_IMAGES),
            "--output-dir", str(tmp_path / "out"), "--strict"]
    (tmp_path / "one.csv").write_text(f"{HEADER}\n{GRAY},Mass,100,200,50,60\n")
    assert main(argv) == 0
    assert rows(tmp_path / "out" / "rejects.csv") == []


def test_demo_invocation_on_the_bundled_sample(tmp_path):
    output = tmp_path / "demo records"
    assert main(["--nih-csv", str(SAMPLE_CSV), "--image-dir", str(SAMPLE_IMAGES),
                 "--data-entry", str(SAMPLE_DATA_ENTRY), "--unlabeled-dir", str(SAMPLE_UNLABELED),
                 "--output-dir", str(output)]) == 0
    split = rows(output / "split.csv")
    assert len(split) == 40 and set(split[0]) == {"image", "patient", "split", "boxes"}
    summary = json.loads((output / "summary.json").read_text())
    for name in ("train", "val", "test"):
        assert len(summary["splits"][name]["classes"]) == 8, name
    assert summary["rejects"]["by_kind"] == {"image not found": 984 - 40}


def test_rerun_with_fewer_shards_removes_the_old_ones(tmp_path):
    (tmp_path / "one.csv").write_text(
        HEADER + "\n" + "\n".join(f"{p.name},Mass,100,200,50,60" for p in sorted(SAMPLE_IMAGES.iterdir())) + "\n")
    argv = ["--nih-csv", str(tmp_path / "one.csv"), "--image-dir", str(SAMPLE_IMAGES),
            "--output-dir", str(tmp_path / "out"), "--split", "1,0,0"]
    main([*argv, "--shards", "3"])
    assert sorted(p.name for p in (tmp_path / "out").glob("train-*")) == [
        "train-00000-of-00003.tfrecord", "train-00001-of-00003.tfrecord", "train-00002-of-00003.tfrecord"]
    main([*argv, "--shards", "2"])
    assert sorted(p.name for p in (tmp_path / "out").glob("train-*")) == [
        "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left
    assert len(decode_records(sorted((tmp_path / "out").glob("train-*")))) == 36


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--output-dir", "out"], "nothing to read: give --nih-csv, --xml-dir, --label-studio or --unlabeled-dir"),
        (["--nih-csv", "no such.csv", "--image-dir", ".", "--output-dir", "out"],
         "--nih-csv: file not found: no such.csv"),
        (["--nih-csv", str(SAMPLE_CSV), "--output-dir", "out"],
         "--nih-csv needs at least one --image-dir holding its images"),
        (["--nih-csv", str(SAMPLE_CSV), "--image-dir", "missing dir", "--output-dir", "out"],
         "--image-dir: folder not found: missing dir"),
        (["--xml-dir", "missing xml", "--output-dir", "out"], "--xml-dir: folder not found: missing xml"),
        (["--label-studio", "no export.json", "--image-dir", ".", "--output-dir", "out"],
         "--label-studio: file not found: no export.json"),
        (["--label-studio", str(LABEL_MAP), "--output-dir", "out"],
         "--label-studio needs at least one --image-dir holding its images"),
        (["--nih-csv", str(SAMPLE_CSV), "--image-dir", str(SAMPLE_IMAGES), "--output-dir", "out",
          "--split", "0.5,0.5"], "--split needs 3 comma-separated fractions (train,val,test), got '0.5,0.5'"),
        (["--nih-csv", str(SAMPLE_CSV), "--image-dir", str(SAMPLE_IMAGES), "--output-dir", "out",
          "--shards", "0"], "--shards must be at least 1, got 0"),
        (["--nih-csv", str(SAMPLE_CSV), "--image-dir", str(SAMPLE_IMAGES), "--output-dir", "out",
          "--max-size", "8"], "--max-size must be at least 32 pixels, got 8"),
        (["--nih-csv", str(SAMPLE_CSV), "--image-dir", str(SAMPLE_IMAGES), "--output-dir", "out",
          "--data-entry", "nope.csv"], "--data-entry: file not found: nope.csv"),
    ],
)
def test_unusable_arguments_exit_2_with_one_line(argv, message, caplog, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_main(main, argv) == 2
    assert error_line(caplog) == f"error: {message}"
    assert not (tmp_path / "out").exists()


def test_nothing_usable_exits_2_but_still_reports_why(tmp_path, caplog):
    (tmp_path / "gone.csv").write_text(f"{HEADER}\n99999999_000.png,Mass,1,2,3,4\n")
    output = tmp_path / "out"
    assert run_main(main, ["--nih-csv", str(tmp_path / "gone.csv"), "--image-dir", str(SAMPLE_IMAGES),
                           "--output-dir", str(output)]) == 2
    assert error_line(caplog) == f"error: no image to write: 1 rejects, see {output / 'rejects.csv'}"
    assert rows(output / "rejects.csv")[0]["reason"] == "image 99999999_000.png not found in the --image-dir folders"


def test_missing_output_dir_flag_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["--nih-csv", "x.csv"])
    assert caught.value.code == 2
    assert "the following arguments are required: --output-dir" in capsys.readouterr().err


def test_script_is_a_thin_wrapper_with_help():
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "generate_tfrecords.py"), "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for flag in ("--nih-csv", "--xml-dir", "--image-dir", "--output-dir", "--data-entry", "--unlabeled-dir",
                 "--split", "--seed", "--shards", "--max-size", "--strict"):
        assert flag in result.stdout
