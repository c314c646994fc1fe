"""Batch detection: images in; drawn copies, detections.csv/json, images.csv, VOC XML and errors out.

The work on one image is three steps any runner can call: `decode` (read and prepare it),
`infer` (the backend on a batch of decoded images) and `draw` (its drawn copy and VOC XML, giving
its `ImageResult`); `chestdet.detection.tables` turns the results into rows, `chestdet.detection.review`
into the files annotation tools import. `detect_images` runs the steps
in three overlapping stages: reader threads decode (bounded look-ahead, so memory does not grow
with the number of images) while the backend loads and infers (in as many threads as it can use at
once); writer threads draw, encode and write. Every finished image is appended to a journal after
its files are in place, so a killed run resumes where it stopped. The tables are appended to as
images finish, in listing order, each resumed image's result read back from the journal in its
turn; they hold exactly what the journal holds (its floats round-trip through JSON unchanged,
rounded as printed before either sees them), which is why a resumed run's outputs equal an
uninterrupted one's. Nothing is kept per image but its entry in the listing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Protocol

import cv2
import numpy as np

from chestdet.core import atomic
from chestdet.core.contracts import (
    COCO_IMAGES_JSON,
    DETECTIONS_COCO_JSON,
    DETECTIONS_CSV,
    DETECTIONS_JSON,
    DRAWN_DIR,
    ERRORS_CSV,
    EXPLAIN_DIR,
    IMAGES_CSV,
    JOURNAL,
    LABEL_STUDIO_CONFIG_XML,
    LABEL_STUDIO_TASKS_JSON,
    RUN_JSON,
    VOC_DIR,
)
from chestdet.core.detections import Detection, ImageResult
from chestdet.core.errors import DetectError
from chestdet.core.imaging import ImageReadError, read_image
from chestdet.detection.drawing import render
from chestdet.detection.inputs import InputImage
from chestdet.detection.journal import Journal
from chestdet.detection.prefetch import OrderedPrefetch
from chestdet.detection.review import ReviewOptions, ReviewWriter
from chestdet.detection.tables import ResultWriter, ResultWriters, TableWriter
from chestdet.detection.thresholds import Thresholds
from chestdet.detection.voc import voc_xml
from chestdet.export.backends import Backend, ModelOutput, to_pixels

log = logging.getLogger("chestdet.detection.detect")


# ---------------------------------------------------------------- the run


class Progress(Protocol):
    """What detect_images needs of a tqdm bar."""

    def reset(self, total: int | None = None) -> None: ...

    def update(self, n: int = 1) -> bool | None: ...


class Explains(Protocol):
    """What `draw` needs of `chestdet.detection.explain.Explainer`: maps of the drawn boxes, written beside drawn/."""

    def write(self, output_dir: Path, name: str, pixels: np.ndarray, detections: Sequence[Detection],
              stem: str | None = None) -> object: ...


@dataclass(frozen=True)
class DetectOptions:
    thresholds: Thresholds = Thresholds()
    keep_score: float = 0.01
    max_boxes: int = 100
    image_format: str = "jpg"
    voc_xml: bool = False
    workers: int = 2
    prefetch: int = 8
    review: ReviewOptions = ReviewOptions()
    explainer: Explains | None = None
    extra_writers: Sequence[Callable[[Path, Mapping[int, str]], ResultWriter]] = ()  # made per run, e.g. DICOM SR


@dataclass
class RunSummary:
    processed: int = 0
    errors: int = 0
    skipped: int = 0  # finished by an earlier run (--resume)
    ignored: int = 0  # hidden files and OS litter in the input folders, not read
    seconds: float = 0.0
    first_result_seconds: float | None = None

    @property
    def rate(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def last_line(self) -> str:
        line = f"{self.processed} images in {self.seconds:.1f} s = {self.rate:.2f} images/s; {self.errors} errors"
        return line + (f"; {self.ignored} hidden or system files skipped" if self.ignored else "")


class OutputLayout:
    """Where each output of a run lives; drawn and XML names mirror the input's relative paths."""

    def __init__(self, root: Path, images: Sequence[InputImage], image_format: str) -> None:
        self.root = root
        self.image_format = image_format
        stems = [PurePosixPath(i.name).with_suffix("").as_posix() for i in images]
        clashes = {s for s in stems if stems.count(s) > 1} if len(set(stems)) != len(stems) else set()
        self._stems = {
            i.name: (i.name if stem in clashes else stem) for i, stem in zip(images, stems, strict=True)
        }

    def _relative(self, image: str) -> str:
        stem = self._stems[image]
        return stem.lstrip("/") if PurePosixPath(stem).is_absolute() else stem

    def stem(self, image: str) -> str:
        """The image's path relative to the output's folders, without suffix (drawn/, voc/, explain/)."""
        return self._relative(image)

    def drawn(self, image: str) -> Path:
        return self.root / DRAWN_DIR / f"{self._relative(image)}.{self.image_format}"

    def voc(self, image: str) -> Path:
        return self.root / VOC_DIR / f"{self._relative(image)}.xml"

    @property
    def journal(self) -> Path:
        return self.root / JOURNAL


