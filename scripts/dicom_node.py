"""A DICOM node for the PACS; see docs/clinical.md or `python scripts/dicom_node.py --help`."""

from chestdet.commands.cli import exit_with
from chestdet.commands.dicom_node import main

if __name__ == "__main__":
    exit_with(main)
