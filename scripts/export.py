"""Export a trained checkpoint as a SavedModel and TFLite; see docs/export.md or `python scripts/export.py --help`."""

from chestdet.commands.cli import exit_with
from chestdet.commands.export import main

if __name__ == "__main__":
    exit_with(main)