@dataclass
class Loaded:
    """One image after `decode`: its pixels and the backend's input, or the reason it could not be read."""

    item: InputImage
    pixels: np.ndarray | None = None
    prepared: np.ndarray | None = None
    error: str | None = None


# ---------------------------------------------------------------- the steps


def decode(item: InputImage, prepare: Callable[[np.ndarray], np.ndarray], ahead: DecodeAhead | None = None) -> Loaded:
    """Read one image (or take it from `ahead`) and prepare it for the backend; errors become `Loaded.error`."""
    if item.error is not None:
        return Loaded(item, error=item.error)
    try:
        pixels = ahead.take(item) if ahead is not None else None
        if pixels is None:
            pixels = read_image(item.path)
        return Loaded(item, pixels, prepare(pixels))
    except ImageReadError as error:
        return Loaded(item, error=error.reason)
    except (cv2.error, ValueError, MemoryError) as error:
        return Loaded(item, error=f"cannot decode ({type(error).__name__}: {error})")


def infer(backend: Backend, batch: Sequence[Loaded]) -> list[ModelOutput | None]:
    """The backend's output for each image of a batch from `batches`; [None] for an unreadable image."""
    return backend.infer([b.prepared for b in batch]) if batch[0].error is None else [None]


def draw(
    loaded: Loaded,
    output: ModelOutput | None,
    layout: OutputLayout,
    class_names: Mapping[int, str],
    options: DetectOptions,
) -> ImageResult:
    """Write one image's drawn copy (VOC XML, explanations) and return its result, detections as printed."""
    item = loaded.item
    if loaded.error is not None or output is None:
        return ImageResult(item.name, str(item.path), error=loaded.error)
    height, width = loaded.pixels.shape[:2]
    everything = to_pixels(output, width, height)
    kept = tuple(d.as_printed() for d in everything if d.score >= options.keep_score)
    shown = options.thresholds.shown(everything, options.max_boxes)
    atomic.write_bytes(layout.drawn(item.name), render(loaded.pixels, shown, class_names, options.image_format))
    if options.voc_xml:
        depth = 1 if loaded.pixels.ndim == 2 else 3
        xml = voc_xml(item.path, width, height, depth, shown, class_names)
        atomic.write_bytes(layout.voc(item.name), xml)
    if options.explainer is not None and shown:
        printed = [d.as_printed() for d in shown]  # the boxes exactly as detections.csv has them
        options.explainer.write(layout.root, item.name, loaded.pixels, printed, stem=layout.stem(item.name))
    return ImageResult(item.name, str(item.path), width, height, kept)


def batches(loaded: Iterable[Loaded], max_batch: int) -> Iterator[list[Loaded]]:
    """Consecutive readable images of one shape, up to max_batch; each unreadable one alone."""
    batch: list[Loaded] = []
    for item in loaded:
        if item.error is not None:
            yield [item]
            continue
        if batch and (len(batch) >= max_batch or batch[0].prepared.shape != item.prepared.shape):
            yield batch
            batch = []
        batch.append(item)
        if len(batch) >= max_batch:
            yield batch
            batch = []
    if batch:
        yield batch


# ---------------------------------------------------------------- the local threaded runner


