"""Run an exported model over images; see docs/detect.md or `python scripts/detect.py --help`."""

from chestdet.commands.cli import exit_with
from chestdet.commands.detect import main

if __name__ == "__main__":
    exit_with(main)
