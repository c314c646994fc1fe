"""Batch detection and record writing as Apache Beam pipelines: one machine or a cluster, by the runner.

Both pipelines call the per-item functions the local runners call, so no step is written twice:

    detect:   list the inputs (driver) -> Create -> Reshuffle -> detect.decode -> RunInference over the
              project's backends (detect.infer, per same-shape batch) -> detect.draw -> ToList ->
              detect.write_results: the tables and review files (one worker)
    records:  plan the split (driver, as today) -> one task per shard file -> Create -> Reshuffle ->
              records.write_shard (each shard on one worker, tf.io.TFRecordWriter) -> results -> reports

Writing whole shards keeps each worker's memory to one image and needs no shuffle of the encoded
images; the shards are byte for byte the local path's. Their parallelism is the number of shards
(`--shards`).

With no `--runner`, the options select Beam's FnApiRunner, in-process and offline, with one worker
per CPU. (Beam's `DirectRunner` first tries the Prism runner, which downloads a binary.) Detection
runs it in `multi_threading` mode: decoding, inference and encoding release the GIL, as the local
runner's threads rely on, while each `multi_processing` worker must import TensorFlow and open the
model itself first, seconds per worker. Records run it in `multi_processing` mode: serialising
with the pure-Python protobuf holds the GIL.

Workers read inputs and write outputs by path, so on a cluster every path must be on a filesystem
every worker mounts.

Importing this module imports apache_beam; nothing else in the package does.
"""

from __future__ import annotations

import logging
import pickle
import shlex
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from chestdet.core import atomic, compat
from chestdet.core.detections import ImageResult
from chestdet.core.errors import ChestdetError
from chestdet.core.system import available_cpus
from chestdet.data.records import (
    ImageJob,
    PreparedImage,
    RecordOptions,
    ShardTask,
    WrittenShards,
    write_records,
    write_shard,
)
from chestdet.detection.detect import (
    DetectOptions,
    Loaded,
    OutputLayout,
    RunSummary,
    batches,
    decode,
    draw,
    infer,
    write_results,
)
from chestdet.detection.inputs import InputImage
from chestdet.export.backends import Backend, ModelOutput


class BeamError(ChestdetError):
    """Bad pipeline options, or Apache Beam missing."""


try:
    import apache_beam as beam
    from apache_beam.metrics.metric import Metrics, MetricsFilter
    from apache_beam.ml.inference.base import ModelHandler, RunInference
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from apache_beam.utils.shared import Shared
except ImportError as error:  # pragma: no cover - exercised only where apache-beam is not installed
    raise BeamError(f"the Beam pipelines need apache-beam ({error}); "
                    "install it with: pip install 'apache-beam[tensorflow]==2.71.0'") from error

log = logging.getLogger("chestdet.beam")

NAMESPACE = "chestdet"
PROGRESS_EVERY = 100  # images drawn between two progress lines of a worker process
IN_PROCESS_RUNNER = "FnApiRunner"
DETECT_MODE = "multi_threading"
RECORDS_MODE = "multi_processing"
IN_PROCESS_WORKER_LOG_LEVEL = "ERROR"  # multi_processing workers log on the user's console
# Runners that first try Prism, which downloads a binary at run time.
PRISM_FIRST = {"directrunner", "switchingdirectrunner", "prismrunner"}

# Counters of each stage, in pipeline order: (stage, counter names).
DETECT_STAGES = (("decode", ("images", "unreadable")), ("infer", ("images", "batches")),
                 ("draw", ("images", "errors")), ("tables", ("images",)))
RECORD_STAGES = (("records", ("images", "examples", "rejected", "shards")),)


# ---------------------------------------------------------------- options


