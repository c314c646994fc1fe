"""Evaluate a cross-validation: each fold's test detections on their own, mean ± sd across folds,
and all test folds pooled into one evaluation; a report that shows the three side by side.

Each fold and the pooled set go through `evaluate.run_evaluation`, so every figure is computed as
for a single split. The folds are those of a `scripts/crossval.sh` folder (RUNS/fold-k/detections/
and RUNS/fold-k/split.csv); their ground truth is, unless given, the test records of the folds folder
the cross-validation trained on.

    OUT/metrics.json           {"sources": ..., "cross_validation": {"folds", "per_fold", "mean", "sd", "pooled"}}
    OUT/report.md, report.html the figures side by side, with links to the full reports below
    OUT/fold-k/                run_evaluation's outputs for fold k
    OUT/pooled/                run_evaluation's outputs for every test fold together, and its inputs
                               (detections/detections.csv, detections/images.csv, split.csv)
"""

from __future__ import annotations

import logging
import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from chestdet.core import atomic
from chestdet.core.contracts import (
    CV_DETECTIONS_DIR,
    CV_POOLED_DIR,
    DETECTIONS_CSV,
    FOLD_DIR,
    METRICS_JSON,
    REPORT_HTML,
    REPORT_MD,
    SPLIT_CSV,
)
from chestdet.core.errors import EvaluationError
from chestdet.core.labels import LabelMap
from chestdet.data.records import shard_glob
from chestdet.data.split import TEST, read_split, write_split
from chestdet.detection.tables import read_detections_folder, write_detections_folder
from chestdet.evaluation.crossval import fold_dirs, folds_records
from chestdet.evaluation.evaluate import EvaluationRun, ReportOptions, run_evaluation
from chestdet.evaluation.ground_truth import ground_truth_labels
from chestdet.evaluation.metrics import EvaluationSettings, Metrics, write_metrics_json
from chestdet.evaluation.report import render_html
from chestdet.evaluation.report_tables import markdown_table, number, verdict

log = logging.getLogger("chestdet.evaluation.evaluate")

OVERALL = "all"
# (key, heading): the figures compared across folds, per class and overall
MEASURES = (
    ("ap", "AP@[.5:.95]"), ("ap50", "AP@0.5"), ("ap25", "AP@0.25"), ("froc", "FROC score"),
    ("sensitivity_at_1fp", "sensitivity at 1 FP/image"), ("image_sensitivity", "image-level sensitivity"),
    ("image_specificity", "image-level specificity"),
)
CV_OUTPUT_FILES = (METRICS_JSON, REPORT_MD, REPORT_HTML)


@dataclass
class CrossvalEvaluation:
    folds: dict[int, EvaluationRun]
    pooled: EvaluationRun
    summary: dict  # metrics.json's cross_validation block
    output_dir: Path


def figures(metrics: Metrics) -> dict[str, dict[str, float | None]]:
    """The compared figures of one evaluation: {class or "all": {measure: value}} (None: undefined)."""
    rates = list(metrics.froc.fp_rates)
    one_fp = rates.index(1.0) if 1.0 in rates else None

    def row(ap: object, curve: object, level: object | None) -> dict[str, float | None]:
        return {
            "ap": ap.ap, "ap50": ap.ap50, "ap25": ap.ap25, "froc": curve.score,
            "sensitivity_at_1fp": curve.at_rates[one_fp] if one_fp is not None else None,
            "image_sensitivity": level.sensitivity if level is not None else None,
            "image_specificity": level.specificity if level is not None else None,
        }

    table = {name: row(metrics.coco.per_class[name], metrics.froc.per_class[name], metrics.image_level[name])
             for name in metrics.settings.classes}
    table[OVERALL] = row(metrics.coco.overall, metrics.froc.overall, None)
    return {name: {key: _defined(value) for key, value in values.items()} for name, values in table.items()}


def baseline_figures(run: EvaluationRun) -> dict[str, dict] | None:
    """A fold's trivial baseline: {class or "all": {"ap50": its AP@0.5, "beaten": the model's is above it}}."""
    if run.baseline is None:
        return None
    beaten = run.baseline.beaten(run.metrics)
    classes = run.metrics.settings.classes
    scores = {name: run.baseline.metrics.coco.per_class[name].ap50 for name in classes}
    scores[OVERALL] = run.baseline.metrics.coco.overall.ap50
    return {name: {"ap50": _defined(scores[name]), "beaten": beaten[name]} for name in [*classes, OVERALL]}


