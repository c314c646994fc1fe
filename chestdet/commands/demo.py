"""make demo: the whole pipeline on the bundled NIH sample, on a CPU, in about ten minutes.

records -> a short training (from scratch, or from the COCO checkpoint when workspace/pretrained has
it) -> export -> detection on the held-out (test split and no-finding) images -> evaluation.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from chestdet.commands import detect, evaluate, export, generate_tfrecords, train
from chestdet.commands.cli import ExitStatus, UserError, exit_with, setup_logging
from chestdet.core.atomic import write_text
from chestdet.core.contracts import DETECTIONS_CSV, DRAWN_DIR, SPLIT_CSV, VOC_DIR
from chestdet.core.errors import StageError
from chestdet.core.resources import workspace
from chestdet.data.split import read_split, split_images

log = logging.getLogger("chestdet.demo")

SAMPLE = workspace() / "sample" / "nih"
PRETRAINED = workspace() / "pretrained" / "ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8"


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


def run_stage(number: int, name: str, command: Callable[[list[str]], int], argv: list[str]) -> None:
    log.info("[%d/5] %s", number, name)
    started = time.monotonic()
    status = command(argv)
    if status not in (ExitStatus.SUCCESS, ExitStatus.REJECTS):
        raise StageError(f"the {name} stage failed with exit status {status}")
    log.info("[%d/5] %s done in %.0f s", number, name, time.monotonic() - started)


def training_start(image_size: int) -> list[str]:
    """Fine-tune when the COCO checkpoint is there; otherwise from scratch with fast batch-norm statistics."""
    checkpoint = PRETRAINED / "checkpoint" / "ckpt-0"
    if checkpoint.with_suffix(".index").exists():
        log.info("starting from the COCO checkpoint %s", checkpoint)
        return ["--fine-tune-checkpoint", str(checkpoint), "--set", f"image_size={image_size}"]
    log.info("no COCO checkpoint in %s: training from scratch (see README: this is a smoke run)", PRETRAINED)
    # With the COCO configs' decay (0.997) the moving batch-norm averages that inference uses still lag far
    # behind after a few hundred steps from scratch (on the sample: mAP@0.5 0.025, against 0.967 with 0.9).
    return ["--from-scratch", "--set", f"image_size={image_size}", "--set", "batch_norm_decay=0.9"]


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
    run_stage(1, "records", generate_tfrecords.main, [
        "--nih-csv", str(args.sample / "BBox_List_2017.csv"), "--image-dir", str(args.sample / "images"),
        "--data-entry", str(args.sample / "Data_Entry_2017_sample.csv"),
        "--unlabeled-dir", str(args.sample / "unlabeled"), "--output-dir", str(records), "--shards", "1"])
    run_stage(2, "training", train.main, [
        "--model-dir", str(run), "--records", str(records), "--steps", str(args.steps), "--batch-size", "4",
        "--checkpoint-every", str(args.steps), *training_start(args.image_size)])
    run_stage(3, "export", export.main, [
        "--checkpoint", str(run), "--output-dir", str(exported), *(["--no-tflite"] if args.no_tflite else [])])
    count = held_out_images(records / SPLIT_CSV, args.sample, out / "held_out.txt")
    log.info("%d held-out images: the test split, with and without findings", count)
    run_stage(4, "detection", detect.main, [
        "--model", str(exported), "--input", str(out / "held_out.txt"), "--output-dir", str(detections),
        "--voc-xml", "--format", "jpg"])
    run_stage(5, "evaluation", evaluate.main, [
        "--detections", str(detections / DETECTIONS_CSV), "--ground-truth", str(args.sample / "BBox_List_2017.csv"),
        "--split-file", str(records / SPLIT_CSV), "--split", "test", "--output-dir", str(evaluation)])
    log.info("demo finished in %.1f min", (time.monotonic() - started) / 60)
    log.info("drawn images: %s", detections / DRAWN_DIR)
    log.info("labelImg XML: %s", detections / VOC_DIR)
    log.info("report:       %s", evaluation / "report.md")
    log.info("A few hundred CPU steps from scratch do not make a useful detector; see README for the real workflow.")
    return ExitStatus.SUCCESS


def entry() -> None:
    exit_with(main)


if __name__ == "__main__":
    entry()