def detect_images(
    images: Sequence[InputImage],
    backend: Backend,
    class_names: Mapping[int, str],
    output_dir: Path,
    options: DetectOptions = DetectOptions(),
    started: float | None = None,
    progress: Progress | None = None,
    ahead: DecodeAhead | None = None,
) -> RunSummary:
    """Run `backend` over the images not yet in the output folder's journal, writing the tables as they finish.

    `started` is the perf_counter time the command began (the summary's clock); `progress` (a tqdm
    bar) is reset to the number of images left, then advanced once per finished image. `ahead`
    holds images decoded while the command started; it is stopped when the run ends.
    """
    started = time.perf_counter() if started is None else started
    layout = OutputLayout(output_dir, images, options.image_format)
    journal = Journal(layout.journal)
    done = journal.finished()
    todo = [i for i in images if i.name not in done]
    finisher = _Finisher(journal, RunSummary(skipped=len(images) - len(todo)), started, progress)
    if finisher.summary.skipped:
        log.info("resuming: %d of %d images already done", finisher.summary.skipped, len(images))
    if progress is not None:
        progress.reset(total=len(todo))
    write = partial(_draw_and_finish, layout=layout, class_names=class_names, options=options, finisher=finisher)
    try:
        with result_writers(output_dir, class_names, options) as writers, _stages(
            todo, backend, options, ahead, write
        ) as fresh:
            for item, result in in_listing_order(images, done, fresh):
                writers.add(item, result)
    finally:
        journal.close()
        done.close()
        if ahead is not None:
            ahead.stop()
    finisher.summary.seconds = time.perf_counter() - finisher.started
    return finisher.summary


def result_writers(output_dir: Path, class_names: Mapping[int, str], options: DetectOptions) -> ResultWriters:
    """Every file written from the results in listing order: the tables and the review files."""
    shown = partial(options.thresholds.shown, max_boxes=options.max_boxes)
    return ResultWriters([TableWriter(output_dir, class_names),
                          ReviewWriter(output_dir, class_names, shown, options.review),
                          *(make(output_dir, class_names) for make in options.extra_writers)])


def write_results(output_dir: Path, images: Sequence[InputImage], results: Mapping[str, ImageResult],
                  class_names: Mapping[int, str], options: DetectOptions) -> None:
    """The tables and review files of results collected whole (a Beam run), in listing order."""
    with result_writers(output_dir, class_names, options) as writers:
        for item in images:
            if item.name in results:
                writers.add(item, results[item.name])


def in_listing_order(
    images: Sequence[InputImage], done: Mapping[str, ImageResult], fresh: Iterator[ImageResult]
) -> Iterator[tuple[InputImage, ImageResult]]:
    """Each image with its result, finished earlier (`done`) or now; `fresh` may run a batch ahead of the
    listing (an unreadable image is not held back by the batch being filled), so results are paired by name."""
    early: dict[str, ImageResult] = {}
    for item in images:
        if item.name in done:
            yield item, done[item.name]
            continue
        while item.name not in early:
            result = next(fresh)
            early[result.image] = result
        yield item, early.pop(item.name)


@contextlib.contextmanager
def _stages(
    todo: Sequence[InputImage], backend: Backend, options: DetectOptions, ahead: DecodeAhead | None,
    write: Callable[[tuple[Loaded, ModelOutput | None]], ImageResult],
) -> Iterator[Iterator[ImageResult]]:
    """Readers decode while the backend loads, then infer and write overlap, each stage bounded; the
    results come out in the order of `todo`."""
    with ThreadPoolExecutor(options.workers, "read") as readers, ThreadPoolExecutor(
        backend.concurrency, "infer"
    ) as inferrers, ThreadPoolExecutor(options.workers, "write") as writers:
        loaded = OrderedPrefetch(readers, partial(decode, prepare=backend.prepare, ahead=ahead), todo, options.prefetch)
        if todo:
            backend.load()
        # Twice the calls that can run: results are taken in order, so a call that ends before the one ahead
        # of it must find the next one queued, or its thread (a core) waits for the slower call.
        inferred = OrderedPrefetch(inferrers, partial(_infer_pairs, backend), batches(loaded, backend.max_batch),
                                   2 * backend.concurrency)
        pairs = (pair for batch_pairs in inferred for pair in batch_pairs)
        yield iter(OrderedPrefetch(writers, write, pairs, options.prefetch))


def _infer_pairs(backend: Backend, batch: list[Loaded]) -> list[tuple[Loaded, ModelOutput | None]]:
    return list(zip(batch, infer(backend, batch), strict=True))


def _draw_and_finish(
    pair: tuple[Loaded, ModelOutput | None], layout: OutputLayout, class_names: Mapping[int, str],
    options: DetectOptions, finisher: _Finisher,
) -> ImageResult:
    result = draw(*pair, layout, class_names, options)
    finisher.finished(result)
    return result


