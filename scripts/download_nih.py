#!/usr/bin/env python3
"""Download NIH ChestX-ray14's bounding-box images: see `--help`."""

from chestdet.commands.cli import exit_with
from chestdet.commands.download_nih import main

if __name__ == "__main__":
    exit_with(main)
