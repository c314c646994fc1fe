"""Cross-validated training over generate_tfrecords --folds records: per fold, train (with its val
evaluation), export the best checkpoint, and detect on the fold's test images.

The three steps are the train, export and detect commands, called with their command-line
arguments through `Steps` (the command layer passes their `main` functions), so cross-validation
trains, exports and detects exactly as the single commands do. Re-running resumes: a finished fold
is skipped, and an interrupted one continues where its step stopped (training from its last
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
import json
import logging
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from chestdet.core import atomic
from chestdet.core.contracts import (
    BEST_RECORD,
    EXPORT_RECORD,
    FOLD_DIR,
    FOLD_TEST_LIST,
    FOLDS_CSV,
    IMAGES_CSV,
    SPLIT_CSV,
)
from chestdet.core.errors import ChestdetError

log = logging.getLogger("chestdet.evaluation.crossval")

CROSSVAL_JSON = "crossval.json"
RUN_DIR, EXPORT_DIR, DETECTIONS_DIR = "run", "export", "detections"
STEPS = ("trained", "exported", "detected")
# train.sh options that cross-validation sets for every fold itself
OWN_TRAIN_FLAGS = ("--records", "--model-dir", "--name")

Command = Callable[[list[str]], int]
_FOLD_NAME = re.compile(r"^fold-(\d+)$")


class CrossvalError(ChestdetError):
    """Cross-validation cannot start or a fold's step failed."""


@dataclass(frozen=True)
class Steps:
    """The commands one fold runs, each taking its command-line arguments and returning its exit status."""

    train: Command
    export: Command
    detect: Command


@dataclass(frozen=True)
class CrossvalOptions:
    folds_dir: Path  # generate_tfrecords --folds output: folds.csv and fold-k/
    runs_dir: Path
    train_args: tuple[str, ...] = ()  # train.sh options for every fold (steps, config, --set, ...)
    tflite: bool = False  # export model.tflite too (detect then picks its backend as usual)
    detect_args: tuple[str, ...] = ()


def fold_count(folds_dir: Path) -> int:
    """K of a folds folder: the highest fold in its folds.csv, each of 1..K with its fold-k/ records."""
    path = folds_dir / FOLDS_CSV
    if not path.is_file():
        raise CrossvalError(f"{path}: not found; make the folds with generate_tfrecords.py --folds K")
    with path.open(newline="", encoding="utf-8") as handle:
        folds = {int(row["fold"]) for row in csv.DictReader(handle)}
    if not folds:
        raise CrossvalError(f"{path}: lists no image")
    count = max(folds)
    for fold in range(1, count + 1):
        folder = folds_dir / FOLD_DIR.format(fold=fold)
        if not (folder / FOLD_TEST_LIST).is_file():
            raise CrossvalError(f"{folder / FOLD_TEST_LIST}: not found; the folds folder is incomplete")
        if not any(folder.glob("val-*.tfrecord")):
            raise CrossvalError(f"{folder}: no val-* records, and each fold's training is evaluated on its val "
                                "part (make the folds with a --split whose val fraction is above 0)")
    return count


def check_train_args(train_args: Sequence[str]) -> None:
    for arg in train_args:
        flag = arg.split("=", 1)[0]
        if flag in OWN_TRAIN_FLAGS:
            raise CrossvalError(f"{flag}: cross-validation sets it for each fold (use --runs-dir / --name for "
                                "where the folds' runs go)")


def run_crossval(options: CrossvalOptions, steps: Steps) -> dict:
    """Train, export and detect every fold not finished yet; returns crossval.json's content."""
    check_train_args(options.train_args)
    folds = fold_count(options.folds_dir)
    state = _start_state(options, folds)
    shutil.copyfile(options.folds_dir / FOLDS_CSV, options.runs_dir / FOLDS_CSV)
    for fold in range(1, folds + 1):
        run_fold(options, steps, state, fold)
    log.info("cross-validation: all %d folds done in %s; evaluate them with: python scripts/evaluate.py "
             "--cv %s --output-dir EVAL", folds, options.runs_dir, options.runs_dir)
    return state


