#!/usr/bin/env python
"""Turn NIH's BBox_List_2017.csv and labelImg XML into OD API TFRecords; see docs/records.md."""

from chestdet.commands.cli import exit_with
from chestdet.commands.generate_tfrecords import main

if __name__ == "__main__":
    exit_with(main)
