"""Batch detection: images in; drawn copies, detections.csv/json, images.csv, VOC XML and errors out.

Three stages overlap: reader threads decode and prepare images (bounded look-ahead, so memory does
not grow with the number of images) while the backend loads and infers (in as many threads as it
can use at once); writer threads draw, encode and write. Every finished image is appended to a
journal after its files are in place, so a killed run resumes where it stopped. The final tables hold
exactly what the journal holds (its floats round-trip through JSON unchanged, rounded as printed
before either sees them), which is why a resumed run's outputs equal an uninterrupted one's.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Protocol

import cv2
import numpy as np
from lxml import etree

from chestdet import atomic
from chestdet.backends import Backend, Detection, ModelOutput, to_pixels
from chestdet.drawing import render
from chestdet.imaging import IMAGE_SUFFIXES, ImageReadError, read_image

log = logging.getLogger("chestdet.detect")

DETECTIONS_CSV = "detections.csv"
IMAGES_CSV = "images.csv"
DETECTIONS_JSON = "detections.json"
COCO_IMAGES_JSON = "coco_images.json"
ERRORS_CSV = "errors.csv"
RUN_JSON = "run.json"
JOURNAL = ".journal.jsonl"
DRAWN_DIR = "drawn"
VOC_DIR = "voc"

DETECTION_COLUMNS = ("image", "width", "height", "class_id", "class_name", "score", "xmin", "ymin", "xmax", "ymax")
IMAGE_COLUMNS = ("image", "path", "width", "height", "detections")
ERROR_COLUMNS = ("image", "reason")


class DetectError(Exception):
    """A problem with the run's inputs or settings that the user can fix."""


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class InputImage:
    name: str  # posix path relative to the input folder (absolute only for images on different drives)
    path: Path
    image_id: int  # 1-based position in the listing; the COCO image id


