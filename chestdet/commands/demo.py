"""make demo: the whole pipeline on the bundled NIH sample, on a CPU, in about ten minutes.

records -> a short training (from scratch, or from the COCO checkpoint when workspace/pretrained has
it) -> export -> detection on the held-out (test split and no-finding) images -> evaluation.
Training, export and evaluation are library calls with typed options; records and detection go
through their commands, whose orchestration has no library function yet.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from chestdet.commands import detect, generate_tfrecords
from chestdet.commands.cli import ExitStatus, UserError, exit_with, setup_logging
from chestdet.core.atomic import write_text
from chestdet.core.contracts import DETECTIONS_CSV, DRAWN_DIR, REPORT_MD, SPLIT_CSV, VOC_DIR
from chestdet.core.errors import StageError
from chestdet.core.resources import workspace
from chestdet.data.split import read_split, split_images
from chestdet.evaluation.evaluate import EvaluationRun, run_evaluation
from chestdet.evaluation.report import summary_text
from chestdet.export.options import ExportOptions, export
from chestdet.training.checkpoints import checkpoint_exists
from chestdet.training.pretrained import DEFAULT_MODEL, checkpoint_prefix
from chestdet.training.train import TrainOptions, train

log = logging.getLogger("chestdet.demo")

SAMPLE = workspace() / "sample" / "nih"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=workspace() / "demo",
                        help="the demo's own folder, emptied at the start when an earlier demo made it "
                        "(default: workspace/demo)")
    parser.add_argument("--sample", type=Path, default=SAMPLE, help="NIH sample folder (default: the bundled one)")
    parser.add_argument("--steps", type=int, default=300, help="training steps (default: %(default)s)")
    parser.add_argument("--image-size", type=int, default=256, help="model input size (default: %(default)s)")
    parser.add_argument("--no-tflite", action="store_true", help="export and detect with the SavedModel only")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def run_stage(number: int, name: str, stage: Callable[[], object]) -> None:
    log.info("[%d/5] %s", number, name)
    started = time.monotonic()
    stage()
    log.info("[%d/5] %s done in %.0f s", number, name, time.monotonic() - started)


def _scored(run: EvaluationRun) -> tuple:
    """The summary's inputs: the metrics and the trivial baseline of the split's train rows beside them."""
    return run.metrics, run.baseline


def command_stage(name: str, command: Callable[[list[str]], int], argv: list[str]) -> Callable[[], None]:
    """A stage that runs a command's main; a failing exit status stops the demo."""
    def run() -> None:
        status = command(argv)
        if status not in (ExitStatus.SUCCESS, ExitStatus.REJECTS):
            raise StageError(f"the {name} stage failed with exit status {status}")

    return run


def training_options(run: Path, records: Path, steps: int, image_size: int) -> TrainOptions:
    """Fine-tune when the COCO checkpoint is there; otherwise from scratch with fast batch-norm statistics."""
    options = TrainOptions(model_dir=run, records=records, steps=steps, batch_size=4, checkpoint_every=steps)
    checkpoint = checkpoint_prefix(DEFAULT_MODEL)
    if checkpoint_exists(checkpoint):
        log.info("starting from the COCO checkpoint %s", checkpoint)
        return dataclasses.replace(options, fine_tune_checkpoint=checkpoint, overrides={"image_size": image_size})
    log.info("no COCO checkpoint in %s: training from scratch (see README: this is a smoke run)", checkpoint.parent)
    # With the COCO configs' decay (0.997) the moving batch-norm averages that inference uses still lag far
    # behind after a few hundred steps from scratch (on the sample: mAP@0.5 0.025, against 0.967 with 0.9).
    return dataclasses.replace(options, from_scratch=True,
                               overrides={"image_size": image_size, "batch_norm_decay": 0.9})


def held_out_images(split_csv: Path, sample: Path, list_file: Path) -> int:
    """The test split's images (with and without findings), as a list file for detect."""
    test_names = split_images(read_split(split_csv), "test", split_csv)
    folders = (sample / "images", sample / "unlabeled")
    paths = [folder / name for name in test_names for folder in folders if (folder / name).exists()]
    write_text(list_file, "".join(f"{path}\n" for path in paths))
    return len(paths)


# Written into the demo's folder first, so that a later demo empties only a folder a demo made.
DEMO_MARKER = ".chestdet-demo"


def prepare_output_dir(out: Path) -> None:
    """Empty `out` if an earlier demo made it; refuse any other folder that is not empty."""
    if out.exists() and any(out.iterdir()):
        if not (out / DEMO_MARKER).is_file():
            raise UserError(f"--output-dir {out}: exists and was not made by the demo; choose another folder "
                            "(the demo empties its folder at the start)")
        log.info("emptying %s from an earlier demo", out)
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / DEMO_MARKER, "made by `make demo` (chestdet.demo); emptied by the next demo\n")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    out = args.output_dir
    prepare_output_dir(out)
    records, run, exported = out / "records", out / "run", out / "export"
    detections, evaluation = out / "detections", out / "evaluation"
    started = time.monotonic()
    run_stage(1, "records", command_stage("records", generate_tfrecords.main, [
        "--nih-csv", str(args.sample / "BBox_List_2017.csv"), "--image-dir", str(args.sample / "images"),
        "--data-entry", str(args.sample / "Data_Entry_2017_sample.csv"),
        "--unlabeled-dir", str(args.sample / "unlabeled"), "--output-dir", str(records), "--shards", "1"]))
    run_stage(2, "training", lambda: train(training_options(run, records, args.steps, args.image_size)))
    run_stage(3, "export", lambda: export(ExportOptions(checkpoint=run, output_dir=exported,
                                                        tflite=not args.no_tflite)))
    count = held_out_images(records / SPLIT_CSV, args.sample, out / "held_out.txt")
    log.info("%d held-out images: the test split, with and without findings", count)
    run_stage(4, "detection", command_stage("detection", detect.main, [
        "--model", str(exported), "--input", str(out / "held_out.txt"), "--output-dir", str(detections),
        "--voc-xml", "--format", "jpg"]))
    run_stage(5, "evaluation", lambda: log.info("%s", summary_text(*_scored(run_evaluation(
        detections / DETECTIONS_CSV, args.sample / "BBox_List_2017.csv", evaluation, records / SPLIT_CSV,
        "test")))))
    log.info("demo finished in %.1f min", (time.monotonic() - started) / 60)
    log.info("drawn images: %s", detections / DRAWN_DIR)
    log.info("labelImg XML: %s", detections / VOC_DIR)
    log.info("report:       %s", evaluation / REPORT_MD)
    log.info("A few hundred CPU steps from scratch do not make a useful detector; see README for the real workflow.")
    return ExitStatus.SUCCESS


def entry() -> None:
    exit_with(main)


if __name__ == "__main__":
    entry()
