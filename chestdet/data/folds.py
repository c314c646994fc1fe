"""k-fold cross-validation records: folds by patient, every image prepared once, each fold's shards.

Each image is read, checked and serialised once, by the records writer, into a staging shard of its
fold; the staged Examples are then copied, as they are, into every fold's `train-*`, `val-*` and
`test-*` shards (an image is in the test part of its own fold and in the train or val part of every
other fold). Copying a record costs far less than preparing it again.

    plan = plan_folds(inputs, folds=5, val_share=0.15 / 0.85, seed=0)
    written = write_fold_records(plan, Path("records"), None, RecordOptions(class_ids=ids), workers=2)
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from chestdet.core import atomic
from chestdet.core.contracts import (
    FOLD_COLUMNS,
    FOLD_DIR,
    FOLD_TEST_LIST,
    FOLDS_CSV,
    LABEL_MAP_FILE,
    REJECTS_CSV,
    SPLIT_CSV,
    SUMMARY_JSON,
)
from chestdet.core.errors import ChestdetError
from chestdet.core.rejects import Reject, write_rejects
from chestdet.data.dataset import Inputs, image_job, split_items
from chestdet.data.records import (
    ImageJob,
    PreparedImage,
    RecordOptions,
    WrittenShards,
    remove_stale_shards,
    shard_counts,
    shard_paths,
    write_records,
)
from chestdet.data.split import SPLITS, SplitRow, fold_splits, split_into_folds, write_split

log = logging.getLogger(__name__)

STAGING_DIR = ".folds-staging"  # hidden, so no train-* glob of the output folder ever sees it


class FoldError(ChestdetError):
    """The images cannot be divided into the folds asked for."""


def fold_name(fold: int) -> str:
    """`fold-3`: the folder of fold 3, and its name in summary.json."""
    return FOLD_DIR.format(fold=fold)


@dataclass(frozen=True)
class FoldPlan:
    """Which fold each image tests in, and each fold's train/val/test."""

    folds: int
    fold_of: dict[str, int]  # image -> its test fold, 1..folds
    splits: list[dict[str, str]]  # splits[k - 1]: image -> "train" | "val" | "test" in fold k
    jobs: list[ImageJob]  # one per image, its split the name of its test fold, by fold then name

    def fold_jobs(self, fold: int) -> list[ImageJob]:
        """Fold `fold`'s jobs with their split in that fold, in split order and then by name."""
        splits = self.splits[fold - 1]
        jobs = [replace(job, split=splits[job.image]) for job in self.jobs]
        return sorted(jobs, key=lambda job: (SPLITS.index(job.split), job.image))


def plan_folds(inputs: Inputs, folds: int, val_share: float, seed: int = 0) -> FoldPlan:
    """Folds grouped by patient and stratified by class; each fold's val part is `val_share` of the
    patients of its other folds."""
    items = split_items(inputs)
    patients = len({item.patient for item in items})
    if patients < folds:
        raise FoldError(f"{folds} folds need at least {folds} patients; the images have {patients}")
    fold_of = split_into_folds(items, folds, seed)
    splits = [fold_splits(items, fold_of, fold, val_share, seed) for fold in range(1, folds + 1)]
    jobs = [
        image_job(inputs, item, fold_name(fold_of[item.image]))
        for item in sorted(items, key=lambda item: (fold_of[item.image], item.image))
    ]
    return FoldPlan(folds, fold_of, splits, jobs)


@dataclass
class FoldRecords:
    """What write_fold_records did: each image's result (job split = its test fold) and each fold's shards."""

    results: list[PreparedImage]
    shards: dict[int, WrittenShards] = field(default_factory=dict)


def write_fold_records(
    plan: FoldPlan, output_dir: Path, shards: int | None, options: RecordOptions, workers: int = 1,
    on_progress: Callable[[int], None] = lambda _: None,
) -> FoldRecords:
    """Prepare every image once into staging shards, then copy the Examples into each fold's
    `fold-k/{train,val,test}-NNNNN-of-MMMMM.tfrecord` (image i of a split to shard i mod M)."""
    staging = output_dir / STAGING_DIR
    staged, results = write_records(plan.jobs, staging, None, options, workers, on_progress)
    written = {result.job.image for result in results if result.example is not None}
    targets: dict[str, list[Path]] = {image: [] for image in written}
    done = FoldRecords(results)
    for fold in range(1, plan.folds + 1):
        jobs = [job for job in plan.fold_jobs(fold) if job.image in written]
        done.shards[fold] = _fold_targets(jobs, output_dir / fold_name(fold), shards, targets)
    with contextlib.ExitStack() as stack:
        writers = _open_writers(stack, [path for fold in done.shards.values() for paths in fold.paths.values()
                                        for path in paths])
        for image, record in staged_records([path for paths in staged.paths.values() for path in paths]):
            for path in targets.pop(image):
                writers[path].write(record)
    if targets:
        raise FoldError(f"{len(targets)} prepared images are missing from the staging shards in {staging}")
    for fold, fold_shards in done.shards.items():
        folder = output_dir / fold_name(fold)
        remove_stale_shards(folder, [path for paths in fold_shards.paths.values() for path in paths])
        for split, paths in fold_shards.paths.items():
            fold_shards.bytes[split] = sum(path.stat().st_size for path in paths)
    shutil.rmtree(staging)
    _remove_single_split_outputs(output_dir)
    return done


