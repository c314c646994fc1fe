"""chestdet-detect / scripts/detect.py: run an exported model over a folder, list, glob or split of images."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import shlex
import shutil
import sys
import time
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from chestdet.commands.cli import ExitStatus, UserError, exit_with, progress_logging, setup_logging
from chestdet.core.contracts import DICOM_DIR, JOURNAL, RUN_JSON, TFLITE_FILE
from chestdet.data import labelstudio
from chestdet.detection import detect
from chestdet.detection.drawing import FORMATS
from chestdet.detection.inputs import Listing, list_split, read_listing
from chestdet.detection.review import ReviewOptions
from chestdet.detection.thresholds import POINT_NAMES, Thresholds, choose_thresholds
from chestdet.export.backends import BACKENDS, choose_backend, gpu_available, open_backend, tflite_min_score
from chestdet.export.identity import model_labels, model_version

log = logging.getLogger("chestdet.detection.detect")

EXAMPLES = """examples:
  python scripts/detect.py --model workspace/runs/nih/export --input new_xrays/ --output-dir detections/
  python scripts/detect.py --model workspace/runs/nih/export --input 'scans/**/*.dcm' --output-dir out/ --voc-xml
  python scripts/detect.py --model workspace/runs/nih/export --input list.txt --output-dir out/ --resume
  python scripts/detect.py --model workspace/runs/nih/export --input new_xrays/ --output-dir out/ --label-studio
  python scripts/detect.py --model workspace/runs/nih/export --input films/ --output-dir out/ --dicom-results
  python scripts/detect.py --model workspace/runs/nih/export --split-file workspace/records/split.csv --split test \
      --image-dir workspace/sample/nih/images --output-dir out/
  python scripts/detect.py --model workspace/runs/nih/export --input new_xrays/ --output-dir out/ --beam \
      --beam-options="--direct_num_workers=2"
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="detect.py",
        description="Detect chest X-ray findings with an exported model; write drawn images, "
        "detections.csv, images.csv, detections.json (COCO results), detections_coco.json (a COCO dataset for "
        "CVAT and FiftyOne), errors.csv, and optionally VOC XML or Label Studio tasks.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, type=Path,
                        help="export directory (saved_model/, model.tflite, label_map.pbtxt)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input",
                        help="a folder (recursive), an image, a text file of image paths, or a glob")
    source.add_argument("--split-file", type=Path,
                        help="the records step's split.csv: detect on the images of one split (--split, --image-dir)")
    parser.add_argument("--split", help="with --split-file: the split to detect on (default: test)")
    parser.add_argument("--image-dir", type=Path, action="append", default=[],
                        help="with --split-file: a folder holding the split's images, found by file name as the "
                        "records step finds them (repeatable)")
    parser.add_argument("--output-dir", required=True, type=Path, help="folder for the outputs")
    parser.add_argument("--label-map", type=Path, help="label map (default: the export's label_map.pbtxt)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="auto: TFLite when there is no GPU and the export has model.tflite (default: auto)")
    parser.add_argument("--min-score", type=float, default=0.3,
                        help="minimum score of the boxes drawn and written to VOC XML (default: 0.3)")
    parser.add_argument("--min-score-file", type=Path,
                        help="CSV with columns class,min_score: per-class minimum scores overriding --min-score")
    parser.add_argument("--operating-points", type=Path, metavar="FILE",
                        help="evaluate's operating_points.json (from a validation split): per-class minimum scores "
                        "of --operating-point, overriding --min-score")
    parser.add_argument("--operating-point", choices=POINT_NAMES, metavar="NAME",
                        help=f"with --operating-points: the point to use ({', '.join(POINT_NAMES)})")
    parser.add_argument("--keep-score", type=float, default=0.01,
                        help="minimum score of the detections in detections.csv/json, low so that evaluation "
                        "can trace whole precision-recall and FROC curves (default: 0.01)")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="images per SavedModel call (same-size images only; TFLite runs one at a time)")
    parser.add_argument("--max-boxes", type=int, default=100, help="most boxes drawn or written to VOC XML per image")
    _add_output_options(parser)
    parser.add_argument("--resume", action="store_true", help="finish an interrupted run in --output-dir")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run's outputs in --output-dir")
    parser.add_argument("--workers", type=int, default=detect.default_workers(),
                        help="reader and writer threads each (default: CPU count, at most 4)")
    parser.add_argument("--threads", type=int,
                        help="TFLite: images inferred at once, by one single-threaded interpreter each "
                        "(default: CPU count)")
    parser.add_argument("--beam", action="store_true",
                        help="run as an Apache Beam pipeline (default runner: in-process, one worker per CPU)")
    parser.add_argument("--beam-options", metavar="OPTIONS",
                        help="with --beam: Beam pipeline options as one quoted string after an =, e.g. "
                        "--beam-options=\"--runner=FlinkRunner --flink_master=host:8081\"")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when any image could not be read")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=FORMATS, default="jpg",
                        help="drawn image format (default: jpg, 10x faster to write than png)")
    parser.add_argument("--voc-xml", action="store_true",
                        help="also write a labelImg Pascal VOC XML per image under voc/")
    parser.add_argument("--label-studio", action="store_true",
                        help="also write label_studio_tasks.json (the drawn boxes as pre-annotations) and "
                        "label_studio_config.xml")
    parser.add_argument("--image-url-prefix",
                        help="with --label-studio: the tasks' image URL is this followed by the path relative to "
                        f"the input folder (default: {labelstudio.DEFAULT_IMAGE_URL_PREFIX}FOLDER/, FOLDER the input "
                        "folder's name: Label Studio's local-files storage with its document root the folder above)")
    parser.add_argument("--dicom-results", action="store_true",
                        help="also write, for every DICOM input, a DICOM SR (TID 1500) and a presentation state (GSPS) "
                        "of the drawn boxes under dicom/, preliminary, in the input's study")
    parser.add_argument("--explain", action="store_true",
                        help="also write a Grad-CAM heatmap of each drawn box under explain/ (a .png to look at, "
                        "a .npz of the maps), computed from the export's checkpoint whichever backend detects")


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    _check_arguments(args)
    listing = _list_images(args)
    # Importing TensorFlow (label map, backend) takes seconds: decode the first images meanwhile.
    ahead = None if args.resume or args.beam else detect.DecodeAhead(listing.images)
    try:
        return _detect(args, listing, ahead, started)
    except KeyboardInterrupt:
        log.error("%s", _interrupted(args, len(listing.images), sys.argv[1:] if argv is None else argv))
        return ExitStatus.INTERRUPTED
    finally:
        if ahead is not None:
            ahead.stop()


