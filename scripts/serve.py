"""Serve the review page, its API and Label Studio's ML backend; see docs/serve.md or `serve.py --help`."""

from chestdet.commands.cli import exit_with
from chestdet.commands.serve import main

if __name__ == "__main__":
    exit_with(main)
