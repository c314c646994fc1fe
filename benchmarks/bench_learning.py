"""Does the training stack learn real findings on this CPU? Train from scratch on a patient split of the
NIH images available, for a fixed wall-clock budget, then evaluate val and test beside the trivial
baseline (each class's median training box on every film, scored by the class frequency).

    .venv/bin/python benchmarks/bench_learning.py --data DIR                 # 45 minutes of training
    .venv/bin/python benchmarks/bench_learning.py --data DIR --minutes 3     # a smoke run

DIR holds NIH's BBox_List_2017.csv, a Data_Entry_2017 CSV (patient ids), images/ and optionally
unlabeled/ (films without findings, written as negatives). Steps:

1. records: generate_tfrecords, split by patient (--split, --seed), images stored at --max-size;
2. a short calibration run measures this machine's steps per second, and the budget becomes a step
   count, so that the cosine learning-rate schedule ends where the budget does;
3. training from scratch (chestdet.training.train) with the `--preset` overrides
   (chestdet.training.pipeline_config.PRESETS), with the OD API's evaluation of val beside it:
   best.json keeps the best val mAP@0.5;
4. export of that checkpoint (chestdet.export), detection on the val and test films (the detect
   command, which has no library entry yet), and evaluation of each split (chestdet.evaluation) with
   the baseline from the train rows' boxes.

Printed: per-class AP@0.5 beside the baseline's, on val and test; the training curve (loss, and val
mAP@0.5 at each evaluation); and the goal: Cardiomegaly AP@0.5 on test at least 2x the baseline's and
overall AP@0.5 above the baseline's. The run's folders stay in --output-dir.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

from _common import REPO

CARDIOMEGALY, GOAL_RATIO = "Cardiomegaly", 2.0
MAP50 = "DetectionBoxes_Precision/mAP@.50IOU"
LOSS = "Loss/total_loss"
CALIBRATION_STEPS = 300  # three 100-step chunks; the first (tracing) is left out
EVAL_SHARE = 0.85  # of the budget left to training steps: the evaluation beside it, start-up, saving


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_data = os.environ.get("CHESTDET_NIH_DIR")
    parser.add_argument("--data", type=Path, default=default_data, required=default_data is None,
                        help="NIH folder: BBox_List_2017.csv, Data_Entry_2017*.csv, images/, unlabeled/ "
                        "(default: $CHESTDET_NIH_DIR)")
    parser.add_argument("--minutes", type=float, default=45.0, help="training budget, wall clock (default 45)")
    parser.add_argument("--output-dir", type=Path, default=REPO / "workspace" / "bench-learning",
                        help="where records, run, export, detections and reports go (emptied first)")
    parser.add_argument("--preset", default="cpu-from-scratch", help="named config overrides (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="training batch (default 8)")
    parser.add_argument("--split", default="0.7,0.15,0.15", help="train,val,test fractions by patient")
    parser.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    parser.add_argument("--max-size", type=int, default=320, help="records store images this large (default 320)")
    return parser


def run_command(main, argv: list[str]) -> None:  # noqa: ANN001 - a command's main(argv) -> int
    status = main(argv)
    if status != 0:
        sys.exit(f"{main.__module__} {' '.join(argv)} failed with exit status {status}")


def data_entry(data: Path) -> Path:
    found = sorted(data.glob("Data_Entry_2017*.csv"))
    if not found:
        sys.exit(f"{data}: no Data_Entry_2017*.csv (patient ids for the split)")
    return found[0]


def make_records(args: argparse.Namespace, records: Path) -> None:
    from chestdet.commands import generate_tfrecords

    argv = ["--nih-csv", str(args.data / "BBox_List_2017.csv"), "--image-dir", str(args.data / "images"),
            "--data-entry", str(data_entry(args.data)), "--output-dir", str(records), "--split", args.split,
            "--seed", str(args.seed), "--max-size", str(args.max_size)]
    if (args.data / "unlabeled").is_dir():
        argv += ["--unlabeled-dir", str(args.data / "unlabeled")]
    run_command(generate_tfrecords.main, argv)


def train_options(args: argparse.Namespace, records: Path, run: Path, steps: int, every: int,
                  evaluate: bool):  # noqa: ANN201 - a TrainOptions
    """From scratch, with the preset's overrides (the library's TrainOptions)."""
    from chestdet.training.pipeline_config import preset_overrides
    from chestdet.training.train import TrainOptions

    return TrainOptions(records=records, model_dir=run, steps=steps, batch_size=args.batch_size, checkpoint_every=every,
                        from_scratch=True, overrides=preset_overrides(args.preset), evaluate=evaluate,
                        eval_interval=30, progress=False)


def calibrate(args: argparse.Namespace, records: Path, folder: Path) -> float:
    """Steps per second of this machine for this preset and batch, from train_loop's own chunk timings."""
    from chestdet.training.checkpoints import read_scalars
    from chestdet.training.train import train

    train(train_options(args, records, folder, CALIBRATION_STEPS, CALIBRATION_STEPS, evaluate=False))
    rates = read_scalars(folder / "train").get("steps_per_sec", {})
    later = [rate for step, rate in sorted(rates.items())][1:] or list(rates.values())
    if not later:
        sys.exit(f"{folder}: training wrote no steps_per_sec")
    return statistics.median(later)


