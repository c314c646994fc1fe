"""Run an exported model over images; see docs/detect.md or `python scripts/detect.py --help`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the package beside this script

from chestdet.cli import exit_with  # noqa: E402
from chestdet.commands.detect import main  # noqa: E402

if __name__ == "__main__":
    exit_with(main)
