"""Export a trained checkpoint: a SavedModel that takes a batch of images, a TFLite model, and a record.

The model is built and restored once; the SavedModel is the OD API's `exporter_lib_v2` module around
it with a batch dimension of `None` instead of 1, the TFLite model the OD API's
`export_tflite_graph_lib_tf2` module around it run through `tf.lite.TFLiteConverter` (float32, or
full-integer INT8 calibrated on training images). Everything is written into a temporary folder
beside the output folder, which is renamed into place only once the whole export has succeeded.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from chestdet.core import atomic, compat
from chestdet.core.contracts import (
    BEST_RECORD,
    CHECKPOINT_DIR,
    EXPORT_RECORD,
    LABEL_MAP_FILE,
    PIPELINE_FILE,
    SAVED_MODEL_DIR,
    TFLITE_FILE,
)
from chestdet.core.errors import ExportError
from chestdet.core.labels import load_label_map
from chestdet.core.resources import DEFAULT_LABEL_MAP, resource
from chestdet.export import calibration
from chestdet.export.modules import batch_module_class
from chestdet.export.tflite import (  # noqa: F401 - TFLITE_NMS and TFLITE_MIN_SCORE are this module's API too
    TFLITE_MIN_SCORE,
    TFLITE_NMS,
    input_quantization,
    tflite_input_scaling,
    tflite_record,
    write_tflite,
)
from chestdet.training.checkpoints import checkpoint_sha256, checkpoint_step
from chestdet.training.pipeline_config import image_size, load_configs

log = logging.getLogger(__name__)

# A from-scratch OD API run saves ckpt-1 before the model has built its variables; such a checkpoint
# holds only bookkeeping (step, save counter, optimizer iterations). A real SSD has hundreds.
MIN_MODEL_VARIABLES = 10


def export_model(
    checkpoint: str | Path,
    pipeline_config: str | Path,
    output_dir: str | Path,
    tflite: bool = True,
    label_map: str | Path | None = None,
    overwrite: bool = False,
    tflite_nms: str = "regular",
    tflite_min_score: float = TFLITE_MIN_SCORE,
    saved_model: bool = True,
    int8: bool = False,
    calibration_records: Sequence[str | Path] | None = None,
    calibration_images: int = calibration.DEFAULT_CALIBRATION_IMAGES,
) -> Path:
    """Export `checkpoint` (a prefix, a model dir or a best-checkpoint record) to `output_dir`.

    Writes saved_model/ (unless `saved_model` is False), model.tflite (unless `tflite` is False),
    label_map.pbtxt, pipeline.config, checkpoint/ (the restored weights, as the OD API's exporter
    writes them) and export.json. The label map defaults to the config's
    train_input_reader.label_map_path, then the project's. `tflite_nms` is "regular" (per-class NMS,
    as the SavedModel) or "fast" (the OD API's class-agnostic TFLite default, which drops overlapping
    findings of other classes); the TFLite NMS keeps boxes scoring at least `tflite_min_score`.
    `int8`: the TFLite model is full-integer INT8, calibrated on the first `calibration_images`
    images of `calibration_records` (default: the config's training records). Returns the output folder.
    """
    output_dir = Path(output_dir)
    _check_choices(tflite_nms, saved_model, tflite, int8)
    prefix = resolve_checkpoint(checkpoint)
    pipeline_config = Path(pipeline_config)
    configs = load_pipeline_config(pipeline_config)
    label_map_path = resolve_label_map(label_map, configs, pipeline_config)
    check_label_map(label_map_path, configs["model"].ssd.num_classes)
    check_checkpoint_has_model(prefix)
    records = calibration.record_files(calibration_records or calibration.train_records(configs)) if int8 else None
    if output_dir.exists() and not overwrite:
        raise ExportError(f"{output_dir}: already exists; choose another --output-dir or pass --overwrite")

    compat.apply()
    started = time.perf_counter()
    timings: dict[str, float] = {}
    with _staging_dir(output_dir) as staging:
        with _timed(timings, "restore", "model (build and restore the checkpoint)"):
            model = restore_into(configs, prefix, staging)
        if saved_model:
            with _timed(timings, "saved_model", "SavedModel"):
                write_saved_model(model, staging)
        if tflite:
            inputs = None if records is None else _calibration(configs, model, records, calibration_images)
            with _timed(timings, "tflite", "INT8 TFLite model" if int8 else "TFLite model"):
                write_tflite(configs, model, staging / TFLITE_FILE, tflite_nms == "regular", tflite_min_score, inputs)
        shutil.copyfile(label_map_path, staging / LABEL_MAP_FILE)
        shutil.copyfile(pipeline_config, staging / PIPELINE_FILE)
        record = export_record(prefix, pipeline_config, label_map_path, configs, timings, saved_model)
        if tflite:
            _add_tflite_record(record, model, configs, staging / TFLITE_FILE, tflite_nms, tflite_min_score, inputs)
        atomic.write_json(staging / EXPORT_RECORD, record)
        _publish(staging, output_dir, overwrite)
    phases = ", ".join(f"{name} {value:.1f} s" for name, value in timings.items())
    log.info("export written to %s in %.1f s (%s)", output_dir, time.perf_counter() - started, phases)
    return output_dir


def _check_choices(tflite_nms: str, saved_model: bool, tflite: bool, int8: bool) -> None:
    if tflite_nms not in TFLITE_NMS:
        raise ExportError(f"unknown TFLite NMS {tflite_nms!r}; expected one of {', '.join(TFLITE_NMS)}")
    if not (saved_model or tflite):
        raise ExportError("nothing to export: both the SavedModel and the TFLite model are turned off")
    if int8 and not tflite:
        raise ExportError("INT8 applies to the TFLite model; it cannot be turned off with int8")


def _add_tflite_record(record: dict, model, configs: dict, tflite_path: Path, nms: str,  # noqa: ANN001
                       min_score: float, calibrated: calibration.CalibrationInputs | None) -> None:
    record["exported"].append(TFLITE_FILE)
    quantization = None
    if calibrated is not None:
        quantization = {**input_quantization(tflite_path), "calibration": calibrated.record()}
    record["tflite"] = tflite_record(model, configs, nms, min_score, quantization)


def _calibration(configs: dict, model, records: Sequence[Path],  # noqa: ANN001 - an OD API DetectionModel
                 count: int) -> calibration.CalibrationInputs:
    """The INT8 converter's calibration inputs: `count` training images, as detect prepares them."""
    height, width = image_size(configs)
    scaling = tflite_input_scaling(model, configs)
    log.info("INT8: calibrating on up to %d images of %s", count, ", ".join(str(r) for r in records))
    return calibration.CalibrationInputs(records, count, height, width, scaling["scale"], scaling["offset"])


def resolve_checkpoint(checkpoint: str | Path) -> Path:
    """Turn a checkpoint prefix, a model dir (-> its latest checkpoint) or a best-checkpoint record
    into a checkpoint prefix whose files exist."""
    path = Path(checkpoint)
    if path.is_file() and path.suffix == ".json":
        return _checkpoint_from_record(path)
    if path.is_dir():
        prefix = _latest_checkpoint(path)
        if (path / BEST_RECORD).is_file():
            log.info("exporting the latest checkpoint, %s; pass %s for the best one",
                     prefix.name, path / BEST_RECORD)
        return prefix
    if path.suffix == ".index" or path.suffix.startswith(".data-"):
        path = path.with_suffix("")
    if Path(f"{path}.index").is_file():
        return path
    raise ExportError(
        f"{checkpoint}: no checkpoint there (expected a model dir, a prefix such as run/ckpt-5 with a "
        f"ckpt-5.index beside it, or a {BEST_RECORD})"
    )


def _latest_checkpoint(model_dir: Path) -> Path:
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(str(model_dir))
    if latest is None:
        raise ExportError(f"{model_dir}: folder holds no checkpoint (no 'checkpoint' file naming one)")
    prefix = Path(latest)
    if not Path(f"{prefix}.index").is_file():
        raise ExportError(f"{model_dir}: its 'checkpoint' file names {prefix}, whose .index file is missing")
    return prefix


def _checkpoint_from_record(record_path: Path) -> Path:
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        named = record["checkpoint"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ExportError(f"{record_path}: not a best-checkpoint record with a 'checkpoint' key ({error})") from error
    prefix = Path(named)
    if not prefix.is_absolute():
        prefix = record_path.parent / prefix
    if not Path(f"{prefix}.index").is_file():
        raise ExportError(f"{record_path}: names checkpoint {named}, whose .index file is missing")
    return prefix


def check_checkpoint_has_model(prefix: Path) -> None:
    """Refuse, with the reason, a checkpoint written before the model's variables existed."""
    import tensorflow as tf

    try:
        names = [name for name, _ in tf.train.list_variables(str(prefix))]
    except (tf.errors.OpError, ValueError) as error:
        raise ExportError(f"{prefix}: cannot read checkpoint ({error.__class__.__name__}: {error})") from error
    model_variables = [name for name in names if name.startswith("model/")]
    if len(model_variables) < MIN_MODEL_VARIABLES:
        raise ExportError(
            f"{prefix}: holds {len(model_variables)} model variables ({len(names)} in all), so it was "
            "saved before the model was built (the OD API writes ckpt-1 before the first step when "
            "training from scratch); export a later checkpoint, or train with --checkpoint-every <= "
            "the number of steps"
        )


def load_pipeline_config(path: Path) -> dict:
    """config_util's dict of configs; only SSD models with a fixed-shape resizer can be exported."""
    from google.protobuf import text_format

    if not path.is_file():
        raise ExportError(f"{path}: pipeline config not found")
    try:
        configs = load_configs(path)
    except text_format.ParseError as error:
        raise ExportError(f"{path}: not a valid pipeline config ({error})") from error
    if configs["model"].WhichOneof("model") != "ssd":
        raise ExportError(f"{path}: model is {configs['model'].WhichOneof('model')!r}; only ssd is supported")
    if configs["model"].ssd.image_resizer.WhichOneof("image_resizer_oneof") != "fixed_shape_resizer":
        raise ExportError(f"{path}: the TFLite export needs a fixed_shape_resizer image resizer")
    return configs


def resolve_label_map(label_map: str | Path | None, configs: dict, pipeline_config: Path) -> Path:
    """The label map given, else the config's train_input_reader.label_map_path (a relative one is
    looked for from the working folder, beside the config, then in the repository), else the project's."""
    if label_map is not None:
        candidates = [Path(label_map)]
    elif configs["train_input_config"].label_map_path:
        named = Path(configs["train_input_config"].label_map_path)
        candidates = [named] if named.is_absolute() else [named, pipeline_config.parent / named, resource(*named.parts)]
    else:
        candidates = [DEFAULT_LABEL_MAP]
    for path in candidates:
        if path.is_file():
            return path.resolve()
    raise ExportError(f"{candidates[0]}: label map not found")


def check_label_map(path: Path, num_classes: int) -> None:
    """The label map must name ids 1..num_classes, the classes the model predicts."""
    ids = sorted(load_label_map(path))  # a malformed one: LabelMapError naming its line and column
    if ids != list(range(1, num_classes + 1)):
        raise ExportError(
            f"{path}: label map ids are {ids}, but the model predicts {num_classes} classes (ids 1..{num_classes})"
        )


def build_restored_model(configs: dict, prefix: Path):  # noqa: ANN201 - an OD API DetectionModel
    """Build the inference model of `configs`, create its variables, then restore `prefix` into them.

    The variables are made first, by one eager pass over a blank image, because a restore deferred
    until tracing creates each variable with the checkpoint's value and shape: a checkpoint of
    another num_classes would then export without a word, with a class head of the wrong width.
    Restoring into existing variables checks every shape. Returns (model, tf.train.Checkpoint, the
    blank image's `predict` outputs).
    """
    import tensorflow as tf
    from object_detection.builders import model_builder

    model = model_builder.build(configs["model"], is_training=False)
    height, width = image_size(configs)
    images, shapes = model.preprocess(tf.zeros([1, height, width, 3]))
    blank = model.predict(images, shapes)
    checkpoint = tf.train.Checkpoint(model=model)
    try:
        checkpoint.restore(str(prefix)).expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0]
        raise ExportError(
            f"{prefix}: checkpoint does not fit the model of the pipeline config ({first_line}); another "
            "num_classes or architecture? Pass the run's own pipeline.config"
        ) from error
    return model, checkpoint, blank


def restore_into(configs: dict, prefix: Path, staging: Path):  # noqa: ANN201 - an OD API DetectionModel
    """Build the model, restore `prefix` into it and save it as staging/checkpoint/ckpt-0."""
    import tensorflow as tf

    model, checkpoint, _ = build_restored_model(configs, prefix)
    tf.train.CheckpointManager(checkpoint, str(staging / CHECKPOINT_DIR), max_to_keep=1).save(checkpoint_number=0)
    return model


def write_saved_model(model, staging: Path) -> None:  # noqa: ANN001 - an OD API DetectionModel
    """The batch inference module around `model`, saved as staging/saved_model."""
    import tensorflow as tf

    module = batch_module_class()(model)
    signature = module.__call__.get_concrete_function()
    tf.saved_model.save(module, str(staging / SAVED_MODEL_DIR), signatures=signature)


SAVED_MODEL_RECORD = {
    "signature": "serving_default",
    "input": {"name": "input_tensor", "dtype": "uint8", "shape": [None, None, None, 3]},
    "outputs": ["detection_boxes", "detection_classes", "detection_scores", "num_detections"],
}


def export_record(prefix: Path, pipeline_config: Path, label_map_path: Path, configs: dict,
                  timings: dict[str, float], saved_model: bool = True) -> dict:
    """export.json but for the TFLite model's part, which the export adds when it wrote one."""
    import tensorflow as tf

    import chestdet

    height, width = image_size(configs)
    record = {
        "checkpoint": str(prefix.resolve()),
        "checkpoint_files": checkpoint_sha256(prefix),
        "step": checkpoint_step(prefix),
        "pipeline_config": str(pipeline_config.resolve()),
        "label_map": str(label_map_path.resolve()),
        "num_classes": configs["model"].ssd.num_classes,
        "input_size": {"height": height, "width": width},
        "exported": [SAVED_MODEL_DIR] if saved_model else [],
        "saved_model": SAVED_MODEL_RECORD,
        "tensorflow": tf.__version__,
        "chestdet": chestdet.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seconds": {name: round(value, 1) for name, value in timings.items()},
    }
    if not saved_model:
        del record["saved_model"]
    return record


@contextmanager
def _timed(timings: dict[str, float], key: str, what: str) -> Iterator[None]:
    log.info("writing the %s ...", what)
    started = time.perf_counter()
    yield
    timings[key] = time.perf_counter() - started
    log.info("%s written in %.1f s", what, timings[key])


@contextmanager
def _staging_dir(output_dir: Path) -> Iterator[Path]:
    """A temporary folder beside `output_dir` (same file system, so the final rename is atomic)."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", suffix=".partial", dir=output_dir.parent))
    staging.chmod(0o755)  # mkdtemp's 0o700 would stay on the published folder
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, output_dir: Path, overwrite: bool) -> None:
    if not output_dir.exists():
        os.rename(staging, output_dir)
        return
    if not overwrite:
        raise ExportError(f"{output_dir}: appeared while exporting; not overwritten")
    retired = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", suffix=".old", dir=output_dir.parent))
    os.rename(output_dir, retired / output_dir.name)
    os.rename(staging, output_dir)
    shutil.rmtree(retired, ignore_errors=True)