def _defined(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def across_folds(per_fold: Sequence[dict[str, dict[str, float | None]]]) -> tuple[dict, dict]:
    """Mean and sample standard deviation of each figure over the folds that define it (sd: None below 2)."""
    mean: dict[str, dict] = {}
    sd: dict[str, dict] = {}
    for name in per_fold[0]:
        mean[name], sd[name] = {}, {}
        for key in per_fold[0][name]:
            values = [fold[name][key] for fold in per_fold if fold[name][key] is not None]
            mean[name][key] = statistics.fmean(values) if values else None
            sd[name][key] = statistics.stdev(values) if len(values) >= 2 else None
    return mean, sd


def evaluate_crossval(
    runs_dir: Path, output_dir: Path, ground_truth: str | None = None, settings: EvaluationSettings | None = None,
    options: ReportOptions | None = None, labels: LabelMap | None = None,
) -> CrossvalEvaluation:
    """Evaluate every fold of `runs_dir` that has detections, then all of them pooled, and write the report;
    the classes are those of `labels`, by default the folds' records' own map, else the shipped one."""
    options = options or ReportOptions()
    every = fold_dirs(runs_dir)
    folds = [(fold, folder) for fold, folder in every if (folder / CV_DETECTIONS_DIR / DETECTIONS_CSV).is_file()]
    missing = [fold for fold, _ in every if fold not in dict(folds)]
    if missing:
        log.warning("folds %s have no detections yet and are left out", ", ".join(map(str, missing)))
    if not folds:
        raise EvaluationError(f"{runs_dir}: no fold has detections yet (run scripts/crossval.sh to the end)")
    records = None if ground_truth is not None else folds_records(runs_dir)
    if ground_truth is None and records is None:
        raise EvaluationError(f"{runs_dir}: no crossval.json names the folds' records; pass --ground-truth")
    runs: dict[int, EvaluationRun] = {}
    fold_options = replace(options, gallery=0)  # the pooled report holds the gallery
    for fold, folder in folds:
        log.info("fold %d of %d: evaluating %s", fold, len(folds), folder / CV_DETECTIONS_DIR)
        truth = ground_truth if ground_truth is not None else str(records / FOLD_DIR.format(fold=fold))
        labels = ground_truth_labels(truth, labels)
        runs[fold] = run_evaluation(folder / CV_DETECTIONS_DIR, truth, output_dir / FOLD_DIR.format(fold=fold),
                                    folder / SPLIT_CSV, TEST, settings, options=fold_options, labels=labels)
    pooled_dir = output_dir / CV_POOLED_DIR
    pool_inputs([folder for _, folder in folds], pooled_dir)
    truth = ground_truth if ground_truth is not None else shard_glob(records / FOLD_DIR.format(fold="*"), TEST)
    log.info("pooled: evaluating the %d folds' test images together", len(folds))
    # the pooled images are every fold's test images, each a training image of the other folds: no baseline
    pooled = run_evaluation(pooled_dir / CV_DETECTIONS_DIR, truth, pooled_dir, pooled_dir / SPLIT_CSV, TEST,
                            settings, options=replace(options, baseline=False), labels=labels)
    summary = crossval_block(runs, pooled, missing)
    sources = {"cross-validation": str(runs_dir), "ground truth": ground_truth or f"test records of {records}"}
    write_metrics_json(output_dir / METRICS_JSON, {"sources": sources, "cross_validation": summary})
    write_cv_reports(summary, output_dir, sources)
    return CrossvalEvaluation(runs, pooled, summary, output_dir)


def crossval_block(runs: dict[int, EvaluationRun], pooled: EvaluationRun, missing: Sequence[int] = ()) -> dict:
    """metrics.json's cross_validation: per fold, mean and sd across folds, and pooled figures."""
    per_fold = [figures(run.metrics) for run in runs.values()]
    mean, sd = across_folds(per_fold)
    return {
        "folds": list(runs),
        "missing_folds": list(missing),
        "per_fold": [
            {"fold": fold, "images": run.metrics.images, "boxes": sum(run.metrics.boxes.values()), **table,
             "baseline": baseline_figures(run)}
            for (fold, run), table in zip(runs.items(), per_fold, strict=True)
        ],
        "mean": mean,
        "sd": sd,
        "pooled": {"images": pooled.metrics.images, "boxes": sum(pooled.metrics.boxes.values()),
                   **figures(pooled.metrics)},
    }


def pool_inputs(fold_folders: Sequence[Path], pooled_dir: Path) -> None:
    """The folds' detections.csv, images.csv (paths made absolute) and test rows of split.csv, concatenated."""
    detections, images, splits = [], [], []
    for folder in fold_folders:
        found = read_detections_folder(folder / CV_DETECTIONS_DIR)
        detections.append(found.detections)
        if found.images is not None:
            frame = found.images
            if "path" in frame.columns:
                frame["path"] = [_absolute(path, found.detections_path.parent) for path in frame["path"]]
            images.append(frame)
        splits += [row for row in read_split(folder / SPLIT_CSV) if row.split == TEST]
    write_detections_folder(pooled_dir / CV_DETECTIONS_DIR, pd.concat(detections, ignore_index=True),
                            pd.concat(images, ignore_index=True) if len(images) == len(fold_folders) else None)
    write_split(pooled_dir / SPLIT_CSV, splits)


def _absolute(path: str, folder: Path) -> str:
    """images.csv's path as written if it exists, else relative to its detections folder."""
    if not path or os.path.isabs(path) or Path(path).exists() or not (folder / path).exists():
        return path
    return str((folder / path).absolute())


# ---------------------------------------------------------------------------------------------
# Report


def summary_classes(summary: dict) -> list[str]:
    """The evaluated classes of a cross_validation block, in the label map's order."""
    return [name for name in summary["mean"] if name != OVERALL]


def mean_sd(mean: float | None, sd: float | None) -> str:
    """`0.42 ± 0.05` (`–` where undefined)."""
    if mean is None:
        return "–"
    return f"{number(mean)} ± {number(sd)}"


def measure_table(summary: dict, rows: Sequence[str], key: str) -> tuple[list[str], list[list[str]]]:
    """One measure: a row per class (or "all"), a column per fold, then mean ± sd and pooled."""
    header = ["class", *(f"fold {fold['fold']}" for fold in summary["per_fold"]), "mean ± sd", "pooled"]
    table = [
        [name, *(number(fold[name][key]) for fold in summary["per_fold"]),
         mean_sd(summary["mean"][name][key], summary["sd"][name][key]), number(summary["pooled"][name][key])]
        for name in rows
    ]
    return header, table


def overall_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """The overall figures: a row per measure, a column per fold, then mean ± sd and pooled."""
    folds = summary["per_fold"]
    header = ["", *(f"fold {fold['fold']}" for fold in folds), "mean ± sd", "pooled"]
    rows = [[label, *(str(fold[label]) for fold in folds), "", str(summary["pooled"][label])]
            for label in ("images", "boxes")]
    for key, heading in MEASURES[:5]:
        rows.append([heading, *(number(fold[OVERALL][key]) for fold in folds),
                     mean_sd(summary["mean"][OVERALL][key], summary["sd"][OVERALL][key]),
                     number(summary["pooled"][OVERALL][key])])
    return header, rows


def baseline_section(summary: dict) -> list[str]:
    """Per fold, each class's AP@0.5 beside its trivial baseline's, and the classes that do not beat it."""
    folds = [fold for fold in summary["per_fold"] if fold.get("baseline")]
    if not folds:
        return []
    header = ["class", *(f"fold {fold['fold']}: model vs baseline" for fold in folds)]
    rows = [[name, *(f"{number(fold[name]['ap50'])} vs {number(fold['baseline'][name]['ap50'])} "
                     f"({verdict(fold['baseline'][name]['beaten'])})" for fold in folds)]
            for name in [*summary_classes(summary), OVERALL]]
    lines = []
    for fold in folds:
        behind = [name for name, row in fold["baseline"].items() if row["beaten"] is False]
        lines.append(f"- fold {fold['fold']}: " + (f"**not better than the baseline: {', '.join(behind)}**"
                                                   if behind else "every class with boxes beats the baseline"))
    return [
        "## Against the trivial baseline (AP@0.5), per fold", "",
        "Each fold's baseline places each class's median box over that fold's training images on every test "
        "image, scored by the class frequency (see the fold's full report).", "",
        markdown_table(header, rows), "", *lines, "",
    ]


def render_cv_markdown(summary: dict, sources: dict[str, str]) -> str:
    folds = summary["folds"]
    parts = ["# Cross-validation evaluation", ""]
    parts += [f"- {name}: {value}" for name, value in sources.items()]
    parts += [f"- folds evaluated: {', '.join(map(str, folds))}", ""]
    if summary["missing_folds"]:
        parts += [f"Folds {', '.join(map(str, summary['missing_folds']))} have no detections and are left out.", ""]
    parts += [
        "Each fold's test images are evaluated on their own (fold k); mean ± sd summarises the folds (the sample "
        "standard deviation, over the folds where a figure is defined); pooled evaluates the test images of "
        "every fold together, as one set.", "",
        "## Overall", "", markdown_table(*overall_table(summary)), "",
    ]
    for key, heading in MEASURES:
        classes = summary_classes(summary)
        rows = [*classes, OVERALL] if key in ("ap", "ap50", "ap25", "froc", "sensitivity_at_1fp") else classes
        parts += [f"## {heading}", "", markdown_table(*measure_table(summary, rows, key)), ""]
    parts += baseline_section(summary)
    parts += ["## Full reports", ""]
    parts += [f"- [fold {fold}]({FOLD_DIR.format(fold=fold)}/{REPORT_MD})" for fold in folds]
    parts += [f"- [pooled]({CV_POOLED_DIR}/{REPORT_MD}) (with the error gallery)", ""]
    return "\n".join(parts)


def write_cv_reports(summary: dict, output_dir: Path, sources: dict[str, str]) -> list[Path]:
    text = render_cv_markdown(summary, sources)
    atomic.write_text(output_dir / REPORT_MD, text)
    atomic.write_text(output_dir / REPORT_HTML,
                      render_html(text.replace(f"/{REPORT_MD})", f"/{REPORT_HTML})"), "Cross-validation evaluation"))
    return [output_dir / REPORT_MD, output_dir / REPORT_HTML]
