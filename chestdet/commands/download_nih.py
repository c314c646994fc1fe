"""Download NIH ChestX-ray14 and keep the images with bounding boxes (or all of them)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from chestdet.commands.cli import ExitStatus, UserError, exit_with, setup_logging
from chestdet.core.resources import workspace
from chestdet.data.nih_download import DownloadError, fetch_nih_images, images_named_in

log = logging.getLogger("chestdet")
BUNDLED_CSV = workspace() / "sample" / "nih" / "BBox_List_2017.csv"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="download_nih.py",
        description="Download NIH's twelve image archives (about 42 GB, one at a time) and extract the "
        "images that BBox_List_2017.csv names; reports every expected image that did not arrive.",
    )
    parser.add_argument("--bbox-csv", type=Path, default=BUNDLED_CSV,
                        help="the box list whose images to keep (default: the bundled copy of NIH's)")
    parser.add_argument("--output-dir", type=Path, default=workspace() / "data" / "nih",
                        help="images go to OUTPUT_DIR/images (default: workspace/data/nih)")
    parser.add_argument("--keep-archives", action="store_true", help="keep the .tar.gz files after extracting")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    if not args.bbox_csv.is_file():
        raise UserError(f"{args.bbox_csv}: box list not found")
    wanted = images_named_in(args.bbox_csv)
    image_dir = args.output_dir / "images"
    try:
        missing = fetch_nih_images(wanted, args.output_dir / "archives", image_dir, keep_archives=args.keep_archives)
    except DownloadError as error:
        raise UserError(str(error)) from error
    if missing:
        log.error("%d of %d expected images did not arrive, e.g. %s", len(missing), len(wanted), sorted(missing)[:5])
        return ExitStatus.REJECTS
    log.info("all %d images are in %s", len(wanted), image_dir)
    return ExitStatus.SUCCESS


def entry() -> None:
    exit_with(main)


if __name__ == "__main__":
    entry()
