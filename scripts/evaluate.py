#!/usr/bin/env python3
"""Score detections against ground truth (COCO AP, FROC, ChestX-ray8 T(IoBB)): see `--help`."""

from chestdet.commands.cli import exit_with
from chestdet.commands.evaluate import main

if __name__ == "__main__":
    exit_with(main)