def _interrupted(args: argparse.Namespace, total: int, argv: list[str]) -> str:
    """How far an interrupted run got and the command that finishes it."""
    from chestdet.core.shell import command
    from chestdet.detection.journal import Journal

    if args.beam:
        return "interrupted; a --beam run cannot resume: run the same command with --overwrite to start again"
    with Journal(args.output_dir / JOURNAL).finished() as finished:
        done = len(finished)
    again = [*argv, *([] if args.resume else ["--resume"])]
    return (f"interrupted: {done} of {total} images done; to continue, run the same command with --resume: "
            f"{command('detect')} {shlex.join(again)}")


def _list_images(args: argparse.Namespace) -> Listing:
    if args.split_file is not None:
        return Listing(list_split(args.split_file, args.split or "test", args.image_dir))
    listing = read_listing(args.input, exclude=args.output_dir)
    if not listing.images:
        raise UserError(f"--input {args.input}: no images found")
    return listing


def _input_setting(args: argparse.Namespace) -> object:
    if args.split_file is None:
        return args.input
    return {"split_file": args.split_file.resolve(), "split": args.split or "test",
            "image_dirs": [folder.resolve() for folder in args.image_dir]}


def _detect(args: argparse.Namespace, listing: Listing, ahead: detect.DecodeAhead | None, started: float) -> int:
    labels = model_labels(args.model, args.label_map)
    label_map = Path(labels.source)
    class_names = labels.ids
    thresholds = choose_thresholds(args.min_score, class_names, args.min_score_file, args.operating_points,
                                   args.operating_point)
    has_gpu = args.backend == "auto" and (args.model / TFLITE_FILE).is_file() and gpu_available()
    kind = choose_backend(args.backend, args.model, has_gpu, args.keep_score)
    floor = tflite_min_score(args.model) if kind == "tflite" else 0.0
    if args.keep_score < floor:
        log.warning("the TFLite model drops boxes scoring under %g: --keep-score %g keeps none below it; "
                    "use --backend savedmodel for them", floor, args.keep_score)
    review = ReviewOptions(label_studio=args.label_studio, model_version=model_version(args.model),
                           image_url_prefix=_image_url_prefix(args, listing))
    options = detect.DetectOptions(
        thresholds=thresholds, keep_score=args.keep_score, max_boxes=args.max_boxes,
        image_format=args.format, voc_xml=args.voc_xml, workers=args.workers,
        prefetch=max(4, 2 * args.workers, 2 * args.batch_size), review=review,
        explainer=_explainer(args, kind), extra_writers=_dicom_results(args, listing, thresholds),
    )
    settings = detect.run_settings(
        model=args.model.resolve(), label_map=label_map.resolve(), backend=kind, input=_input_setting(args),
        keep_score=args.keep_score, min_score=thresholds.as_dict(), max_boxes=args.max_boxes,
        format=args.format, voc_xml=args.voc_xml,
        label_studio=review.image_url_prefix if args.label_studio else None, explain=args.explain,
        **({"dicom_results": True} if args.dicom_results else {}),
    )
    if args.overwrite and (args.output_dir / RUN_JSON).is_file():
        shutil.rmtree(args.output_dir / DICOM_DIR, ignore_errors=True)  # an earlier run's DICOM results
    detect.prepare_output_dir(args.output_dir, settings, args.resume, args.overwrite)
    log.info("%d images, %s backend, writing to %s", len(listing.images), kind, args.output_dir)
    if args.beam:
        summary = _run_beam(listing.images, kind, class_names, args, options, started)
    else:
        backend = open_backend(kind, args.model, args.batch_size, args.threads)
        summary = _run(listing.images, backend, class_names, args, options, started, ahead)
    summary.ignored = len(listing.ignored)
    log.info(summary.last_line())
    return ExitStatus.REJECTS if args.strict and summary.errors else ExitStatus.SUCCESS


