"""fetch_checkpoint: a TF2 Detection Zoo checkpoint by name into workspace/pretrained/<name>/.

    python scripts/fetch_checkpoint.py ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8
    python scripts/fetch_checkpoint.py ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8 \\
        --archive ~/Downloads/ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8.tar.gz --sha256 <hex>
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from chestdet.commands.cli import ExitStatus, UserError, exit_with, setup_logging
from chestdet.training import pretrained

log = logging.getLogger("chestdet.fetch_checkpoint")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fetch_checkpoint.py",
        description="Download a TF2 Detection Zoo model (.tar.gz) over HTTPS, continuing a partial download, "
        "unpack it safely into workspace/pretrained/<name>/ for fine_tune_checkpoint, and check its files "
        "against the digests pinned in chestdet/training/pretrained.py (a mismatch unpacks nothing).",
    )
    parser.add_argument("name", nargs="?", default=pretrained.DEFAULT_MODEL,
                        help="zoo model name (default: %(default)s)")
    parser.add_argument("--sha256", help="also check the .tar.gz itself against this SHA-256")
    parser.add_argument("--archive", type=Path,
                        help="use this already downloaded .tar.gz instead of downloading")
    parser.add_argument("--url", help="download from here instead of the zoo's URL for NAME")
    parser.add_argument("--dest", type=Path, default=pretrained.PRETRAINED_DIR,
                        help="where models go (default: workspace/pretrained)")
    parser.add_argument("--force", action="store_true", help="fetch again even when already there")
    parser.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds (default: 60)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        prefix = pretrained.fetch_checkpoint(
            args.name, args.dest, sha256=args.sha256, archive=args.archive, url=args.url,
            force=args.force, timeout=args.timeout,
        )
    except pretrained.FetchError as error:
        raise UserError(str(error)) from error
    log.info("fine_tune_checkpoint: %s", prefix)
    return ExitStatus.SUCCESS


def entry() -> None:
    exit_with(main)


if __name__ == "__main__":
    entry()