def list_inputs(spec: str | Path, exclude: Path | None = None) -> list[InputImage]:
    """A folder (recursive, image suffixes only), one image, a text file of paths, or a glob.

    Text lists take one path per line (relative to the list's folder; blank lines and `#` comments
    skipped). Images are named by their path relative to the list's folder, or, when some lie
    outside it, to the deepest folder holding them all. A path listed twice is processed once.
    """
    spec_path = Path(spec)
    if spec_path.is_dir():
        root = spec_path
        paths = sorted(
            (p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
            key=lambda p: p.relative_to(root).as_posix(),
        )
    elif spec_path.is_file() and spec_path.suffix.lower() in IMAGE_SUFFIXES:
        root, paths = spec_path.parent, [spec_path]
    elif spec_path.is_file():
        paths = _read_list(spec_path)
        root = _common_root(spec_path.parent, paths)
    elif glob.has_magic(str(spec)):
        root = _glob_root(str(spec))
        paths = sorted(Path(p) for p in glob.glob(str(spec), recursive=True) if Path(p).is_file())
    else:
        raise DetectError(f"--input {spec}: no such folder, file or matching glob")
    if exclude is not None:
        excluded = Path(os.path.abspath(exclude))
        paths = [p for p in paths if excluded not in Path(os.path.abspath(p)).parents]
    return _number(root, paths)


def _read_list(list_path: Path) -> list[Path]:
    lines = list_path.read_text(encoding="utf-8-sig").splitlines()
    entries = (line.strip() for line in lines)
    return [
        p if p.is_absolute() else list_path.parent / p
        for p in (Path(e) for e in entries if e and not e.startswith("#"))
    ]


def _common_root(list_folder: Path, paths: Sequence[Path]) -> Path:
    """The list's folder when every image lies under it, else the deepest folder holding them all."""
    folder = os.path.abspath(list_folder)
    parents = {os.path.dirname(os.path.abspath(p)) for p in paths}
    if not parents or all(os.path.commonpath([folder, parent]) == folder for parent in parents):
        return list_folder
    return Path(os.path.commonpath(parents))


def _glob_root(pattern: str) -> Path:
    parts = []
    for part in Path(pattern).parts:
        if glob.has_magic(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def _number(root: Path, paths: Iterable[Path]) -> list[InputImage]:
    """Name and number the images; symlinks keep their own names (two links are two images)."""
    root = Path(os.path.abspath(root))
    seen: set[Path] = set()
    images: list[InputImage] = []
    duplicates = 0
    for path in paths:
        absolute = Path(os.path.abspath(path))
        if absolute in seen:
            duplicates += 1
            continue
        seen.add(absolute)
        try:
            name = absolute.relative_to(root).as_posix()
        except ValueError:
            name = absolute.as_posix()
        images.append(InputImage(name, path, len(images) + 1))
    if duplicates:
        log.warning("skipped %d paths listed more than once", duplicates)
    return images


# ---------------------------------------------------------------- thresholds


@dataclass(frozen=True)
class Thresholds:
    """Minimum score for drawing and VOC XML: one default, optionally per class id."""

    default: float = 0.3
    per_class: Mapping[int, float] = field(default_factory=dict)

    def for_class(self, class_id: int) -> float:
        return self.per_class.get(class_id, self.default)

    def as_dict(self) -> dict:
        return {"default": self.default, "per_class": {str(k): v for k, v in sorted(self.per_class.items())}}


def load_thresholds(path: Path, default: float, class_names: Mapping[int, str]) -> Thresholds:
    """A CSV with columns `class,min_score` (class name as in the label map, any case)."""
    ids = {name.lower(): class_id for class_id, name in class_names.items()}
    per_class: dict[int, float] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or {"class", "min_score"} - set(reader.fieldnames):
                raise DetectError(f"{path}: expected the columns class,min_score; found {reader.fieldnames}")
            for row_number, row in enumerate(reader, start=2):
                per_class[_threshold_class(path, row_number, row["class"], ids)] = _threshold_value(
                    path, row_number, row["min_score"]
                )
    except OSError as error:
        raise DetectError(f"{path}: cannot read the thresholds file ({error.strerror})") from error
    return Thresholds(default, per_class)


def _threshold_class(path: Path, row: int, name: str | None, ids: Mapping[str, int]) -> int:
    key = (name or "").strip().lower()
    if key not in ids:
        raise DetectError(f"{path}: row {row}: unknown class {name!r}; the label map has {', '.join(ids)}")
    return ids[key]


def _threshold_value(path: Path, row: int, text: str | None) -> float:
    try:
        value = float(text or "")
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise DetectError(f"{path}: row {row}: min_score {text!r} is not a number between 0 and 1")
    return value


# ---------------------------------------------------------------- per-image results


@dataclass(frozen=True)
class ImageResult:
    image: str
    path: str
    width: int = 0
    height: int = 0
    detections: tuple[Detection, ...] = ()
    error: str | None = None

    def to_json(self) -> str:
        if self.error is not None:
            return json.dumps({"image": self.image, "path": self.path, "error": self.error})
        rows = [[d.class_id, d.score, d.xmin, d.ymin, d.xmax, d.ymax] for d in self.detections]
        return json.dumps(
            {"image": self.image, "path": self.path, "width": self.width, "height": self.height, "detections": rows}
        )

    @classmethod
    def from_json(cls, text: str) -> ImageResult:
        data = json.loads(text)
        if "error" in data:
            return cls(data["image"], data["path"], error=data["error"])
        detections = tuple(Detection(int(r[0]), *(float(v) for v in r[1:])) for r in data["detections"])
        return cls(data["image"], data["path"], data["width"], data["height"], detections)


def as_printed(detection: Detection) -> Detection:
    """The detection as the tables print it: score to 6 decimals, pixel corners to 2."""
    d = detection
    return Detection(d.class_id, round(d.score, 6), round(d.xmin, 2), round(d.ymin, 2), round(d.xmax, 2),
                     round(d.ymax, 2))


class Journal:
    """Append-only record of finished images; a line is written only after the image's files exist.

    A kill can cut the last line short; reading drops it and truncates the file back to whole lines.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._handle = None

    def read(self) -> dict[str, ImageResult]:
        if not self.path.is_file():
            return {}
        results: dict[str, ImageResult] = {}
        good_bytes = 0
        with open(self.path, "rb") as handle:
            for raw in handle:
                if not raw.endswith(b"\n"):
                    break
                try:
                    result = ImageResult.from_json(raw.decode("utf-8"))
                except (ValueError, KeyError, IndexError, TypeError):
                    break
                results[result.image] = result
                good_bytes += len(raw)
        if good_bytes != self.path.stat().st_size:
            log.warning("%s: dropped an incomplete last entry left by an interrupted run", self.path)
            with open(self.path, "r+b") as handle:
                handle.truncate(good_bytes)
        return results

    def append(self, result: ImageResult) -> None:
        with self._lock:
            if self._handle is None:
                self._handle = open(self.path, "a", encoding="utf-8")
            self._handle.write(result.to_json() + "\n")
            self._handle.flush()

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None


# ---------------------------------------------------------------- the run


class Progress(Protocol):
    """What detect_images needs of a tqdm bar."""

    def reset(self, total: int | None = None) -> None: ...

    def update(self, n: int = 1) -> bool | None: ...


@dataclass(frozen=True)
class DetectOptions:
    thresholds: Thresholds = Thresholds()
    keep_score: float = 0.01
    max_boxes: int = 100
    image_format: str = "jpg"
    voc_xml: bool = False
    workers: int = 2
    prefetch: int = 8


@dataclass
class RunSummary:
    processed: int = 0
    errors: int = 0
    skipped: int = 0
    seconds: float = 0.0
    first_result_seconds: float | None = None

    @property
    def rate(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def last_line(self) -> str:
        return f"{self.processed} images in {self.seconds:.1f} s = {self.rate:.2f} images/s; {self.errors} errors"


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

    def drawn(self, image: str) -> Path:
        return self.root / DRAWN_DIR / f"{self._relative(image)}.{self.image_format}"

    def voc(self, image: str) -> Path:
        return self.root / VOC_DIR / f"{self._relative(image)}.xml"

    @property
    def journal(self) -> Path:
        return self.root / JOURNAL


@dataclass
class _Loaded:
    item: InputImage
    pixels: np.ndarray | None = None
    prepared: np.ndarray | None = None
    error: str | None = None


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
    """Run `backend` over the images not yet in the output folder's journal, then write the tables.

    `started` is the perf_counter time the command began (the summary's clock); `progress` (a tqdm
    bar) is reset to the number of images left, then advanced once per finished image. `ahead`
    holds images decoded while the command started; it is stopped when the run ends.
    """
    started = time.perf_counter() if started is None else started
    layout = OutputLayout(output_dir, images, options.image_format)
    journal = Journal(layout.journal)
    done = journal.read()
    todo = [i for i in images if i.name not in done]
    summary = RunSummary(skipped=len(images) - len(todo))
    if summary.skipped:
        log.info("resuming: %d of %d images already done", summary.skipped, len(images))
    if progress is not None:
        progress.reset(total=len(todo))
    lock = threading.Lock()
    results: dict[str, ImageResult] = {}

    def finished(result: ImageResult) -> None:
        journal.append(result)
        with lock:
            results[result.image] = result
            summary.processed += 1
            summary.errors += result.error is not None
            if summary.first_result_seconds is None:
                summary.first_result_seconds = time.perf_counter() - started
                log.info("first result after %.1f s", summary.first_result_seconds)
        if progress is not None:
            progress.update(1)

    def write(loaded: _Loaded, output: ModelOutput | None) -> None:
        finished(_write_outputs(loaded, output, layout, class_names, options))

    def infer(batch: list[_Loaded]) -> list[ModelOutput | None]:
        return backend.infer([b.prepared for b in batch]) if batch[0].error is None else [None]

    try:
        with ThreadPoolExecutor(options.workers, "read") as readers, ThreadPoolExecutor(
            backend.concurrency, "infer"
        ) as inferrers, ThreadPoolExecutor(options.workers, "write") as writers:
            loaded_images = _OrderedPrefetch(readers, lambda i: _load(i, backend, ahead), todo, options.prefetch)
            if todo:
                backend.load()
            inferring: deque[tuple[list[_Loaded], Future]] = deque()
            writing: deque[Future] = deque()

            def hand_over_inferred(keep: int) -> None:
                while inferring and (inferring[0][1].done() or len(inferring) > keep):
                    batch, outputs = inferring.popleft()
                    for loaded, output in zip(batch, outputs.result(), strict=True):
                        writing.append(writers.submit(write, loaded, output))
                while writing and (writing[0].done() or len(writing) > options.prefetch):
                    writing.popleft().result()

            for batch in _batches(loaded_images, backend.max_batch):
                inferring.append((batch, inferrers.submit(infer, batch)))
                hand_over_inferred(keep=backend.concurrency)
            hand_over_inferred(keep=0)
            while writing:
                writing.popleft().result()
    finally:
        journal.close()
        if ahead is not None:
            ahead.stop()
    write_tables(output_dir, images, {**done, **results}, class_names)
    summary.seconds = time.perf_counter() - started
    return summary


class _OrderedPrefetch:
    """Run fn over items in a pool, at most `depth` ahead of the consumer, yielding in order.

    The first `depth` items are submitted on construction, so decoding starts before iteration
    (while the model loads).
    """

    def __init__(self, pool: ThreadPoolExecutor, fn: Callable, items: Sequence, depth: int) -> None:
        self._pool, self._fn, self._items = pool, fn, iter(items)
        self._pending: deque[Future] = deque()
        for _ in range(max(1, depth)):
            self._submit_next()

    def _submit_next(self) -> None:
        item = next(self._items, None)
        if item is not None:
            self._pending.append(self._pool.submit(self._fn, item))

    def __iter__(self) -> Iterator:
        while self._pending:
            future = self._pending.popleft()
            self._submit_next()
            yield future.result()


class DecodeAhead:
    """Decode the first images in a background thread while the command is still starting.

    Importing TensorFlow and opening the model take about 3 s (the SavedModel, 20 s or more), with
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


def _load(item: InputImage, backend: Backend, ahead: DecodeAhead | None = None) -> _Loaded:
    try:
        pixels = ahead.take(item) if ahead is not None else None
        if pixels is None:
            pixels = read_image(item.path)
        return _Loaded(item, pixels, backend.prepare(pixels))
    except ImageReadError as error:
        return _Loaded(item, error=error.reason)
    except (cv2.error, ValueError, MemoryError) as error:
        return _Loaded(item, error=f"cannot decode ({type(error).__name__}: {error})")


def _batches(loaded: Iterable[_Loaded], max_batch: int) -> Iterator[list[_Loaded]]:
    """Consecutive readable images of one shape, up to max_batch; each unreadable one alone."""
    batch: list[_Loaded] = []
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


def _write_outputs(
    loaded: _Loaded,
    output: ModelOutput | None,
    layout: OutputLayout,
    class_names: Mapping[int, str],
    options: DetectOptions,
) -> ImageResult:
    item = loaded.item
    if loaded.error is not None or output is None:
        return ImageResult(item.name, str(item.path), error=loaded.error)
    height, width = loaded.pixels.shape[:2]
    everything = to_pixels(output, width, height)
    kept = tuple(as_printed(d) for d in everything if d.score >= options.keep_score)
    shown = [d for d in everything if d.score >= options.thresholds.for_class(d.class_id)][: options.max_boxes]
    atomic.write_bytes(layout.drawn(item.name), render(loaded.pixels, shown, class_names, options.image_format))
    if options.voc_xml:
        depth = 1 if loaded.pixels.ndim == 2 else 3
        xml = voc_xml(item.path, width, height, depth, shown, class_names)
        atomic.write_bytes(layout.voc(item.name), xml)
    return ImageResult(item.name, str(item.path), width, height, kept)


# ---------------------------------------------------------------- outputs


def voc_xml(
    image_path: Path, width: int, height: int, depth: int,
    detections: Sequence[Detection], class_names: Mapping[int, str],
) -> bytes:
    """A Pascal VOC annotation as labelImg writes it (integer pixel corners, not verified)."""
    root = etree.Element("annotation")
    _sub(root, "folder", image_path.resolve().parent.name)
    _sub(root, "filename", image_path.name)
    _sub(root, "path", str(image_path.resolve()))
    _sub(_sub(root, "source"), "database", "chestdet detections")
    size = _sub(root, "size")
    for tag, value in (("width", width), ("height", height), ("depth", depth)):
        _sub(size, tag, str(value))
    _sub(root, "segmented", "0")
    for det in detections:
        xmin, xmax = (int(np.clip(round(v), 0, width)) for v in (det.xmin, det.xmax))
        ymin, ymax = (int(np.clip(round(v), 0, height)) for v in (det.ymin, det.ymax))
        obj = _sub(root, "object")
        _sub(obj, "name", class_names.get(det.class_id, f"class {det.class_id}"))
        _sub(obj, "pose", "Unspecified")
        touches_edge = xmin <= 1 or ymin <= 1 or xmax >= width or ymax >= height
        _sub(obj, "truncated", "1" if touches_edge else "0")
        _sub(obj, "difficult", "0")
        box = _sub(obj, "bndbox")
        for tag, value in (("xmin", xmin), ("ymin", ymin), ("xmax", xmax), ("ymax", ymax)):
            _sub(box, tag, str(value))
    return etree.tostring(root, pretty_print=True, encoding="utf-8")


def _sub(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
    element = etree.SubElement(parent, tag)
    if text is not None:
        element.text = text
    return element


def write_tables(
    output_dir: Path, images: Sequence[InputImage], results: Mapping[str, ImageResult],
    class_names: Mapping[int, str],
) -> None:
    """detections.csv, images.csv, detections.json, coco_images.json and errors.csv, in listing order."""
    ordered = [(i, results[i.name]) for i in images if i.name in results]
    readable = [(i, r) for i, r in ordered if r.error is None]
    with atomic.atomic_open(output_dir / DETECTIONS_CSV, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(DETECTION_COLUMNS)
        for _, r in readable:
            for d in r.detections:
                name = class_names.get(d.class_id, f"class {d.class_id}")
                writer.writerow([r.image, r.width, r.height, d.class_id, name, d.score, d.xmin, d.ymin, d.xmax, d.ymax])
    with atomic.atomic_open(output_dir / IMAGES_CSV, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(IMAGE_COLUMNS)
        writer.writerows([r.image, r.path, r.width, r.height, len(r.detections)] for _, r in readable)
    with atomic.atomic_open(output_dir / ERRORS_CSV, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(ERROR_COLUMNS)
        writer.writerows([r.image, r.error] for _, r in ordered if r.error is not None)
    coco_results = [
        {
            "image_id": i.image_id,
            "category_id": d.class_id,
            "bbox": [d.xmin, d.ymin, round(d.xmax - d.xmin, 2), round(d.ymax - d.ymin, 2)],
            "score": d.score,
        }
        for i, r in readable
        for d in r.detections
    ]
    atomic.write_text(output_dir / DETECTIONS_JSON, json.dumps(coco_results) + "\n")
    atomic.write_json(
        output_dir / COCO_IMAGES_JSON,
        {
            "images": [
                {"id": i.image_id, "file_name": r.image, "width": r.width, "height": r.height} for i, r in readable
            ],
            "categories": [{"id": k, "name": v} for k, v in sorted(class_names.items())],
        },
    )


# ---------------------------------------------------------------- run settings and resume


def prepare_output_dir(output_dir: Path, settings: Mapping, resume: bool, overwrite: bool) -> None:
    """Refuse to mix runs: a folder holding another run needs --resume (same settings) or --overwrite."""
    run_json = output_dir / RUN_JSON
    earlier = run_json.is_file() or (output_dir / JOURNAL).is_file()
    if earlier and overwrite:
        for name in (JOURNAL, RUN_JSON, DETECTIONS_CSV, IMAGES_CSV, DETECTIONS_JSON, COCO_IMAGES_JSON, ERRORS_CSV):
            (output_dir / name).unlink(missing_ok=True)
        for name in (DRAWN_DIR, VOC_DIR):
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
    """A killed run can leave chestdet.atomic's hidden `.NAME.*.tmp` files; never under a final name."""
    for pattern in (".*.tmp", f"{DRAWN_DIR}/**/.*.tmp", f"{VOC_DIR}/**/.*.tmp"):
        for stale in output_dir.glob(pattern):
            stale.unlink(missing_ok=True)


def run_settings(**settings: object) -> dict:
    """JSON-normalised settings, so a resumed run compares equal to the one it continues."""
    return json.loads(json.dumps(settings, default=str))


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))
