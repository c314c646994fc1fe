"""Turn images and their boxes into the OD API's tf.train.Examples, written as sharded TFRecords.

Preparing an example (read, verify, maybe convert, serialise) is pure Python and CPU-bound, so the
shards are written in parallel processes, one process per shard file: forked workers, and the parent.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import multiprocessing
import os
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from object_detection.core.standard_fields import TfExampleFields as Keys

from chestdet.core.atomic import atomic_path
from chestdet.core.imaging import MAX_PIXELS, ImageReadError, StoredImage, stored_image
from chestdet.core.rejects import Reject, RejectKind
from chestdet.data.annotations import (
    NIH_IMAGE_SIZE,
    SOURCE_NIH_CSV,
    Box,
    BoxError,
    clip_to_image,
    fit_boxes_to_image,
    image_error_kind,
)

log = logging.getLogger(__name__)

# The OD API's TfExampleDecoder reads this key, but TfExampleFields has no name for it.
KEY_SHA256 = "image/key/sha256"
SHARD_PATTERN = "{split}-{index:05d}-of-{count:05d}.tfrecord"
DEFAULT_SHARDS = 4
IMAGES_PER_SHARD = 64
_SHARD_NAME = re.compile(r"^(?P<split>[a-z]+)-\d{5}-of-\d{5}\.tfrecord$")


@dataclass(frozen=True)
class ImageJob:
    """One image to write: where it is, its patient and split, and its boxes (each names its file)."""

    image: str
    path: Path
    patient: str
    split: str
    boxes: tuple[Box, ...] = ()
    size: tuple[int, int] | None = None  # the real size its boxes were fitted to (dataset.check_boxes)


@dataclass(frozen=True)
class RecordOptions:
    class_ids: Mapping[str, int]
    max_size: int | None = None
    csv_image_size: tuple[int, int] = NIH_IMAGE_SIZE
    max_pixels: int = MAX_PIXELS


@dataclass
class PreparedImage:
    """A worker's answer for one image: the serialised example, or why there is none."""

    job: ImageJob
    example: bytes | None = None
    boxes: tuple[Box, ...] = ()
    width: int = 0
    height: int = 0
    stored_width: int = 0
    stored_height: int = 0
    format: str = ""
    size: int = 0  # bytes of the serialised example
    rejects: list[Reject] = field(default_factory=list)
    notes: Counter = field(default_factory=Counter)


def prepare_image(job: ImageJob, options: RecordOptions) -> PreparedImage:
    """Read and check one image, fit its boxes to it (unless they were, to the size it still has) and
    serialise its Example."""
    result = PreparedImage(job)
    try:
        stored = stored_image(job.path, options.max_size, options.max_pixels)
    except ImageReadError as error:
        suffix = f" ({len(job.boxes)} boxes not written)" if job.boxes else ""
        result.rejects.append(Reject(str(job.path), "image", error.reason + suffix, image_error_kind(error), job.image))
        return result
    real_size = (stored.original_width, stored.original_height)
    if job.size is not None and job.size != real_size:
        result.rejects.append(Reject(str(job.path), "image", f"changed while the records were written (was "
                                     f"{job.size[0]}x{job.size[1]}, now {real_size[0]}x{real_size[1]})",
                                     RejectKind.UNREADABLE_FILE, job.image))
        return result
    if job.size is not None:
        result.boxes = job.boxes
    else:
        result.boxes, rejects, notes = fit_boxes(job.image, job.path, job.boxes, real_size, options)
        result.rejects += rejects
        result.notes.update(notes)
    if job.boxes and not result.boxes:
        result.rejects.append(no_usable_boxes(job.image, job.path, len(job.boxes)))
        return result
    result.notes["images stored unchanged" if stored.conversion is None else f"converted: {stored.conversion}"] += 1
    result.width, result.height = real_size
    result.stored_width, result.stored_height, result.format = stored.width, stored.height, stored.format
    result.example = serialize_example(stored, job.image, result.boxes, options.class_ids)
    return result


def no_usable_boxes(image: str, path: Path, count: int) -> Reject:
    return Reject(str(path), "image", f"all {count} boxes rejected; image not written", RejectKind.NO_USABLE_BOXES,
                  image)