def _dicom_results(args: argparse.Namespace, listing: Listing, thresholds: Thresholds) -> tuple:
    """With --dicom-results: the writer of dicom/, made for the run from the export's identity."""
    if not args.dicom_results:
        return ()
    from chestdet.clinical.detect_writer import DicomResults  # highdicom takes 0.4 s to import
    from chestdet.clinical.results import model_info

    return (DicomResults(model_info(args.model), thresholds, args.max_boxes, tuple(listing.images)),)


def _image_url_prefix(args: argparse.Namespace, listing: Listing) -> str:
    """--image-url-prefix, else Label Studio's local-files URL of the input folder (with --split-file, the
    first --image-dir): the folder the images' names are relative to."""
    if args.image_url_prefix is not None:
        return args.image_url_prefix
    if args.split_file is not None or not listing.images:
        return labelstudio.local_files_prefix(Path(os.path.abspath(args.image_dir[0])).name if args.image_dir else "")
    first = listing.images[0]
    parts = PurePosixPath(first.name).parts
    path = Path(os.path.abspath(first.path))
    return labelstudio.local_files_prefix(path.parents[len(parts) - 1].name if first.name[:1] != "/" else "")


def _explainer(args: argparse.Namespace, backend: str) -> detect.Explains | None:
    """With --explain: the checkpoint model, opened in a thread while the backend loads. Beside the
    TFLite backend TensorFlow runs only the explainer: its passes then run one thread each."""
    if not args.explain:
        return None
    from chestdet.detection.explain import BackgroundExplainer, one_thread_per_pass

    if backend == "tflite" and not one_thread_per_pass():
        log.debug("TensorFlow had started: explanations use its default threads")
    return BackgroundExplainer(args.model)


def _run(images, backend, class_names, args, options, started, ahead) -> detect.RunSummary:  # noqa: ANN001
    with progress_logging(), tqdm(
        total=len(images), unit=" images", unit_scale=False, disable=args.no_progress or None, dynamic_ncols=True,
        desc="detect", file=sys.stderr,
    ) as bar:
        return detect.detect_images(
            images, backend, class_names, args.output_dir, options, started=started, progress=bar, ahead=ahead,
        )


def _run_beam(images, kind, class_names, args, options, started) -> detect.RunSummary:  # noqa: ANN001
    """Each Beam worker process opens the backend as a local run does (TFLite: --threads interpreters)."""
    from chestdet.detection.beam_pipelines import detect_with_beam

    open_model = functools.partial(open_backend, kind, args.model.resolve(), args.batch_size, args.threads)
    return detect_with_beam(images, open_model, class_names, args.output_dir, options, args.beam_options,
                            args.batch_size, started)


def _check_arguments(args: argparse.Namespace) -> None:
    from chestdet.training.checkpoints import run_folder_hint

    if hint := run_folder_hint(args.model):
        raise UserError(f"--model {hint}")
    if not args.model.is_dir():
        raise UserError(f"--model {args.model}: not a directory (expected an export folder of export.sh)")
    for flag, value in (("--min-score", args.min_score), ("--keep-score", args.keep_score)):
        if not 0.0 <= value <= 1.0:
            raise UserError(f"{flag} {value}: must be between 0 and 1")
    counts = (("--batch-size", args.batch_size), ("--max-boxes", args.max_boxes), ("--workers", args.workers))
    for flag, value in counts:
        if value < 1:
            raise UserError(f"{flag} {value}: must be at least 1")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads {args.threads}: must be at least 1")
    if args.resume and args.overwrite:
        raise UserError("--resume and --overwrite exclude each other")
    if args.min_score_file is not None and args.operating_points is not None:
        raise UserError("--min-score-file and --operating-points are two forms of per-class minimum scores; "
                        "give one")
    if (args.operating_points is None) != (args.operating_point is None):
        raise UserError(f"--operating-points FILE and --operating-point NAME go together (NAME: one of "
                        f"{', '.join(POINT_NAMES)})")
    if args.image_url_prefix is not None and not args.label_studio:
        raise UserError("--image-url-prefix needs --label-studio")
    if args.split_file is not None and not args.image_dir:
        raise UserError("--split-file needs --image-dir: the folders holding the split's images")
    if args.split_file is None and (args.image_dir or args.split):
        raise UserError("--split and --image-dir go with --split-file (a folder as --input is listed by itself)")
    if args.beam and args.resume:
        raise UserError("--resume is not available with --beam (Beam retries failed work itself); use --overwrite")
    if args.beam and args.explain:
        raise UserError("--explain is not available with --beam; run it on the detections folder's images locally")
    if args.beam_options is not None and not args.beam:
        raise UserError("--beam-options needs --beam")


def entry() -> None:
    exit_with(main)


if __name__ == "__main__":
    entry()