class _Finisher:
    """Journal each finished image, count it in the summary and advance the progress bar (thread-safe)."""

    def __init__(self, journal: Journal, summary: RunSummary, started: float, progress: Progress | None) -> None:
        self.journal, self.summary, self.started, self.progress = journal, summary, started, progress
        self._lock = threading.Lock()

    def finished(self, result: ImageResult) -> None:
        self.journal.append(result)
        with self._lock:
            self.summary.processed += 1
            self.summary.errors += result.error is not None
            if self.summary.first_result_seconds is None:
                self.summary.first_result_seconds = time.perf_counter() - self.started
                log.info("first result after %.1f s", self.summary.first_result_seconds)
        if self.progress is not None:
            self.progress.update(1)


class DecodeAhead:
    """Decode the first images in a background thread while the command is still starting.

    Opening a SavedModel takes 10 s or more (importing TensorFlow, loading, the first call), with
    one core idle; this fills it, in listing order, with up to `budget` bytes of decoded pixels,
    which the readers then take instead of decoding the image again.
    """

    def __init__(self, images: Sequence[InputImage], budget: int = 256 << 20) -> None:
        self._decoded: dict[str, np.ndarray | ImageReadError] = {}
        self._claimed: set[str] = set()  # images a reader has asked for: the readers are past them
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(images, budget), name="decode-ahead", daemon=True)
        self._thread.start()

    def _run(self, images: Sequence[InputImage], budget: int) -> None:
        used = 0
        for item in images:
            with self._lock:
                if self._stop.is_set() or used >= budget or item.name in self._claimed:
                    return
            if item.error is not None:
                continue
            try:
                pixels: np.ndarray | ImageReadError = read_image(item.path)
                used += pixels.nbytes
            except ImageReadError as error:
                pixels = error
            except Exception:  # noqa: BLE001 - the reader will decode it again and report what it finds
                continue
            with self._lock:
                self._decoded[item.name] = pixels

    def take(self, item: InputImage) -> np.ndarray | None:
        """The image's pixels if decoded ahead (raising its ImageReadError if it had one), else None."""
        with self._lock:
            self._claimed.add(item.name)
            pixels = self._decoded.pop(item.name, None)
        if isinstance(pixels, ImageReadError):
            raise pixels
        return pixels

    def stop(self) -> None:
        """Decode no further (the readers have started) and forget what was never taken."""
        self._stop.set()
        self._thread.join()
        with self._lock:
            self._decoded.clear()


# ---------------------------------------------------------------- run settings and resume


def prepare_output_dir(output_dir: Path, settings: Mapping, resume: bool, overwrite: bool) -> None:
    """Refuse to mix runs: a folder holding another run needs --resume (same settings) or --overwrite."""
    run_json = output_dir / RUN_JSON
    earlier = run_json.is_file() or (output_dir / JOURNAL).is_file()
    if earlier and overwrite:
        for name in (JOURNAL, RUN_JSON, DETECTIONS_CSV, IMAGES_CSV, DETECTIONS_JSON, COCO_IMAGES_JSON, ERRORS_CSV,
                     DETECTIONS_COCO_JSON, LABEL_STUDIO_TASKS_JSON, LABEL_STUDIO_CONFIG_XML):
            (output_dir / name).unlink(missing_ok=True)
        for name in (DRAWN_DIR, VOC_DIR, EXPLAIN_DIR):
            shutil.rmtree(output_dir / name, ignore_errors=True)
    elif earlier and not resume:
        raise DetectError(
            f"{output_dir} holds the outputs of an earlier run; pass --resume to finish it, "
            "--overwrite to replace it, or choose another --output-dir"
        )
    elif earlier and resume and run_json.is_file():
        before = json.loads(run_json.read_text(encoding="utf-8"))
        changed = [k for k in sorted(set(before) | set(settings)) if before.get(k) != settings.get(k)]
        if changed:
            details = "; ".join(f"{k}: {before.get(k)!r} then, {settings.get(k)!r} now" for k in changed)
            raise DetectError(f"--resume: the settings differ from the run in {output_dir} ({details})")
    output_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(output_dir)
    atomic.write_json(run_json, dict(settings))


def _remove_stale_temporaries(output_dir: Path) -> None:
    """A killed run can leave chestdet.core.atomic's hidden `.NAME.*.tmp` files; never under a final name."""
    for pattern in (".*.tmp", f"{DRAWN_DIR}/**/.*.tmp", f"{VOC_DIR}/**/.*.tmp", f"{EXPLAIN_DIR}/**/.*.tmp"):
        for stale in output_dir.glob(pattern):
            stale.unlink(missing_ok=True)


def run_settings(**settings: object) -> dict:
    """JSON-normalised settings, so a resumed run compares equal to the one it continues."""
    return json.loads(json.dumps(settings, default=str))


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))