def fit_boxes(image: str, path: Path, boxes: Sequence[Box], real_size: tuple[int, int],
              options: RecordOptions) -> tuple[tuple[Box, ...], list[Reject], Counter]:
    """The boxes of one image as the records keep them: in the label map, NIH's CSV boxes scaled to the
    real image, clipped to its border when they cross it by a little; a reject for each of the others.
    Records, the patient split and evaluate all take their boxes from here."""
    kept, rejects, notes = [], [], Counter()
    for box in boxes:
        try:
            if box.label not in options.class_ids:
                raise BoxError(f"label {box.label!r} is not in the label map", RejectKind.LABEL_NOT_IN_MAP)
            if box.source == SOURCE_NIH_CSV:
                [box], fitted = fit_boxes_to_image([box], options.csv_image_size, real_size)
                notes.update(fitted)
            box, clipped = clip_to_image(box, *real_size)
        except BoxError as error:
            rejects.append(Reject(box.file, box.location or image, f"{image}: {error}", error.kind, image))
            continue
        if clipped:
            notes["boxes clipped to the image border"] += 1
        kept.append(box)
    return tuple(kept), rejects, notes


def serialize_example(stored: StoredImage, image: str, boxes: Sequence[Box], class_ids: Mapping[str, int]) -> bytes:
    """The OD API's Example for one image, serialised; boxes are normalised by the original image size.

    Normalised corners do not change when the stored image is downscaled, so they are divided by the
    size the boxes were made on, not the stored size. Protobuf reads concatenated messages as their
    merge (TF's example parser too), so the features that repeat from image to image (format, size,
    classes) are serialised once and cached: with the pure-Python protobuf that the OD API's pins
    impose, serialising is the costliest step of a pass-through image. Thread-safe: each thread
    refills its own per-image message (a Beam worker may run several threads).
    """
    width, height = stored.original_width, stored.original_height
    name = image.encode("utf-8")
    example, values = _per_image_example()
    values[Keys.image_encoded][:] = [stored.data]
    values[Keys.filename][:] = [name]
    values[Keys.source_id][:] = [name]
    values[KEY_SHA256][:] = [hashlib.sha256(stored.data).hexdigest().encode()]
    values[Keys.object_bbox_xmin][:] = [box.xmin / width for box in boxes]
    values[Keys.object_bbox_ymin][:] = [box.ymin / height for box in boxes]
    values[Keys.object_bbox_xmax][:] = [box.xmax / width for box in boxes]
    values[Keys.object_bbox_ymax][:] = [box.ymax / height for box in boxes]
    # Example is proto3 (no required fields): the initialisation walk of SerializeToString is redundant.
    per_image = example.SerializePartialToString()
    values[Keys.image_encoded][:] = []  # do not keep the image alive until the next one
    shared = [
        _shared_feature(Keys.image_format, "bytes_list", (stored.format.encode(),)),
        _shared_feature(Keys.height, "int64_list", (stored.height,)),
        _shared_feature(Keys.width, "int64_list", (stored.width,)),
        _shared_feature(Keys.object_class_text, "bytes_list", tuple(box.label.encode() for box in boxes)),
        _shared_feature(Keys.object_class_label, "int64_list", tuple(class_ids[box.label] for box in boxes)),
        _shared_feature(Keys.object_difficult, "int64_list", tuple(int(box.difficult) for box in boxes)),
    ]
    return b"".join([per_image, *shared])


def _example_bytes(features: Mapping[str, tuple[str, Sequence]]) -> bytes:
    """A serialised Example with `features`: {key: ("bytes_list" | "float_list" | "int64_list", values)}."""
    example = _example_without_map()()
    add_entry = example.features.feature.add
    for key, (kind, values) in features.items():
        getattr(add_entry(key=key).value, kind).value.extend(values)
    # Example is proto3 (no required fields): the initialisation walk of SerializeToString is redundant.
    return example.SerializePartialToString()


PER_IMAGE_FEATURES = (
    (Keys.image_encoded, "bytes_list"), (Keys.filename, "bytes_list"), (Keys.source_id, "bytes_list"),
    (KEY_SHA256, "bytes_list"), (Keys.object_bbox_xmin, "float_list"), (Keys.object_bbox_ymin, "float_list"),
    (Keys.object_bbox_xmax, "float_list"), (Keys.object_bbox_ymax, "float_list"),
)


_per_thread = threading.local()


