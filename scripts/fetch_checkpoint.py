"""Fetch a TF2 Detection Zoo checkpoint into workspace/pretrained/; see docs/train.md or --help."""

from chestdet.commands.cli import exit_with
from chestdet.commands.fetch_checkpoint import main

if __name__ == "__main__":
    exit_with(main)
