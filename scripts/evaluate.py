#!/usr/bin/env python3
"""Score detections against ground truth (COCO AP, FROC, ChestX-ray8 T(IoBB)): see `--help`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the package beside this script

from chestdet.cli import exit_with  # noqa: E402
from chestdet.commands.evaluate import main  # noqa: E402

if __name__ == "__main__":
    exit_with(main)
