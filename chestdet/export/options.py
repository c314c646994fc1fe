"""What to export and where: `ExportOptions`, and `export`, which fills in the run folder's defaults,
checks the options and runs chestdet.export.exporter.export_model.

    from chestdet.export.options import ExportOptions, export
    export(ExportOptions(checkpoint=Path("workspace/runs/nih/best.json")))   # -> workspace/runs/nih/export
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from chestdet.core.contracts import PIPELINE_FILE, RUN_EXPORT_DIR
from chestdet.core.errors import ExportError
from chestdet.export import calibration, exporter

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """export_model's settings. `checkpoint` is a run folder (its latest checkpoint), a prefix such as
    run/ckpt-12, or a run's best.json; `config` defaults to the pipeline.config of the checkpoint's run
    folder, `output_dir` to <run folder>/export, `label_map` to the config's label_map_path."""

    checkpoint: Path
    config: Path | None = None
    output_dir: Path | None = None
    tflite: bool = True
    label_map: Path | None = None
    overwrite: bool = False
    tflite_nms: str = "regular"
    tflite_min_score: float = exporter.TFLITE_MIN_SCORE
    saved_model: bool = True
    int8: bool = False
    calibration_records: tuple[str | Path, ...] | None = None
    calibration_images: int = calibration.DEFAULT_CALIBRATION_IMAGES


def export(options: ExportOptions) -> Path:
    """Export as `options` ask; returns the export folder. Raises ExportError when it cannot."""
    if not 0.0 <= options.tflite_min_score < 1.0:
        raise ExportError(f"--tflite-min-score {options.tflite_min_score}: must be at least 0 and below 1")
    check_models(options)
    prefix = exporter.resolve_checkpoint(options.checkpoint)
    run_dir = run_folder(prefix)
    config = options.config or default_config(prefix, run_dir)
    output_dir = options.output_dir or run_dir / RUN_EXPORT_DIR
    log.info("exporting %s with %s to %s", prefix, config, output_dir)
    return exporter.export_model(
        prefix, config, output_dir, tflite=options.tflite, label_map=options.label_map, overwrite=options.overwrite,
        tflite_nms=options.tflite_nms, tflite_min_score=options.tflite_min_score, saved_model=options.saved_model,
        int8=options.int8, calibration_records=options.calibration_records,
        calibration_images=options.calibration_images,
    )


def check_models(options: ExportOptions) -> None:
    if not (options.tflite or options.saved_model):
        raise ExportError("--no-tflite and --no-saved-model leave nothing to export")
    if options.int8 and not options.tflite:
        raise ExportError("--int8 makes the TFLite model INT8; drop --no-tflite")
    if not options.int8 and (options.calibration_records is not None
                             or options.calibration_images != calibration.DEFAULT_CALIBRATION_IMAGES):
        raise ExportError("--calibration-records and --calibration-images go with --int8")
    if options.calibration_images < 1:
        raise ExportError(f"--calibration-images {options.calibration_images}: must be at least 1")


def run_folder(prefix: Path) -> Path:
    """The run folder a checkpoint belongs to: its own folder, or the one above training's best/ copy."""
    folder = prefix.parent
    if not (folder / PIPELINE_FILE).is_file() and (folder.parent / PIPELINE_FILE).is_file():
        return folder.parent
    return folder


def default_config(prefix: Path, run_dir: Path) -> Path:
    config = run_dir / PIPELINE_FILE
    if not config.is_file():
        raise ExportError(f"{prefix}: no {PIPELINE_FILE} in its run folder {run_dir}; pass --config")
    return config