def _per_image_example() -> tuple:
    """This thread's Example holding the features that differ from image to image, and their value lists.

    It is refilled for every image rather than built anew: creating its 26 messages was a third of the
    serialisation time.
    """
    cached = getattr(_per_thread, "example", None)
    if cached is None:
        example = _example_without_map()()
        add_entry = example.features.feature.add
        values = {key: getattr(add_entry(key=key).value, kind).value for key, kind in PER_IMAGE_FEATURES}
        cached = _per_thread.example = (example, values)
    return cached


@functools.cache
def _example_without_map() -> type:
    """tf.train.Example with its features map declared as the repeated entry message a map is on the wire.

    Protobuf defines a map as wire-identical to that repeated field, so the bytes are the same, but the
    pure-Python protobuf copies every map entry twice while serialising it: half the CPU time of a
    pass-through image. The declaration is TF's own, with only the map-entry option cleared.
    """
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from tensorflow.core.example import example_pb2, feature_pb2

    pool = descriptor_pool.DescriptorPool()
    for module in (feature_pb2, example_pb2):
        declaration = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(declaration)
        for message in declaration.message_type:
            for nested in message.nested_type:
                nested.options.ClearField("map_entry")
        pool.Add(declaration)
    return message_factory.MessageFactory(pool).GetPrototype(pool.FindMessageTypeByName("tensorflow.Example"))


@functools.lru_cache(maxsize=4096)
def _shared_feature(key: str, kind: str, values: tuple) -> bytes:
    return _example_bytes({key: (kind, values)})


# --------------------------------------------------------------------------------------------------
# Writing shards in worker processes


def shard_paths(output_dir: Path, split: str, count: int) -> list[Path]:
    return [output_dir / SHARD_PATTERN.format(split=split, index=index, count=count) for index in range(count)]


