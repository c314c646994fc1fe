#!/usr/bin/env python
"""Turn NIH's BBox_List_2017.csv and labelImg XML into OD API TFRecords; see docs/records.md."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the package beside this script

from chestdet.cli import exit_with  # noqa: E402
from chestdet.commands.generate_tfrecords import main  # noqa: E402

if __name__ == "__main__":
    exit_with(main)
