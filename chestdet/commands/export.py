"""chestdet-export / scripts/export.sh: export a trained checkpoint as a SavedModel and a TFLite model.

The command parses its flags into chestdet.export.options.ExportOptions, calls export() and logs.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from chestdet.commands.cli import ExitStatus, UserError, exit_with, setup_logging
from chestdet.core.shell import command, shown
from chestdet.export import agreement, calibration
from chestdet.export import exporter as export
from chestdet.export.options import ExportOptions
from chestdet.export.options import export as export_checkpoint

log = logging.getLogger("chestdet.export.exporter")

EXAMPLES = """examples:
  scripts/export.sh --checkpoint workspace/runs/nih                 # its latest, into workspace/runs/nih/export
  scripts/export.sh --checkpoint workspace/runs/nih/best.json       # the best val mAP@0.5 checkpoint
  scripts/export.sh --checkpoint workspace/runs/nih/ckpt-12 --output-dir exports/nih-12 --no-tflite
  scripts/export.sh --checkpoint workspace/runs/nih --agreement-images workspace/sample/nih/images
  scripts/export.sh --checkpoint workspace/runs/nih --output-dir exports/nih-int8 --int8 --no-saved-model
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="export.sh",
        description="Export a trained checkpoint: saved_model/ (serving_default takes a uint8 batch "
        "[None, None, None, 3]), model.tflite, label_map.pbtxt, pipeline.config and export.json.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True, type=Path,
                        help="a run folder (its latest checkpoint), a prefix such as run/ckpt-12, "
                        "or the run's best.json (the best evaluated checkpoint)")
    parser.add_argument("--config", type=Path,
                        help="pipeline config (default: the pipeline.config of the checkpoint's run folder)")
    parser.add_argument("--output-dir", type=Path,
                        help="export folder (default: export/ in the checkpoint's run folder)")
    parser.add_argument("--label-map", type=Path,
                        help="label map copied into the export (default: the config's label_map_path)")
    parser.add_argument("--no-tflite", action="store_true", help="skip the TFLite model")
    parser.add_argument("--no-saved-model", action="store_true",
                        help="skip the SavedModel (detect then runs the TFLite model; --explain still works)")
    parser.add_argument("--int8", action="store_true",
                        help="make model.tflite full-integer INT8, calibrated on training images: faster on a CPU, "
                        "boxes close to the float model's (see docs/export.md)")
    parser.add_argument("--calibration-records", nargs="+", metavar="PATTERN",
                        help="with --int8: TFRecord files or globs to calibrate on (default: the config's "
                        "train_input_reader records)")
    parser.add_argument("--calibration-images", type=int, default=calibration.DEFAULT_CALIBRATION_IMAGES,
                        help="with --int8: how many record images to calibrate on (default: %(default)s)")
    parser.add_argument("--tflite-nms", choices=export.TFLITE_NMS, default="regular",
                        help="regular: per-class NMS, as the SavedModel (default); fast: the OD API's "
                        "class-agnostic TFLite NMS, about 10 ms faster per image, drops overlapping findings "
                        "of other classes")
    parser.add_argument("--tflite-min-score", type=float, default=export.TFLITE_MIN_SCORE,
                        help="lowest score the TFLite NMS keeps (default: %(default)s, detect.py's default "
                        "--keep-score; 0 keeps every box, for about 10%% more inference time)")
    parser.add_argument("--agreement-images", type=Path,
                        help="after exporting, measure how often TFLite reproduces the SavedModel's boxes "
                        "on the images of this folder and record it in export.json")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export folder")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    if args.agreement_images is not None:
        if args.no_tflite or args.no_saved_model:
            raise UserError("--agreement-images compares the TFLite model with the SavedModel; export both")
        if not args.agreement_images.is_dir():
            raise UserError(f"--agreement-images {args.agreement_images}: not a folder")
    output_dir = export_checkpoint(ExportOptions(
        checkpoint=args.checkpoint, config=args.config, output_dir=args.output_dir, tflite=not args.no_tflite,
        label_map=args.label_map, overwrite=args.overwrite, tflite_nms=args.tflite_nms,
        tflite_min_score=args.tflite_min_score, saved_model=not args.no_saved_model, int8=args.int8,
        calibration_records=tuple(args.calibration_records) if args.calibration_records else None,
        calibration_images=args.calibration_images,
    ))
    if args.agreement_images is not None:
        measured = agreement.record_agreement(output_dir, args.agreement_images)
        log.info(
            "TFLite reproduces %d of the SavedModel's %d boxes scoring >= %.2f (%.1f%%)",
            measured["matched"], measured["reference_boxes"], measured["min_score"], 100 * measured["share"],
        )
    log.info("detect with it: %s --model %s --input IMAGES --output-dir FOLDER", command("detect"), shown(output_dir))
    return ExitStatus.SUCCESS


def entry() -> None:
    exit_with(main)


if __name__ == "__main__":
    entry()