def plan(minutes: float, rate: float) -> tuple[int, int]:
    """Steps that fill the budget (whole hundreds) and a checkpoint, hence a val evaluation, about every
    eighth of them."""
    steps = max(200, int(minutes * 60 * rate * EVAL_SHARE) // 100 * 100)
    every = max(100, steps // 8 // 100 * 100)
    return steps // every * every, every


def train_for_budget(args: argparse.Namespace, records: Path, out: Path) -> tuple[Path, dict]:
    from chestdet.training.train import train

    started = time.monotonic()
    rate = calibrate(args, records, out / "calibration")
    steps, every = plan(args.minutes, rate)
    calibration = time.monotonic() - started
    print(f"calibration: {rate:.2f} steps/s at batch {args.batch_size} ({calibration:.0f} s); budget "
          f"{args.minutes:g} min -> {steps} steps, val evaluated every {every}", flush=True)
    run = out / "run"
    started = time.monotonic()
    train(train_options(args, records, run, steps, every, evaluate=True))
    return run, {"rate": rate, "steps": steps, "every": every, "train_seconds": time.monotonic() - started}


def export_and_detect(args: argparse.Namespace, run: Path, out: Path) -> Path:
    """The best val checkpoint (else the last) exported, and detection on every val and test film."""
    from chestdet.commands import detect
    from chestdet.data.split import TEST, VAL, read_split
    from chestdet.export.options import ExportOptions, export

    best = run / "best.json"
    export(ExportOptions(checkpoint=best if best.is_file() else run, output_dir=out / "export", tflite=False))
    held_out = [row.image for row in read_split(out / "records" / "split.csv") if row.split in (VAL, TEST)]
    folders = [args.data / "images", args.data / "unlabeled"]
    paths = [str(folder / name) for name in held_out for folder in folders if (folder / name).is_file()]
    (out / "held_out.txt").write_text("".join(f"{path}\n" for path in paths), encoding="utf-8")
    run_command(detect.main, ["--model", str(out / "export"), "--input", str(out / "held_out.txt"),
                              "--output-dir", str(out / "detections"), "--backend", "savedmodel"])
    return out / "detections"


def evaluate_splits(args: argparse.Namespace, detections: Path, out: Path) -> dict:
    from chestdet.data.split import TEST, VAL
    from chestdet.evaluation.evaluate import ReportOptions, run_evaluation

    return {split: run_evaluation(detections, args.data / "BBox_List_2017.csv", out / f"evaluation-{split}",
                                  out / "records" / "split.csv", split, options=ReportOptions(gallery=0))
            for split in (VAL, TEST)}


def ap_table(runs: dict) -> list[str]:
    from chestdet.core.labels import CLASS_NAMES

    def cell(value: float | None) -> str:
        return "–" if value is None else f"{value:.3f}"

    lines = ["| class | " + " | ".join(f"{split} boxes | {split} AP@0.5 | {split} baseline" for split in runs) + " |",
             "| --- |" + " ---: |" * (3 * len(runs))]
    for name in [*CLASS_NAMES, "all"]:
        cells = []
        for run in runs.values():
            ours = run.metrics.coco.overall if name == "all" else run.metrics.coco.per_class[name]
            theirs = (run.baseline.metrics.coco.overall if name == "all"
                      else run.baseline.metrics.coco.per_class[name]) if run.baseline else None
            boxes = sum(run.metrics.boxes.values()) if name == "all" else run.metrics.boxes[name]
            cells += [str(boxes), cell(ours.ap50), cell(theirs.ap50 if theirs else None)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def curve_table(run: Path) -> list[str]:
    """Loss (train_loop's, at the last chunk up to each evaluation) and val mAP@0.5, per evaluated step."""
    from chestdet.training.checkpoints import eval_metrics, read_scalars

    losses = read_scalars(run / "train").get(LOSS, {})
    lines = ["| step | loss | val mAP@0.5 |", "| ---: | ---: | ---: |"]
    for step, metrics in eval_metrics(run).items():
        before = [loss for at, loss in sorted(losses.items()) if at <= step]
        lines.append(f"| {step} | {before[-1]:.3f} | {metrics[MAP50]:.3f} |" if before else
                     f"| {step} | – | {metrics[MAP50]:.3f} |")
    return lines


def goal_lines(test) -> list[str]:  # noqa: ANN001 - an EvaluationRun
    ours, theirs = test.metrics.coco, test.baseline.metrics.coco
    cardio, base = ours.per_class[CARDIOMEGALY].ap50, theirs.per_class[CARDIOMEGALY].ap50
    ratio = cardio / base if cardio is not None and base else float("nan")
    first = cardio is not None and base is not None and cardio >= GOAL_RATIO * base
    second = ours.overall.ap50 is not None and ours.overall.ap50 > (theirs.overall.ap50 or 0.0)
    return [f"goal, Cardiomegaly test AP@0.5 >= {GOAL_RATIO:g}x baseline: {cardio:.3f} vs {base:.3f} "
            f"({ratio:.2f}x) -> {'met' if first else 'NOT met'}",
            f"goal, overall test AP@0.5 above baseline: {ours.overall.ap50:.3f} vs {theirs.overall.ap50:.3f} -> "
            f"{'met' if second else 'NOT met'}"]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = args.output_dir
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    started = time.monotonic()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; data {args.data}", flush=True)
    make_records(args, out / "records")
    run, timing = train_for_budget(args, out / "records", out)
    runs = evaluate_splits(args, export_and_detect(args, run, out), out)
    print(f"\ntrained {timing['steps']} steps in {timing['train_seconds'] / 60:.1f} min (with the val evaluation "
          f"beside it); whole benchmark {(time.monotonic() - started) / 60:.1f} min\n")
    print("\n".join(["Training curve", "", *curve_table(run), "", "AP@0.5 beside the trivial baseline", "",
                     *ap_table(runs), "", *goal_lines(runs["test"])]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
