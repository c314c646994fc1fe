"""Turn images and their boxes into the OD API's tf.train.Examples, written as sharded TFRecords.

Preparing an example (read, verify, maybe convert, serialise) is pure Python and CPU-bound, so it
runs in worker processes; the parent only writes the serialised bytes, in a fixed order.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import logging
import multiprocessing
import os
import re
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from object_detection.core.standard_fields import TfExampleFields as Keys

from chestdet.annotations import (
    NIH_IMAGE_SIZE,
    SOURCE_NIH_CSV,
    Box,
    BoxError,
    Reject,
    clip_to_image,
    fit_boxes_to_image,
)
from chestdet.atomic import atomic_path
from chestdet.imaging import MAX_PIXELS, ImageReadError, StoredImage, stored_image

log = logging.getLogger(__name__)

# The OD API's TfExampleDecoder reads this key, but TfExampleFields has no name for it.
KEY_SHA256 = "image/key/sha256"
SHARD_PATTERN = "{split}-{index:05d}-of-{count:05d}.tfrecord"
_SHARD_NAME = re.compile(r"^(?P<split>[a-z]+)-\d{5}-of-\d{5}\.tfrecord$")
JOBS_PER_TASK = 4


@dataclass(frozen=True)
class ImageJob:
    """One image to write: where it is, its patient and split, and its boxes with their files."""

    image: str
    path: Path
    patient: str
    split: str
    boxes: tuple[Box, ...] = ()
    box_files: tuple[str, ...] = ()  # the annotation file each box came from, for rejects


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
    rejects: list[Reject] = field(default_factory=list)
    notes: Counter = field(default_factory=Counter)


def prepare_image(job: ImageJob, options: RecordOptions) -> PreparedImage:
    """Read and check one image, fit its boxes to it and serialise its Example."""
    result = PreparedImage(job)
    try:
        stored = stored_image(job.path, options.max_size, options.max_pixels)
    except ImageReadError as error:
        suffix = f" ({len(job.boxes)} boxes not written)" if job.boxes else ""
        result.rejects.append(Reject(str(job.path), "image", error.reason + suffix))
        return result
    real_size = (stored.original_width, stored.original_height)
    result.boxes = _fit_boxes(job, real_size, options, result)
    if job.boxes and not result.boxes:
        result.rejects.append(
            Reject(str(job.path), "image", f"all {len(job.boxes)} boxes rejected; image not written")
        )
        return result
    result.notes["images stored unchanged" if stored.conversion is None else f"converted: {stored.conversion}"] += 1
    result.width, result.height = real_size
    result.stored_width, result.stored_height, result.format = stored.width, stored.height, stored.format
    result.example = build_example(stored, job.image, result.boxes, options.class_ids).SerializeToString()
    return result


def _fit_boxes(job: ImageJob, real_size: tuple[int, int], options: RecordOptions, result: PreparedImage) -> tuple:
    kept = []
    for box, source_file in zip(job.boxes, job.box_files, strict=True):
        try:
            if box.label not in options.class_ids:
                raise BoxError(f"label {box.label!r} is not in the label map")
            if box.source == SOURCE_NIH_CSV:
                [box], notes = fit_boxes_to_image([box], options.csv_image_size, real_size)
                result.notes.update(notes)
            box, clipped = clip_to_image(box, *real_size)
        except BoxError as error:
            result.rejects.append(Reject(source_file, box.location or job.image, f"{job.image}: {error}"))
            continue
        if clipped:
            result.notes["boxes clipped to the image border"] += 1
        kept.append(box)
    return tuple(kept)


def build_example(stored: StoredImage, image: str, boxes: Sequence[Box], class_ids: Mapping[str, int]):
    """The OD API's Example for one image; boxes are normalised by the original image size.

    Normalised corners do not change when the stored image is downscaled, so they are divided by
    the size the boxes were made on, not the stored size.
    """
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example()
    feature = example.features.feature
    name = image.encode("utf-8")
    feature[Keys.image_encoded].bytes_list.value.append(stored.data)
    feature[Keys.image_format].bytes_list.value.append(stored.format.encode())
    feature[Keys.filename].bytes_list.value.append(name)
    feature[Keys.source_id].bytes_list.value.append(name)
    feature[KEY_SHA256].bytes_list.value.append(hashlib.sha256(stored.data).hexdigest().encode())
    feature[Keys.height].int64_list.value.append(stored.height)
    feature[Keys.width].int64_list.value.append(stored.width)
    width, height = stored.original_width, stored.original_height
    feature[Keys.object_bbox_xmin].float_list.value.extend([box.xmin / width for box in boxes])
    feature[Keys.object_bbox_ymin].float_list.value.extend([box.ymin / height for box in boxes])
    feature[Keys.object_bbox_xmax].float_list.value.extend([box.xmax / width for box in boxes])
    feature[Keys.object_bbox_ymax].float_list.value.extend([box.ymax / height for box in boxes])
    feature[Keys.object_class_text].bytes_list.value.extend([box.label.encode() for box in boxes])
    feature[Keys.object_class_label].int64_list.value.extend([class_ids[box.label] for box in boxes])
    feature[Keys.object_difficult].int64_list.value.extend([int(box.difficult) for box in boxes])
    return example


# --------------------------------------------------------------------------------------------------
# Running the workers


def _prepare_batch(jobs: Sequence[ImageJob], options: RecordOptions) -> list[PreparedImage]:
    return [prepare_image(job, options) for job in jobs]


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core already; OpenCV's own pool would oversubscribe


def prepare_images(
    jobs: Sequence[ImageJob], options: RecordOptions, workers: int = 1
) -> Iterator[PreparedImage]:
    """prepare_image over all jobs, in order; `workers` > 1 uses that many processes."""
    batches = [jobs[start:start + JOBS_PER_TASK] for start in range(0, len(jobs), JOBS_PER_TASK)]
    if workers <= 1 or len(batches) <= 1:
        for batch in batches:
            yield from _prepare_batch(batch, options)
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context(method), initializer=_init_worker
    ) as pool:
        for prepared in _ordered(pool.submit, _prepare_batch, batches, options, window=workers * 4):
            yield from prepared


def _ordered(submit: Callable[..., Future], function: Callable, items: Iterable, *args, window: int) -> Iterator:
    """Results of function(item, *args) in input order, with at most `window` tasks in flight."""
    pending: deque[Future] = deque()
    for item in items:
        pending.append(submit(function, item, *args))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


# --------------------------------------------------------------------------------------------------
# Shards


def shard_paths(output_dir: Path, split: str, count: int) -> list[Path]:
    return [output_dir / SHARD_PATTERN.format(split=split, index=index, count=count) for index in range(count)]


def shard_counts(images_per_split: Mapping[str, int], shards: int) -> dict[str, int]:
    """`shards` files per split, fewer when a split has fewer images (never an empty shard)."""
    return {split: max(1, min(shards, count)) for split, count in images_per_split.items() if count}


@dataclass
class WrittenShards:
    paths: dict[str, list[Path]] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=Counter)


def write_shards(
    prepared: Iterable[PreparedImage], output_dir: Path, counts: Mapping[str, int],
    on_image: Callable[[PreparedImage], None] = lambda _: None,
) -> WrittenShards:
    """Write each example to shard (its index within its split) mod the split's shard count.

    Every shard is written under a temporary name and renamed only when all are complete.
    """
    import tensorflow as tf

    written = WrittenShards({split: shard_paths(output_dir, split, count) for split, count in counts.items()})
    position: Counter = Counter()
    with contextlib.ExitStack() as stack:
        writers = {
            split: [stack.enter_context(tf.io.TFRecordWriter(str(stack.enter_context(atomic_path(path)))))
                    for path in paths]
            for split, paths in written.paths.items()
        }
        for image in prepared:
            if image.example is not None:
                split = image.job.split
                writers[split][position[split] % counts[split]].write(image.example)
                position[split] += 1
                written.bytes[split] += len(image.example)
            on_image(image)
    remove_stale_shards(output_dir, [path for paths in written.paths.values() for path in paths])
    return written


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
    """The pattern the OD API's tf_record_input_reader.input_path should use for a split."""
    return str(Path(output_dir) / f"{split}-?????-of-?????.tfrecord")


def existing_shards(output_dir: str | Path, split: str) -> list[str]:
    return sorted(glob.glob(shard_glob(output_dir, split)))