def shard_counts(images_per_split: Mapping[str, int], shards: int | None) -> dict[str, int]:
    """Files per split: `shards`, or by default up to DEFAULT_SHARDS with at least IMAGES_PER_SHARD
    images each; never more shards than images."""
    def count_for(images: int) -> int:
        wanted = shards if shards is not None else min(DEFAULT_SHARDS, images // IMAGES_PER_SHARD)
        return max(1, min(wanted, images))

    return {split: count_for(count) for split, count in images_per_split.items() if count}


@dataclass(frozen=True)
class ShardTask:
    """One shard file: the images it holds, in order, and the temporary path to write them to."""

    path: Path
    temporary: Path
    jobs: tuple[ImageJob, ...]


@dataclass
class WrittenShards:
    paths: dict[str, list[Path]] = field(default_factory=dict)
    bytes: Counter = field(default_factory=Counter)


# Writes the given shards (each with write_shard) and yields each with what happened to its images.
RunTasks = Callable[[Sequence[ShardTask], RecordOptions], Iterable[tuple[ShardTask, list[PreparedImage]]]]

_progress = None  # a worker's queue for "N more images done"
PROGRESS_EVERY = 16


def write_shard(
    task: ShardTask, options: RecordOptions, report: Callable[[int], None] | None = None
) -> list[PreparedImage]:
    """Prepare and write one shard's images; return what happened to each, without the bytes.

    One process owns one file, so no example crosses a process boundary. Every PROGRESS_EVERY images
    and at the end, `report` (by default the worker's progress queue, if any) hears how many were done.
    """
    import tensorflow as tf

    report = report or (_progress.put if _progress is not None else None)
    results = []
    with tf.io.TFRecordWriter(str(task.temporary)) as writer:
        for job in task.jobs:
            prepared = prepare_image(job, options)
            if prepared.example is not None:
                writer.write(prepared.example)
                prepared.size = len(prepared.example)
                prepared.example = b""
            results.append(prepared)
            if report is not None and len(results) % PROGRESS_EVERY == 0:
                report(PROGRESS_EVERY)
    if report is not None and len(results) % PROGRESS_EVERY:
        report(len(results) % PROGRESS_EVERY)
    return results


def _init_worker(progress) -> None:  # noqa: ANN001  (a multiprocessing queue)
    global _progress
    _progress = progress


@contextlib.contextmanager
def _opencv_without_threads() -> Iterator[None]:
    """Fork only while OpenCV runs no thread pool: a forked child inherits the pool's state but not its
    threads, and its first cv2.setNumThreads or parallel call can wait for them forever."""
    import cv2

    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(previous)


def write_records(
    jobs: Sequence[ImageJob], output_dir: Path, shards: int | None, options: RecordOptions, workers: int = 1,
    on_progress: Callable[[int], None] = lambda _: None, run_tasks: RunTasks | None = None,
) -> tuple[WrittenShards, list[PreparedImage]]:
    """Write every job's example to `<split>-NNNNN-of-MMMMM.tfrecord` shards in `output_dir`.

    Image i of a split goes to shard i mod M, so the content does not depend on `workers`. Shards are
    written under temporary names and renamed only when all of them are complete; shards of an
    earlier run that this run did not write are then removed. `run_tasks` writes the shards (each
    with `write_shard`) and yields each with its results; by default, `workers` local processes.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    by_split: dict[str, list[ImageJob]] = {}
    for job in jobs:
        by_split.setdefault(job.split, []).append(job)
    counts = shard_counts({split: len(items) for split, items in by_split.items()}, shards)
    written = WrittenShards({split: shard_paths(output_dir, split, count) for split, count in counts.items()})
    results: dict[Path, list[PreparedImage]] = {}
    with contextlib.ExitStack() as stack:
        tasks = [
            ShardTask(path, stack.enter_context(atomic_path(path)), tuple(by_split[split][index::counts[split]]))
            for split, paths in written.paths.items() for index, path in enumerate(paths)
        ]
        run = run_tasks or functools.partial(_run_tasks, workers=workers, on_progress=on_progress)
        for task, prepared in run(tasks, options):
            results[task.path] = prepared
    remove_stale_shards(output_dir, [task.path for task in tasks])
    ordered = [image for task in tasks for image in results[task.path]]
    for task in tasks:
        split = task.jobs[0].split
        written.bytes[split] += task.path.stat().st_size
    return written, ordered


def _run_tasks(
    tasks: Sequence[ShardTask], options: RecordOptions, workers: int, on_progress: Callable[[int], None]
) -> Iterator[tuple[ShardTask, list[PreparedImage]]]:
    workers = min(workers, len(tasks))
    if workers <= 1:
        for task in tasks:
            yield task, write_shard(task, options, on_progress)
        return
    _example_without_map()  # built once, before the fork
    # fork: workers start at once and inherit the imported modules (spawn would import TF again).
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    progress = context.SimpleQueue()

    def report(done: int) -> None:
        if done:
            on_progress(done)
        while not progress.empty():
            on_progress(progress.get())

    own, forked = _parent_share(tasks, workers)
    pool = ProcessPoolExecutor(workers - 1, mp_context=context, initializer=_init_worker, initargs=(progress,))
    finished = False
    try:
        with _opencv_without_threads():  # the first submit forks
            futures = {pool.submit(write_shard, task, options): task for task in forked}
        for task in own:
            yield task, write_shard(task, options, report)
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            report(0)
            for future in done:
                yield futures[future], future.result()
        report(0)
        finished = True
    finally:
        # When every result is in, the workers' exit (unmapping a TF-sized address space, about 10 ms)
        # overlaps with the reports. After an error, wait: a worker must not write a shard's temporary
        # file after it has been removed.
        pool.shutdown(wait=not finished, cancel_futures=True)


def _parent_share(tasks: Sequence[ShardTask], workers: int) -> tuple[list[ShardTask], list[ShardTask]]:
    """The shards the parent writes itself (one fork fewer, and it does not sit idle), and the rest.

    Shards go, largest first, to whichever of the `workers` is least loaded so far, counting images.
    """
    loads = [0] * workers
    own, forked = [], []
    for task in sorted(tasks, key=lambda task: -len(task.jobs)):
        worker = loads.index(min(loads))
        loads[worker] += len(task.jobs)
        (own if worker == 0 else forked).append(task)
    return own, forked


def remove_stale_shards(output_dir: Path, keep: Sequence[Path]) -> list[Path]:
    """Delete shards of an earlier run (another shard count or split) so `train-*` globs match only this one."""
    keep_names = {path.name for path in keep}
    removed = []
    for name in sorted(os.listdir(output_dir)):
        if _SHARD_NAME.match(name) and name not in keep_names:
            (output_dir / name).unlink()
            removed.append(output_dir / name)
    if removed:
        log.info("removed %d shard(s) of an earlier run: %s", len(removed), ", ".join(p.name for p in removed))
    return removed


def shard_glob(output_dir: str | Path, split: str) -> str:
    """The pattern of a split's shards in a records folder: what training's input_path, cross-validation
    and evaluation use to find them."""
    return str(Path(output_dir) / f"{split}-?????-of-?????.tfrecord")
