"""Compare two detect.py output folders byte for byte: every file, the journal and the drawn images included.

    python benchmarks/compare_outputs.py OUT_A OUT_B

Run the same detect.py command (same export, same input, same flags) with two versions of the code
into two folders, then compare them: it prints how many files are identical, lists those that differ
or that only one folder has, and exits 1 if any does. The journal is compared as a set of lines: images
are appended to it as they finish, in an order the threads decide.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

JOURNAL = ".journal.jsonl"


def digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under `folder` (the journal's lines sorted), by its path relative to it."""
    return {path.relative_to(folder).as_posix(): hashlib.sha256(content(path)).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def content(path: Path) -> bytes:
    data = path.read_bytes()
    return b"".join(sorted(data.splitlines(keepends=True))) if path.name == JOURNAL else data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--ignore", nargs="*", default=[], metavar="NAME",
                        help="files to leave out, e.g. run.json when the runs name different exports")
    args = parser.parse_args(argv)
    first, second = ({k: v for k, v in digests(folder).items() if k not in args.ignore}
                     for folder in (args.first, args.second))
    only = sorted(set(first) ^ set(second))
    different = sorted(name for name in set(first) & set(second) if first[name] != second[name])
    identical = len(set(first) & set(second)) - len(different)
    kinds = sorted({Path(name).suffix or name for name in first})
    print(f"{identical} of {len(first)} files identical ({', '.join(kinds)})")
    for name in different:
        print(f"differs: {name}")
    for name in only:
        print(f"only in {args.first if name in first else args.second}: {name}")
    return 1 if different or only else 0


if __name__ == "__main__":
    sys.exit(main())