def pipeline_options(text: str | None = None, mode: str = DETECT_MODE) -> PipelineOptions:
    """Beam's pipeline options from one shell-quoted string (`--beam-options`).

    With no `--runner`, the in-process FnApiRunner in `mode` with one worker per CPU;
    `--direct_running_mode` and `--direct_num_workers` given in `text` override those two.
    """
    try:
        argv = shlex.split(text or "")
    except ValueError as error:
        raise BeamError(f"cannot split the Beam options {text!r}: {error}") from error
    if not _has_flag(argv, "--runner"):
        argv = [f"--runner={IN_PROCESS_RUNNER}", *argv]
        if not _has_flag(argv, "--direct_running_mode"):
            argv.append(f"--direct_running_mode={mode}")
        if not _has_flag(argv, "--direct_num_workers"):
            argv.append(f"--direct_num_workers={available_cpus()}")
        if not _has_flag(argv, "--default_sdk_harness_log_level"):
            argv.append(f"--default_sdk_harness_log_level={IN_PROCESS_WORKER_LOG_LEVEL}")
    options = PipelineOptions(argv)
    runner = options.view_as(StandardOptions).runner
    if str(runner).lower() in PRISM_FIRST:
        log.warning("--runner=%s first tries the Prism runner, which downloads a binary; "
                    "leave --runner out for the in-process %s", runner, IN_PROCESS_RUNNER)
    return options


def _has_flag(argv: Sequence[str], flag: str) -> bool:
    return any(arg == flag or arg.startswith(flag + "=") for arg in argv)


def describe(options: PipelineOptions) -> str:
    """The runner and, for the in-process one, its mode and workers: for the log."""
    from apache_beam.options.pipeline_options import DirectOptions

    runner = options.view_as(StandardOptions).runner
    if str(runner).lower() != IN_PROCESS_RUNNER.lower():
        return str(runner)
    direct = options.view_as(DirectOptions)
    return f"{runner} ({direct.direct_running_mode}, {direct.direct_num_workers or 1} worker(s))"


def stage_counts(result: beam.runners.runner.PipelineResult) -> dict[str, int]:
    """The pipeline's chestdet counters, `stage.name` -> total over workers."""
    query = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    totals: Counter = Counter()
    for counter in query["counters"]:
        totals[counter.key.metric.name] += counter.committed or 0
    return dict(totals)


def log_stage_counts(counts: Mapping[str, int], stages: Sequence[tuple[str, Sequence[str]]]) -> None:
    for stage, names in stages:
        log.info("%s: %s", stage, ", ".join(f"{counts.get(f'{stage}.{name}', 0)} {name}" for name in names))


def _counter(name: str):  # noqa: ANN202 - a Beam counter
    return Metrics.counter(NAMESPACE, name)


def make_pipeline(options: PipelineOptions) -> beam.Pipeline:
    """A pipeline on the options' runner. The in-process FnApiRunner is made here, handed the options for
    its workers as Beam's DirectRunner does (by name it gives them none, so they log everything at INFO)."""
    if str(options.view_as(StandardOptions).runner).lower() != IN_PROCESS_RUNNER.lower():
        return beam.Pipeline(options=options)
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options(drop_default=True))
    provision = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    return beam.Pipeline(runner=fn_runner.FnApiRunner(provision_info=provision), options=options)


def _run(pipeline: beam.Pipeline) -> dict[str, int]:
    with compat.native_output_filtered(), compat.beam_workers_start_from_any_path():
        result = pipeline.run()  # filtered: the worker processes' import-time warnings
        result.wait_until_finish()
    return stage_counts(result)


# ---------------------------------------------------------------- detection


