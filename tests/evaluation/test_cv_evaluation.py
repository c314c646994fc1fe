"""evaluate.py --cv: per-fold figures, mean ± sd across folds and pooled figures, against separate runs."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest

from chestdet.commands.cli import ExitStatus, run_main
from chestdet.commands.evaluate import main
from chestdet.data.annotations import read_nih_csv
from chestdet.data.split import read_split
from chestdet.evaluation.crossval import CrossvalOptions, run_crossval
from chestdet.evaluation.cv_evaluation import figures
from chestdet.evaluation.evaluate import run_evaluation
from tests.conftest import SAMPLE_CSV
from tests.support.crossval_steps import FakeSteps
from tests.support.evaluation_inputs import fake_detections, write_detections_folder


def flat(table: dict, prefix: tuple = ()) -> dict:
    """{class: {measure: value}} -> {(class, measure): value} (any depth), for pytest.approx."""
    items = {}
    for name, values in table.items():
        if isinstance(values, dict):
            items.update(flat(values, (*prefix, name)))
        elif prefix:
            items[(*prefix, name)] = values
    return items


def split_tests(folder: Path) -> list[str]:
    with (folder / "split.csv").open(newline="") as handle:
        return [row["image"] for row in csv.DictReader(handle) if row["split"] == "test"]


@pytest.fixture(scope="module")
def cv_runs(folds_dir, tmp_path_factory) -> Path:
    """A crossval folder whose folds' detections are jittered copies of the test images' NIH boxes."""
    runs = tmp_path_factory.mktemp("cv eval") / "cv runs"
    run_crossval(CrossvalOptions(folds_dir, runs), FakeSteps().steps())
    boxes, _ = read_nih_csv(SAMPLE_CSV)
    for fold in (1, 2):
        folder = runs / f"fold-{fold}"
        images = split_tests(folder)
        chosen = [box for box in boxes if box.image in images]
        negatives = sorted(set(images) - {box.image for box in chosen})
        write_detections_folder(folder / "detections", fake_detections(chosen, negatives), images)
    return runs


@pytest.fixture(scope="module")
def cv_report(cv_runs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cv report") / "eval cv"
    assert run_main(main, ["--cv", str(cv_runs), "--ground-truth", str(SAMPLE_CSV), "--output-dir", str(out),
                           "--no-plots", "--gallery", "0"]) == ExitStatus.SUCCESS
    return out


def test_per_fold_figures_are_those_of_separate_runs_and_mean_sd_summarise_them(cv_runs, cv_report, tmp_path):
    block = json.loads((cv_report / "metrics.json").read_text())["cross_validation"]
    assert block["folds"] == [1, 2] and block["missing_folds"] == []
    separate = []
    for fold in (1, 2):
        folder = cv_runs / f"fold-{fold}"
        run = run_evaluation(folder / "detections", SAMPLE_CSV, tmp_path / f"alone {fold}", folder / "split.csv")
        separate.append(figures(run.metrics))
        entry = {key: value for key, value in block["per_fold"][fold - 1].items() if key != "baseline"}
        assert entry["fold"] == fold and entry["images"] == len(split_tests(folder)) == run.metrics.images
        assert flat(entry) == pytest.approx(flat(separate[-1]))
        assert json.loads((cv_report / f"fold-{fold}" / "metrics.json").read_text())["images"] == run.metrics.images
    ap50 = [fold["all"]["ap50"] for fold in separate]
    assert 0 < ap50[0] < 1 and ap50[0] != ap50[1]
    assert block["mean"]["all"]["ap50"] == pytest.approx(statistics.fmean(ap50))
    assert block["sd"]["all"]["ap50"] == pytest.approx(statistics.stdev(ap50))
    for name in ("Mass", "all"):
        values = [fold[name]["froc"] for fold in separate if fold[name]["froc"] is not None]
        assert block["mean"][name]["froc"] == pytest.approx(statistics.fmean(values))


def test_pooled_figures_are_one_run_over_every_test_fold(cv_runs, cv_report, tmp_path):
    rows, images = [], []
    for fold in (1, 2):
        found = cv_runs / f"fold-{fold}" / "detections"
        with (found / "detections.csv").open(newline="") as handle:
            rows += list(csv.reader(handle))[1:]
        images += split_tests(cv_runs / f"fold-{fold}")
    together = write_detections_folder(tmp_path / "together", rows, images)
    run = run_evaluation(together.parent, SAMPLE_CSV, tmp_path / "together eval")
    block = json.loads((cv_report / "metrics.json").read_text())["cross_validation"]
    assert block["pooled"]["images"] == run.metrics.images == 40
    expected = figures(run.metrics)
    assert flat(block["pooled"]) == pytest.approx(flat(expected))
    assert block["pooled"]["all"]["ap50"] != block["mean"]["all"]["ap50"]  # pooling is not averaging


def test_report_shows_folds_mean_sd_and_pooled_side_by_side(cv_report):
    text = (cv_report / "report.md").read_text()
    block = json.loads((cv_report / "metrics.json").read_text())["cross_validation"]
    assert "| class | fold 1 | fold 2 | mean ± sd | pooled |" in text
    overall = next(line for line in text.splitlines() if line.startswith("| AP@0.5 |"))
    mean, sd, pooled = block["mean"]["all"]["ap50"], block["sd"]["all"]["ap50"], block["pooled"]["all"]["ap50"]
    assert overall.endswith(f"| {mean:.3f} ± {sd:.3f} | {pooled:.3f} |")
    assert "[fold 1](fold-1/report.md)" in text and "[pooled](pooled/report.md)" in text
    html = (cv_report / "report.html").read_text()
    assert ">mean ± sd</th>" in html and 'href="pooled/report.html"' in html
    assert sorted(p.name for p in cv_report.iterdir()) == ["fold-1", "fold-2", "metrics.json", "pooled", "report.html",
                                                           "report.md"]


def test_default_ground_truth_is_the_folds_test_records(cv_runs, cv_report, tmp_path):
    out = tmp_path / "from records"
    assert run_main(main, ["--cv", str(cv_runs), "--output-dir", str(out), "--no-plots", "--gallery", "0"]) == 0
    from_records = json.loads((out / "metrics.json").read_text())["cross_validation"]
    from_csv = json.loads((cv_report / "metrics.json").read_text())["cross_validation"]
    assert flat(from_records["pooled"]) == pytest.approx(flat(from_csv["pooled"]), abs=1e-6)
    assert flat(from_records["per_fold"][1]) == pytest.approx(flat(from_csv["per_fold"][1]), abs=1e-6)


def test_a_fold_without_detections_is_left_out_and_said(cv_runs, tmp_path, caplog):
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(cv_runs, runs)
    shutil.rmtree(runs / "fold-2" / "detections")
    out = tmp_path / "eval"
    assert run_main(main, ["--cv", str(runs), "--ground-truth", str(SAMPLE_CSV), "--output-dir", str(out),
                           "--no-plots", "--gallery", "0"]) == 0
    block = json.loads((out / "metrics.json").read_text())["cross_validation"]
    assert block["folds"] == [1] and block["missing_folds"] == [2]
    assert block["sd"]["all"]["ap50"] is None
    assert "folds 2 have no detections yet and are left out" in caplog.text
    assert "Folds 2 have no detections and are left out." in (out / "report.md").read_text()


@pytest.mark.parametrize(("argv", "message"), [
    (["--cv", "runs", "--detections", "d", "--output-dir", "o"], "--cv takes each fold's detections"),
    (["--output-dir", "o", "--ground-truth", "g"], "the following arguments are required: --detections"),
    (["--cv", "runs", "--output-dir", "o", "--split", "val"], "--cv evaluates each fold's test images; drop --split"),
])
def test_cv_flag_combinations_are_refused_by_the_parser(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == ExitStatus.ERROR
    assert message in capsys.readouterr().err


def test_a_folder_that_is_no_cross_validation_is_one_error_line(tmp_path, caplog):
    assert run_main(main, ["--cv", str(tmp_path), "--output-dir", str(tmp_path / "out")]) == ExitStatus.ERROR
    assert f"{tmp_path}: neither crossval.json nor fold-k/detections/ folders; not a cross-validation" in caplog.text


def test_fold_folders_made_elsewhere_are_evaluated_with_a_ground_truth(cv_runs, cv_report, tmp_path, caplog):
    import shutil

    runs = tmp_path / "own folds"
    for fold in (1, 2):
        shutil.copytree(cv_runs / f"fold-{fold}" / "detections", runs / f"fold-{fold}" / "detections")
        shutil.copy(cv_runs / f"fold-{fold}" / "split.csv", runs / f"fold-{fold}" / "split.csv")
    assert run_main(main, ["--cv", str(runs), "--output-dir", str(tmp_path / "no truth")]) == ExitStatus.ERROR
    assert "no crossval.json names the folds' records; pass --ground-truth" in caplog.text
    out = tmp_path / "eval"
    assert run_main(main, ["--cv", str(runs), "--ground-truth", str(SAMPLE_CSV), "--output-dir", str(out),
                           "--no-plots", "--gallery", "0"]) == ExitStatus.SUCCESS
    assert (json.loads((out / "metrics.json").read_text())["cross_validation"]
            == json.loads((cv_report / "metrics.json").read_text())["cross_validation"])


def test_report_carries_each_folds_baseline(cv_runs, cv_report, tmp_path):
    block = json.loads((cv_report / "metrics.json").read_text())["cross_validation"]
    text = (cv_report / "report.md").read_text()
    assert "## Against the trivial baseline (AP@0.5), per fold" in text
    for fold in (1, 2):
        folder = cv_runs / f"fold-{fold}"
        train = [row for row in read_split(folder / "split.csv") if row.split == "train"]
        assert train, "the sample folds have train rows"
        run = run_evaluation(folder / "detections", SAMPLE_CSV, tmp_path / f"alone {fold}", folder / "split.csv")
        assert run.baseline is not None and run.baseline.images == len(train)
        entry = block["per_fold"][fold - 1]["baseline"]
        for name in ("Cardiomegaly", "all"):
            expected = (run.baseline.metrics.coco.overall if name == "all"
                        else run.baseline.metrics.coco.per_class[name]).ap50
            assert entry[name]["ap50"] == pytest.approx(expected)
            assert entry[name]["beaten"] == run.baseline.beaten(run.metrics)[name]
            model = block["per_fold"][fold - 1][name]["ap50"]
            cell = f"{model:.3f} vs {expected:.3f} ({'yes' if entry[name]['beaten'] else '**NO**'})"
            assert cell in text
        fold_report = (cv_report / f"fold-{fold}" / "report.md").read_text()
        assert "## The trivial baseline" in fold_report
    pooled = json.loads((cv_report / "pooled" / "metrics.json").read_text())
    assert "baseline" not in pooled  # pooled test images are the other folds' training images
