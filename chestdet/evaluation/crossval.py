"""Cross-validated training over generate_tfrecords --folds records: per fold, train (with its val
evaluation), export the best checkpoint, and detect on the fold's test images.

Training and export are the library's (chestdet.training.train.train, chestdet.export.options.export),
called with the typed options a single run takes, so cross-validation trains and exports exactly as
the single commands do; detection is the caller's (`Steps.detect`). Re-running resumes: a finished
fold is skipped, and an interrupted one continues where its step stopped (training from its last
checkpoint, detection from its journal).

    RUNS/crossval.json        the folds folder, the train options, each fold's finished steps
    RUNS/folds.csv            a copy of the folds folder's folds.csv
    RUNS/fold-k/run/          the fold's training run folder (best/, best.json, eval/, ...)
    RUNS/fold-k/export/       its exported best checkpoint
    RUNS/fold-k/detections/   detect on the fold's test images (detections.csv, images.csv, ...)
    RUNS/fold-k/split.csv     a copy of the fold's split.csv (image, patient, split, boxes)
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import json
import logging
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chestdet.core import atomic
from chestdet.core.contracts import (
    BEST_RECORD,
    CROSSVAL_JSON,
    CV_DETECTIONS_DIR,
    CV_EXPORT_DIR,
    CV_RUN_DIR,
    EXPORT_RECORD,
    FOLD_DIR,
    FOLD_TEST_LIST,
    FOLDS_CSV,
    IMAGES_CSV,
    SPLIT_CSV,
)
from chestdet.core.errors import ChestdetError
from chestdet.core.shell import command
from chestdet.data.records import shard_glob
from chestdet.export.options import ExportOptions, export
from chestdet.training.train import TrainOptions, train

log = logging.getLogger("chestdet.evaluation.crossval")

DETECTIONS_DIR = CV_DETECTIONS_DIR  # the name chestdet.evaluation.cv_evaluation imports
STEPS = ("trained", "exported", "detected")
# Train options that cross-validation sets for every fold itself: {field: the train.sh flag}
OWN_TRAIN_OPTIONS = {"records": "--records", "model_dir": "--model-dir", "name": "--name"}

_FOLD_NAME = re.compile(r"^fold-(\d+)$")


class CrossvalError(ChestdetError):
    """Cross-validation cannot start or a fold's step failed."""


# (export folder, the file listing the fold's test images, output folder, detect options): detect with
# --resume into the output folder; raises a ChestdetError when it fails.
DetectFold = Callable[[Path, Path, Path, tuple[str, ...]], None]


@dataclass(frozen=True)
class Steps:
    """What one fold runs: the library's training and export, and the caller's detection."""

    detect: DetectFold
    train: Callable[[TrainOptions], Any] = train
    export: Callable[[ExportOptions], Path] = export


@dataclass(frozen=True)
class CrossvalOptions:
    folds_dir: Path  # generate_tfrecords --folds output: folds.csv and fold-k/
    runs_dir: Path
    train: TrainOptions = field(default_factory=TrainOptions)  # for every fold (steps, config, overrides, ...)
    tflite: bool = False  # export model.tflite too (detect then picks its backend as usual)
    detect_args: tuple[str, ...] = ()  # detect options for every fold


def fold_count(folds_dir: Path) -> int:
    """K of a folds folder: the highest fold in its folds.csv, each of 1..K with its fold-k/ records."""
    path = folds_dir / FOLDS_CSV
    if not path.is_file():
        raise CrossvalError(f"{path}: not found; make the folds with {command('generate_tfrecords')} --folds K")
    with path.open(newline="", encoding="utf-8") as handle:
        folds = {int(row["fold"]) for row in csv.DictReader(handle)}
    if not folds:
        raise CrossvalError(f"{path}: lists no image")
    count = max(folds)
    for fold in range(1, count + 1):
        folder = folds_dir / FOLD_DIR.format(fold=fold)
        if not (folder / FOLD_TEST_LIST).is_file():
            raise CrossvalError(f"{folder / FOLD_TEST_LIST}: not found; the folds folder is incomplete")
        if not glob.glob(shard_glob(folder, "val")):
            raise CrossvalError(f"{folder}: no val-* records, and each fold's training is evaluated on its val "
                                "part (make the folds with a --split whose val fraction is above 0)")
    return count


def check_train_options(options: TrainOptions) -> None:
    for name, flag in OWN_TRAIN_OPTIONS.items():
        if getattr(options, name) is not None:
            raise CrossvalError(f"{flag}: cross-validation sets it for each fold (use --runs-dir / --name for "
                                "where the folds' runs go)")


def run_crossval(options: CrossvalOptions, steps: Steps) -> dict:
    """Train, export and detect every fold not finished yet; returns crossval.json's content."""
    check_train_options(options.train)
    folds = fold_count(options.folds_dir)
    state = _start_state(options, folds)
    shutil.copyfile(options.folds_dir / FOLDS_CSV, options.runs_dir / FOLDS_CSV)
    for fold in range(1, folds + 1):
        run_fold(options, steps, state, fold)
    log.info("cross-validation: all %d folds done in %s; evaluate them with: %s --cv %s --output-dir EVAL", folds,
             options.runs_dir, command("evaluate"), options.runs_dir)
    return state


def train_settings(options: TrainOptions) -> dict:
    """The train options that differ from the defaults, as crossval.json records them (JSON values, paths as text)."""
    defaults = dataclasses.asdict(TrainOptions())
    given = {key: value for key, value in dataclasses.asdict(options).items() if value != defaults[key]}
    return json.loads(json.dumps(given, default=str))