class BackendModelHandler(ModelHandler):
    """RunInference over one of the project's backends (`open_model()`, e.g. a partial of open_backend).

    Each worker process opens the backend once (RunInference shares the loaded model between the
    process's threads, which call it at once as the local runner's threads do; the decode step takes
    the same instance through `shared` for its `prepare`). The model is not shared across processes:
    each worker process runs its own interpreters or graph. A batch is split into runs of one image
    shape.
    """

    def __init__(self, open_model: Callable[[], Backend], max_batch: int, shared: Shared) -> None:
        super().__init__()
        self._open_model, self._max_batch, self._shared = open_model, max_batch, shared

    def load_model(self) -> Backend:
        backend = self._shared.acquire(self._open_model)
        backend.load()
        return backend

    def run_inference(
        self, batch: Sequence[Loaded], model: Backend, inference_args: dict | None = None
    ) -> list[tuple[Loaded, ModelOutput | None]]:
        images, runs = _counter("infer.images"), _counter("infer.batches")
        pairs = []
        for run in batches(batch, model.max_batch):
            pairs.extend(zip(run, infer(model, run), strict=True))
            if run[0].error is None:  # an unreadable image passes alone, uninferred
                runs.inc()
                images.inc(len(run))
        return pairs

    def batch_elements_kwargs(self) -> Mapping[str, int]:
        return {"min_batch_size": 1, "max_batch_size": self._max_batch}

    def get_num_bytes(self, batch: Sequence[Loaded]) -> int:
        """The prepared inputs' size (Beam's default pickles the whole batch to measure it)."""
        return sum(item.prepared.nbytes for item in batch if item.prepared is not None)


class _Decode(beam.DoFn):
    def __init__(self, open_model: Callable[[], Backend], shared: Shared) -> None:
        self._open_model, self._shared = open_model, shared

    def setup(self) -> None:
        self._backend = self._shared.acquire(self._open_model)
        self._images, self._unreadable = _counter("decode.images"), _counter("decode.unreadable")

    def process(self, item: InputImage) -> Iterator[Loaded]:
        loaded = decode(item, self._backend.prepare)
        self._images.inc()
        if loaded.error is not None:
            self._unreadable.inc()
        yield loaded


class _Progress:
    """The images one process has drawn, logged every PROGRESS_EVERY; its worker threads share one."""

    def __init__(self, total: int) -> None:
        self._total, self._done, self._lock = total, 0, threading.Lock()

    def one_more(self) -> None:
        with self._lock:
            self._done += 1
            done = self._done
        if done % PROGRESS_EVERY == 0 or done == self._total:
            log.info("drawn %d of %d images", done, self._total)


class _Draw(beam.DoFn):
    def __init__(self, layout: OutputLayout, class_names: Mapping[int, str], options: DetectOptions,
                 total: int) -> None:
        self._layout, self._class_names, self._options, self._total = layout, dict(class_names), options, total
        self._shared = Shared()

    def setup(self) -> None:
        self._images, self._errors = _counter("draw.images"), _counter("draw.errors")
        self._progress = self._shared.acquire(lambda: _Progress(self._total))

    def process(self, pair: tuple[Loaded, ModelOutput | None]) -> Iterator[ImageResult]:
        result = draw(*pair, self._layout, self._class_names, self._options)
        self._images.inc()
        if result.error is not None:
            self._errors.inc()
        self._progress.one_more()
        yield result


def _write_tables(results: list[ImageResult], output_dir: Path, images: Sequence[InputImage],
                  class_names: Mapping[int, str], options: DetectOptions) -> int:
    write_results(output_dir, images, {result.image: result for result in results}, class_names, options)
    _counter("tables.images").inc(len(results))
    return len(results)


def build_detect_pipeline(
    pipeline: beam.Pipeline, images: Sequence[InputImage], open_model: Callable[[], Backend], max_batch: int,
    class_names: Mapping[int, str], output_dir: Path, options: DetectOptions,
) -> None:
    """Add detection's transforms to `pipeline`: images in, drawn images, VOC XML and tables out."""
    layout = OutputLayout(output_dir, images, options.image_format)
    shared = Shared()
    results = (
        pipeline
        | "List" >> beam.Create(list(images))
        | "Spread" >> beam.Reshuffle()
        | "Decode" >> beam.ParDo(_Decode(open_model, shared))
        | "Infer" >> RunInference(BackendModelHandler(open_model, max_batch, shared))
        | "Draw" >> beam.ParDo(_Draw(layout, class_names, options, len(images)))
    )
    _ = (
        results
        | "Collect" >> beam.combiners.ToList()
        | "Tables" >> beam.Map(_write_tables, output_dir, list(images), dict(class_names), options)
    )


