"""scripts/evaluate.py in-process: outputs, exit statuses and exact error lines, paths with spaces."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import pytest

from chestdet.commands.cli import ExitStatus, run_main
from chestdet.commands.evaluate import build_parser, main
from chestdet.core.contracts import REJECT_COLUMNS, REJECTS_CSV
from chestdet.data.annotations import read_nih_csv
from tests.conftest import REPO, SAMPLE_CSV, SAMPLE_IMAGES
from tests.support.evaluation_inputs import (
    BOXED,
    fake_detections,
    sample_boxes,
    unlabeled_images,
    write_detections_folder,
)
from tests.support.spreadsheets import as_spreadsheet, with_latin1_row


@pytest.fixture
def detections(tmp_path):
    negatives = unlabeled_images()
    folder = tmp_path / "detect output"
    return write_detections_folder(folder, fake_detections(sample_boxes(), negatives), [*BOXED, *negatives])


def test_full_run_writes_every_output_and_ends_with_the_summary(tmp_path, detections, capsys):
    out = tmp_path / "eval report"
    status = run_main(main, ["--detections", str(detections.parent), "--ground-truth", str(SAMPLE_CSV),
                             "--output-dir", str(out)])
    assert status == ExitStatus.SUCCESS
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["metrics.json", "report.md", "report.html", "pr_curves.png", "froc.png", "confusion_matrix.png", "rejects.csv",
         "operating_points.json"]
    )
    document = json.loads((out / "metrics.json").read_text())
    assert document["images"] == 8 and document["rejects"] == 0
    assert document["sources"]["ground_truth"] == f"NIH CSV {SAMPLE_CSV}"
    assert set(document) >= {"coco", "froc", "iobb", "image_level", "confusion_matrix", "settings"}
    err = capsys.readouterr().err
    lines = err.splitlines()
    header = next(k for k, line in enumerate(lines) if line.startswith("class "))
    assert [line.split()[0] for line in lines[header + 2: header + 11]] == [
        "Atelectasis", "Cardiomegaly", "Effusion", "Infiltrate", "Mass", "Nodule", "Pneumonia", "Pneumothorax", "all"]
    assert lines[-1] == f"report: {out / 'report.md'}"


def test_existing_report_is_not_overwritten_without_the_flag(tmp_path, detections, capsys):
    out = tmp_path / "eval"
    argv = ["--detections", str(detections), "--ground-truth", str(SAMPLE_CSV), "--output-dir", str(out), "--no-plots"]
    assert run_main(main, argv) == ExitStatus.SUCCESS
    before = (out / "metrics.json").read_text()
    capsys.readouterr()
    assert run_main(main, argv) == ExitStatus.ERROR
    assert capsys.readouterr().err.strip() == (
        f"error: {out} already holds a report (metrics.json); pass --overwrite to replace it")
    assert (out / "metrics.json").read_text() == before
    assert run_main(main, [*argv, "--overwrite", "--score-threshold", "0.9"]) == ExitStatus.SUCCESS
    assert json.loads((out / "metrics.json").read_text())["settings"]["score_threshold"] == 0.9


def test_missing_inputs_are_one_line_errors(tmp_path, detections, capsys):
    missing = tmp_path / "no such" / "detections.csv"
    status = run_main(main, ["--detections", str(missing), "--ground-truth", str(SAMPLE_CSV),
                             "--output-dir", str(tmp_path / "o")])
    assert status == ExitStatus.ERROR
    assert capsys.readouterr().err.strip() == f"error: {missing}: detections file not found"
    gone = tmp_path / "gt missing.csv"
    status = run_main(main, ["--detections", str(detections), "--ground-truth", str(gone),
                             "--output-dir", str(tmp_path / "o")])
    assert status == ExitStatus.ERROR
    assert capsys.readouterr().err.strip() == f"error: {gone}: ground truth not found"
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_strict_turns_rejected_rows_into_status_1(tmp_path, detections, capsys):
    with open(detections, "a") as handle:
        handle.write(f"{BOXED[0]},1024,1024,5,Mass,lots,1,1,2,2\n")
    argv = ["--detections", str(detections), "--ground-truth", str(SAMPLE_CSV), "--no-plots"]
    assert run_main(main, [*argv, "--output-dir", str(tmp_path / "a")]) == ExitStatus.SUCCESS
    assert run_main(main, [*argv, "--output-dir", str(tmp_path / "b"), "--strict"]) == ExitStatus.REJECTS
    assert f"1 input rows rejected, listed in {tmp_path / 'b' / 'rejects.csv'}" in capsys.readouterr().err
    assert "score is 'lots', not a number" in (tmp_path / "b" / "rejects.csv").read_text()


def test_split_flags(tmp_path, detections):
    split = tmp_path / "my split.csv"
    split.write_text("image,patient,split,boxes\n" + "".join(
        f"{name},{name[:8]},{'test' if k < 3 else 'train'},1\n" for k, name in enumerate(BOXED)))
    out = tmp_path / "split eval"
    argv = ["--detections", str(detections), "--ground-truth", str(SAMPLE_CSV), "--output-dir", str(out),
            "--split-file", str(split), "--split", "test", "--no-plots"]
    assert run_main(main, argv) == ExitStatus.SUCCESS
    document = json.loads((out / "metrics.json").read_text())
    assert document["images"] == 3
    assert document["sources"]["split"] == f"{split} (test)"


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--score-threshold", "1.5", "argument --score-threshold: 1.5 is outside 0..1"),
    ("--hit-iou", "half", "argument --hit-iou: 'half' is not a number"),
    ("--bootstrap", "-5", "argument --bootstrap: -5 is negative"),
    ("--gallery", "many", "argument --gallery: 'many' is not a whole number"),
])
def test_bad_numbers_are_refused_by_the_parser(flag, value, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--detections", "d", "--ground-truth", "g", "--output-dir", "o", flag, value])
    assert exit_info.value.code == ExitStatus.ERROR
    assert capsys.readouterr().err.strip().endswith(message)


def test_every_flag_has_help():
    parser = build_parser()
    for action in parser._actions:
        assert action.help, action.dest


def test_script_wrapper_runs(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "evaluate.py"), "--help"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--ground-truth" in result.stdout and "examples:" in result.stdout


def test_bootstrap_block_and_the_same_seed_gives_the_same_intervals(tmp_path, detections, capsys):
    argv = ["--detections", str(detections), "--ground-truth", str(SAMPLE_CSV), "--no-plots", "--gallery", "0",
            "--bootstrap", "40", "--seed", "7"]
    assert run_main(main, [*argv, "--output-dir", str(tmp_path / "a")]) == ExitStatus.SUCCESS
    assert run_main(main, [*argv, "--output-dir", str(tmp_path / "b")]) == ExitStatus.SUCCESS
    first = json.loads((tmp_path / "a" / "metrics.json").read_text())["bootstrap"]
    assert first == json.loads((tmp_path / "b" / "metrics.json").read_text())["bootstrap"]
    assert {k: first[k] for k in ("replicates", "seed", "level", "unit")} == {
        "replicates": 40, "seed": 7, "level": 0.95, "unit": "patient"}
    assert set(first) == {"replicates", "seed", "level", "unit", "coco", "froc", "image_level"}
    assert set(first["coco"]["overall"]) == {"ap", "ap50", "ap25"}
    assert first["froc"]["fp_per_image"] == [0.125, 0.25, 0.5, 1, 2, 4, 8]
    assert len(first["froc"]["overall"]["sensitivity"]) == 7
    assert set(first["image_level"]["Mass"]) == {"sensitivity", "specificity"}
    low, high = first["coco"]["overall"]["ap50"]
    overall = json.loads((tmp_path / "a" / "metrics.json").read_text())["coco"]["overall"]
    assert low <= overall["ap50"] <= high
    ap_low, ap_high = first["coco"]["overall"]["ap"]
    report_text = (tmp_path / "a" / "report.md").read_text()
    assert f"| all | 7 | {overall['ap']:.2f} [{ap_low:.2f}, {ap_high:.2f}] |" in report_text
    assert "bootstrap: 40 replicates over" in capsys.readouterr().err
    assert not (tmp_path / "a" / "gallery").exists()


def test_gallery_from_the_image_dir_is_linked_from_the_report(tmp_path, detections):
    out = tmp_path / "with gallery"
    argv = ["--detections", str(detections), "--ground-truth", str(SAMPLE_CSV), "--no-plots",
            "--output-dir", str(out), "--image-dir", str(SAMPLE_IMAGES), "--gallery", "2"]
    assert run_main(main, argv) == ExitStatus.SUCCESS
    pictures = sorted(p.relative_to(out).as_posix() for p in (out / "gallery").rglob("*.png"))
    assert pictures, "the fake detections miss some boxes and make false positives"
    text = (out / "report.md").read_text()
    assert "## Error gallery" in text
    for picture in pictures:
        assert f"]({picture})" in text
    assert all(len(list(folder.iterdir())) <= 4 for folder in (out / "gallery").iterdir())


def test_reject_lines_name_the_image_of_a_bad_detection_row(tmp_path, detections):
    with open(detections, "a") as handle:
        handle.write(f"{BOXED[0]},1024,1024,5,Mass,lots,1,1,2,2\n")
    out = tmp_path / "eval"
    assert run_main(main, ["--detections", str(detections), "--ground-truth", str(SAMPLE_CSV), "--no-plots",
                           "--output-dir", str(out)]) == ExitStatus.SUCCESS
    with open(out / REJECTS_CSV, newline="") as handle:
        written = list(csv.DictReader(handle))
    assert tuple(written[0]) == REJECT_COLUMNS
    assert [(row["image"], row["reason"]) for row in written] == [(BOXED[0], "score is 'lots', not a number")]


def test_spreadsheet_csvs_give_the_same_metrics_as_the_clean_files(tmp_path, detections):
    split = tmp_path / "split.csv"
    split.write_text("image,patient,split,boxes\n" + "".join(
        f"{name},{name[:8]},test,1\n" for name in [*BOXED, *unlabeled_images()]))
    saved = tmp_path / "saved by a spreadsheet"
    saved.mkdir()
    for name in ("detections.csv", "images.csv"):
        as_spreadsheet(detections.parent / name, saved / name)

    def metrics(folder, truth, split_file, out):
        assert run_main(main, ["--detections", str(folder), "--ground-truth", str(truth), "--split-file",
                               str(split_file), "--no-plots", "--output-dir", str(tmp_path / out)]) == 0
        document = json.loads((tmp_path / out / "metrics.json").read_text())
        return {key: value for key, value in document.items() if key != "sources"}

    clean = metrics(detections.parent, SAMPLE_CSV, split, "clean")
    assert clean["rejects"] == 0 and clean["images"] == 8
    assert metrics(saved, as_spreadsheet(SAMPLE_CSV, tmp_path / "truth.csv"),
                   as_spreadsheet(split, tmp_path / "split saved.csv"), "saved") == clean


@pytest.mark.parametrize("which", ["ground truth", "detections", "images", "split"])
def test_a_csv_that_is_not_utf8_is_one_line_naming_file_and_line(tmp_path, detections, which, capsys):
    split = tmp_path / "split.csv"
    split.write_text("image,patient,split,boxes\n" + "".join(f"{name},{name[:8]},test,1\n" for name in BOXED))
    clean = {"ground truth": SAMPLE_CSV, "detections": detections, "images": detections.parent / "images.csv",
             "split": split}[which]
    bad, line, column = with_latin1_row(clean, tmp_path / "latin1.csv", "Radiographie_é.png,1024,1024,5,Mass,0.5")
    if which in ("detections", "images"):
        shutil.copy(bad, clean)
        bad = clean
    argv = {"ground truth": SAMPLE_CSV, "detections": detections, "split": split} | {which: bad}
    status = run_main(main, ["--detections", str(argv["detections"]), "--ground-truth", str(argv["ground truth"]),
                             "--split-file", str(argv["split"]), "--output-dir", str(tmp_path / "out")])
    assert status == ExitStatus.ERROR
    assert capsys.readouterr().err.strip() == (
        f"error: {bad}: line {line}: not UTF-8 text (byte 0xE9 at column {column}); save the file as UTF-8 CSV")


def test_baseline_flags(tmp_path, detections, capsys):
    out = tmp_path / "with baseline"
    assert run_main(main, ["--detections", str(detections), "--ground-truth", str(SAMPLE_CSV), "--output-dir",
                           str(out), "--no-plots", "--baseline-from", str(SAMPLE_CSV)]) == ExitStatus.SUCCESS
    block = json.loads((out / "metrics.json").read_text())["baseline"]
    assert block["training_images"] == len({box.image for box in read_nih_csv(SAMPLE_CSV)[0]} - set(BOXED))
    lines = capsys.readouterr().err.splitlines()
    assert lines[-3].startswith(("Every class with boxes here beats the trivial baseline",
                                 "Not better than the trivial baseline on AP@0.5: "))
    assert "AP@0.5 baseline" in next(line for line in lines if line.startswith("class "))
    assert lines[-2] == (f"operating points: {out / 'operating_points.json'} (choose detect's from a validation "
                         "split's evaluation, --split val, never the test split's)")
    with pytest.raises(SystemExit) as exit_info:
        main(["--detections", str(detections), "--ground-truth", str(SAMPLE_CSV), "--output-dir", str(tmp_path / "x"),
              "--no-baseline", "--baseline-from", str(SAMPLE_CSV)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().endswith("--no-baseline and --baseline-from contradict each other; drop one")