def _remove_single_split_outputs(output_dir: Path) -> None:
    """Shards and split.csv of an earlier single-split run in the folder would contradict folds.csv."""
    remove_stale_shards(output_dir, [])
    if (output_dir / SPLIT_CSV).is_file():
        (output_dir / SPLIT_CSV).unlink()
        log.info("removed %s of an earlier single-split run (each fold has its own)", output_dir / SPLIT_CSV)


def _fold_targets(jobs: Sequence[ImageJob], folder: Path, shards: int | None,
                  targets: dict[str, list[Path]]) -> WrittenShards:
    by_split: dict[str, list[ImageJob]] = {}
    for job in jobs:
        by_split.setdefault(job.split, []).append(job)
    counts = shard_counts({split: len(items) for split, items in by_split.items()}, shards)
    written = WrittenShards({split: shard_paths(folder, split, count) for split, count in counts.items()})
    for split, items in by_split.items():
        paths = written.paths[split]
        for index, job in enumerate(items):
            targets[job.image].append(paths[index % len(paths)])
    return written


def _open_writers(stack: contextlib.ExitStack, paths: Sequence[Path]) -> dict[Path, object]:
    """A TFRecordWriter per shard, on a temporary file renamed when every shard is complete."""
    import tensorflow as tf

    temporaries = {path: stack.enter_context(atomic.atomic_path(path)) for path in paths}
    return {path: stack.enter_context(tf.io.TFRecordWriter(str(temporary))) for path, temporary in temporaries.items()}


def staged_records(paths: Sequence[Path]) -> Iterator[tuple[str, bytes]]:
    """(image/filename, serialised Example) of every record in `paths`, the name parsed by TensorFlow."""
    import tensorflow as tf
    from object_detection.core.standard_fields import TfExampleFields as Keys

    spec = {Keys.filename: tf.io.FixedLenFeature([], tf.string)}
    dataset = tf.data.TFRecordDataset([str(path) for path in paths])
    dataset = dataset.map(lambda record: (tf.io.parse_single_example(record, spec)[Keys.filename], record))
    for name, record in dataset.as_numpy_iterator():
        yield name.decode("utf-8"), record


# --------------------------------------------------------------------------------------------------
# Reports


def write_fold_tables(plan: FoldPlan, results: Sequence[PreparedImage], output_dir: Path) -> list[Path]:
    """OUTPUT/folds.csv (image, patient, fold) and, per fold, fold-k/split.csv and fold-k/test-images.txt."""
    kept = sorted((r for r in results if r.example is not None), key=lambda r: (plan.fold_of[r.job.image], r.job.image))
    files = [output_dir / FOLDS_CSV]
    atomic.write_text(files[0], _csv_text(FOLD_COLUMNS, [[r.job.image, r.job.patient, plan.fold_of[r.job.image]]
                                                         for r in kept]))
    for fold in range(1, plan.folds + 1):
        folder = output_dir / fold_name(fold)
        splits = plan.splits[fold - 1]
        rows = sorted(kept, key=lambda r: (SPLITS.index(splits[r.job.image]), r.job.image))
        write_split(folder / SPLIT_CSV, [SplitRow(r.job.image, r.job.patient, splits[r.job.image], len(r.boxes))
                                         for r in rows])
        tests = [_relative_to(r.job.path, folder) for r in rows if splits[r.job.image] == "test"]
        atomic.write_text(folder / FOLD_TEST_LIST, "".join(f"{path}\n" for path in tests))
        files += [folder / SPLIT_CSV, folder / FOLD_TEST_LIST]
    return files


def write_fold_reports(output_dir: Path, rejects: Sequence[Reject], summary: dict, label_map: Path) -> None:
    """label_map.pbtxt (a copy), rejects.csv and summary.json, once for all folds, in `output_dir`."""
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(output_dir / LABEL_MAP_FILE, label_map.read_bytes())
    write_rejects(rejects, output_dir / REJECTS_CSV)
    atomic.write_json(output_dir / SUMMARY_JSON, summary)


def _csv_text(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _relative_to(path: Path, folder: Path) -> str:
    """The path as seen from `folder` (a list file's entries are read relative to its folder)."""
    try:
        return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(folder))).as_posix()
    except ValueError:  # another drive
        return Path(os.path.abspath(path)).as_posix()


def fold_summary(plan: FoldPlan, done: FoldRecords) -> dict[str, dict]:
    """summary.json's `folds`: per fold and split, images, negatives, boxes, patients, shards and bytes."""
    summary: dict[str, dict] = {}
    for fold in range(1, plan.folds + 1):
        splits = plan.splits[fold - 1]
        parts: dict[str, dict] = {}
        for result in done.results:
            if result.example is None:
                continue
            part = parts.setdefault(splits[result.job.image], {"images": 0, "negatives": 0, "boxes": 0,
                                                               "patients": set()})
            part["images"] += 1
            part["negatives"] += not result.boxes
            part["boxes"] += len(result.boxes)
            part["patients"].add(result.job.patient)
        written = done.shards.get(fold, WrittenShards())
        summary[fold_name(fold)] = {
            split: {**parts[split], "patients": len(parts[split]["patients"]),
                    "shards": [path.name for path in written.paths.get(split, [])],
                    "bytes": written.bytes.get(split, 0)}
            for split in SPLITS if split in parts
        }
    return summary


def format_folds(summary: Mapping[str, Mapping[str, Mapping]]) -> str:
    """One line per fold: images (patients) of train, val and test."""
    lines = []
    for name, parts in summary.items():
        cells = [f"{split} {parts[split]['images']} ({parts[split]['patients']} patients)" for split in SPLITS
                 if split in parts]
        lines.append(f"{name}: " + ", ".join(cells))
    return "\n".join(lines)