def detect_with_beam(
    images: Sequence[InputImage], open_model: Callable[[], Backend], class_names: Mapping[int, str],
    output_dir: Path, options: DetectOptions, beam_options: str | None = None, max_batch: int = 1,
    started: float | None = None,
) -> RunSummary:
    """detect_images' outputs through a Beam pipeline (see the module doc); the summary from its counters.

    `open_model` must be picklable (a worker calls it to open its backend); `max_batch` is the most
    images RunInference hands the backend at once.
    """
    started = time.perf_counter() if started is None else started
    pipeline_opts = pipeline_options(beam_options)
    log.info("Beam pipeline on %s", describe(pipeline_opts))
    pipeline = make_pipeline(pipeline_opts)
    build_detect_pipeline(pipeline, images, open_model, max(1, max_batch), class_names, output_dir, options)
    counts = _run(pipeline)
    log_stage_counts(counts, DETECT_STAGES)
    return RunSummary(processed=counts.get("draw.images", 0), errors=counts.get("draw.errors", 0),
                      seconds=time.perf_counter() - started)


# ---------------------------------------------------------------- records


class _WriteShard(beam.DoFn):
    """records.write_shard on one shard; what happened to its images goes to a file the driver reads."""

    def __init__(self, options: RecordOptions, results_dir: Path) -> None:
        self._options, self._results_dir = options, results_dir

    def setup(self) -> None:
        self._images, self._examples = _counter("records.images"), _counter("records.examples")
        self._rejected, self._shards = _counter("records.rejected"), _counter("records.shards")

    def process(self, task: ShardTask) -> Iterator[str]:
        results = write_shard(task, self._options, self._images.inc)
        self._examples.inc(sum(result.example is not None for result in results))
        self._rejected.inc(sum(result.example is None for result in results))
        self._shards.inc()
        atomic.write_bytes(_results_path(self._results_dir, task), pickle.dumps(results))
        yield task.path.name


def _results_path(results_dir: Path, task: ShardTask) -> Path:
    return results_dir / f"{task.path.name}.pickle"


def _run_shard_pipeline(
    tasks: Sequence[ShardTask], options: RecordOptions, beam_options: str | None, results_root: Path,
) -> Iterable[tuple[ShardTask, list[PreparedImage]]]:
    pipeline_opts = pipeline_options(beam_options, RECORDS_MODE)
    log.info("Beam pipeline on %s: %d shard(s)", describe(pipeline_opts), len(tasks))
    results_dir = Path(tempfile.mkdtemp(prefix=".beam-results-", dir=results_root))
    try:
        pipeline = make_pipeline(pipeline_opts)
        _ = (
            pipeline
            | "Shards" >> beam.Create(list(tasks))
            | "Spread" >> beam.Reshuffle()
            | "Write" >> beam.ParDo(_WriteShard(options, results_dir))
        )
        log_stage_counts(_run(pipeline), RECORD_STAGES)
        return [(task, pickle.loads(_results_path(results_dir, task).read_bytes())) for task in tasks]
    finally:
        shutil.rmtree(results_dir, ignore_errors=True)


def write_records_with_beam(
    jobs: Sequence[ImageJob], output_dir: Path, shards: int | None, options: RecordOptions,
    beam_options: str | None = None,
) -> tuple[WrittenShards, list[PreparedImage]]:
    """records.write_records with the shards written by a Beam pipeline: the same files and results."""
    output_dir.mkdir(parents=True, exist_ok=True)

    def run(tasks: Sequence[ShardTask], record_options: RecordOptions) -> Iterable:
        return _run_shard_pipeline(tasks, record_options, beam_options, output_dir)

    return write_records(jobs, output_dir, shards, options, run_tasks=run)