def _start_state(options: CrossvalOptions, folds: int) -> dict:
    """crossval.json as an earlier run left it, or new; a different folds folder or train options is refused."""
    path = options.runs_dir / CROSSVAL_JSON
    wanted = {"folds_dir": str(options.folds_dir.resolve()), "folds": folds,
              "train_args": list(options.train_args), "tflite": options.tflite,
              "detect_args": list(options.detect_args)}
    if path.is_file():
        state = json.loads(path.read_text(encoding="utf-8"))
        changed = [key for key in wanted if state.get(key) != wanted[key]]
        if changed:
            details = "; ".join(f"{key}: {state.get(key)!r} then, {wanted[key]!r} now" for key in changed)
            raise CrossvalError(f"{options.runs_dir} holds a cross-validation with other settings ({details}); "
                                "choose another --runs-dir")
        return state
    state = {**wanted, "fold_state": {str(fold): [] for fold in range(1, folds + 1)}}
    options.runs_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_json(path, state)
    return state


def run_fold(options: CrossvalOptions, steps: Steps, state: dict, fold: int) -> None:
    """One fold's train -> export -> detect, each step skipped when crossval.json says it is done."""
    folds = state["folds"]
    done = state["fold_state"][str(fold)]
    folder = options.runs_dir / FOLD_DIR.format(fold=fold)
    if len(done) == len(STEPS) and (folder / DETECTIONS_DIR / IMAGES_CSV).is_file():
        log.info("fold %d/%d: finished earlier, skipped", fold, folds)
        return
    records = options.folds_dir / FOLD_DIR.format(fold=fold)
    run_dir, export_dir = folder / RUN_DIR, folder / EXPORT_DIR
    if "trained" not in done:
        log.info("fold %d/%d: training in %s", fold, folds, run_dir)
        _check(steps.train(["--records", str(records.resolve()), "--model-dir", str(run_dir.resolve()), "--eval",
                            *options.train_args]), fold, "training")
        _mark(options, state, fold, "trained")
    if "exported" not in done:
        if not (export_dir / EXPORT_RECORD).is_file():
            best = run_dir / BEST_RECORD
            checkpoint = best if best.is_file() else run_dir
            log.info("fold %d/%d: exporting %s to %s", fold, folds, checkpoint, export_dir)
            _check(steps.export(["--checkpoint", str(checkpoint.resolve()), "--output-dir", str(export_dir.resolve()),
                                 *([] if options.tflite else ["--no-tflite"])]), fold, "export")
        _mark(options, state, fold, "exported")
    log.info("fold %d/%d: detecting its test images in %s", fold, folds, folder / DETECTIONS_DIR)
    _check(steps.detect(["--model", str(export_dir.resolve()), "--input", str((records / FOLD_TEST_LIST).resolve()),
                         "--output-dir", str((folder / DETECTIONS_DIR).resolve()), "--resume",
                         *options.detect_args]), fold, "detection")
    shutil.copyfile(records / SPLIT_CSV, folder / SPLIT_CSV)
    _mark(options, state, fold, "detected")
    log.info("fold %d/%d: done", fold, folds)


def _check(status: int, fold: int, step: str) -> None:
    if status != 0:
        raise CrossvalError(f"fold {fold}: {step} failed (exit status {status}); re-run the same command to resume")


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
                 if match and (runs_dir / match.group(0) / DETECTIONS_DIR).is_dir()]
        if not found:
            raise CrossvalError(f"{runs_dir}: neither {CROSSVAL_JSON} nor fold-k/{DETECTIONS_DIR}/ folders; not a "
                                "cross-validation folder (scripts/crossval.sh)")
        folds = max(found)
    return [(fold, runs_dir / FOLD_DIR.format(fold=fold)) for fold in range(1, folds + 1)]


def folds_records(runs_dir: Path) -> Path | None:
    """The folds folder a cross-validation trained on (its fold-k/test-* records are the ground truth);
    None when crossval.json does not say."""
    path = runs_dir / CROSSVAL_JSON
    if not path.is_file():
        return None
    return Path(json.loads(path.read_text(encoding="utf-8"))["folds_dir"])