def _start_state(options: CrossvalOptions, folds: int) -> dict:
    """crossval.json as an earlier run left it, or new; a different folds folder or train options is refused."""
    path = options.runs_dir / CROSSVAL_JSON
    wanted = {"folds_dir": str(options.folds_dir.resolve()), "folds": folds,
              "train": train_settings(options.train), "tflite": options.tflite,
              "detect_args": list(options.detect_args)}
    if path.is_file():
        state = json.loads(path.read_text(encoding="utf-8"))
        changed = [key for key in wanted if state.get(key) != wanted[key]]
        if changed:
            details = "; ".join(f"{key}: {_difference(state.get(key), wanted[key])}" for key in changed)
            raise CrossvalError(f"{options.runs_dir} holds a cross-validation with other settings ({details}); "
                                "choose another --runs-dir")
        return state
    state = {**wanted, "fold_state": {str(fold): [] for fold in range(1, folds + 1)}}
    options.runs_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_json(path, state)
    return state


def _difference(then: Any, now: Any) -> str:
    if isinstance(then, dict) and isinstance(now, dict):
        keys = [key for key in {**then, **now} if then.get(key) != now.get(key)]
        return ", ".join(f"{key} {then.get(key)!r} then, {now.get(key)!r} now" for key in keys)
    return f"{then!r} then, {now!r} now"


def run_fold(options: CrossvalOptions, steps: Steps, state: dict, fold: int) -> None:
    """One fold's train -> export -> detect, each step skipped when crossval.json says it is done."""
    folds = state["folds"]
    done = state["fold_state"][str(fold)]
    folder = options.runs_dir / FOLD_DIR.format(fold=fold)
    if len(done) == len(STEPS) and (folder / CV_DETECTIONS_DIR / IMAGES_CSV).is_file():
        log.info("fold %d/%d: finished earlier, skipped", fold, folds)
        return
    records = options.folds_dir / FOLD_DIR.format(fold=fold)
    run_dir, export_dir = folder / CV_RUN_DIR, folder / CV_EXPORT_DIR
    if "trained" not in done:
        log.info("fold %d/%d: training in %s", fold, folds, run_dir)
        fold_options = dataclasses.replace(options.train, records=records.resolve(), model_dir=run_dir.resolve(),
                                           evaluate=True)
        _step(fold, "training", steps.train, fold_options)
        _mark(options, state, fold, "trained")
    if "exported" not in done:
        if not (export_dir / EXPORT_RECORD).is_file():
            best = run_dir / BEST_RECORD
            checkpoint = best if best.is_file() else run_dir
            log.info("fold %d/%d: exporting %s to %s", fold, folds, checkpoint, export_dir)
            _step(fold, "export", steps.export, ExportOptions(checkpoint=checkpoint.resolve(),
                                                              output_dir=export_dir.resolve(), tflite=options.tflite))
        _mark(options, state, fold, "exported")
    log.info("fold %d/%d: detecting its test images in %s", fold, folds, folder / CV_DETECTIONS_DIR)
    _step(fold, "detection", steps.detect, export_dir.resolve(), (records / FOLD_TEST_LIST).resolve(),
          (folder / CV_DETECTIONS_DIR).resolve(), options.detect_args)
    shutil.copyfile(records / SPLIT_CSV, folder / SPLIT_CSV)
    _mark(options, state, fold, "detected")
    log.info("fold %d/%d: done", fold, folds)


def _step(fold: int, name: str, function: Callable, *args: Any) -> None:
    try:
        function(*args)
    except ChestdetError as error:
        raise CrossvalError(f"fold {fold}: {name} failed: {error}; re-run the same command to resume") from error


def _mark(options: CrossvalOptions, state: dict, fold: int, step: str) -> None:
    done = state["fold_state"][str(fold)]
    if step not in done:
        done.append(step)
    atomic.write_json(options.runs_dir / CROSSVAL_JSON, state)


def fold_dirs(runs_dir: Path) -> list[tuple[int, Path]]:
    """(fold, RUNS/fold-k) of every fold of a cross-validation folder: those crossval.json counts, or,
    in a folder laid out the same way without it, 1 to the highest fold-k/ present."""
    path = runs_dir / CROSSVAL_JSON
    if path.is_file():
        folds = json.loads(path.read_text(encoding="utf-8"))["folds"]
    else:
        found = [int(match.group(1)) for match in (_FOLD_NAME.match(p.name) for p in runs_dir.glob("fold-*"))
                 if match and (runs_dir / match.group(0) / CV_DETECTIONS_DIR).is_dir()]
        if not found:
            raise CrossvalError(f"{runs_dir}: neither {CROSSVAL_JSON} nor fold-k/{CV_DETECTIONS_DIR}/ folders; not a "
                                f"cross-validation folder ({command('crossval')})")
        folds = max(found)
    return [(fold, runs_dir / FOLD_DIR.format(fold=fold)) for fold in range(1, folds + 1)]


def folds_records(runs_dir: Path) -> Path | None:
    """The folds folder a cross-validation trained on (its fold-k/test-* records are the ground truth);
    None when crossval.json does not say."""
    path = runs_dir / CROSSVAL_JSON
    if not path.is_file():
        return None
    return Path(json.loads(path.read_text(encoding="utf-8"))["folds_dir"])
