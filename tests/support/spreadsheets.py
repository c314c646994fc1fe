"""CSV files as spreadsheets save them, made from a clean CSV for tests that compare the two."""

from __future__ import annotations

import csv
import io
from pathlib import Path


def as_spreadsheet(clean: Path, target: Path) -> Path:
    """UTF-8 with a byte-order mark, CRLF, every field quoted, two extra empty columns, and all-empty
    rows and blank lines at the end, as a spreadsheet's "CSV UTF-8" export of the same table."""
    rows = list(csv.reader(io.StringIO(clean.read_text(encoding="utf-8"))))
    width = max(len(row) for row in rows) + 2
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    writer.writerows(row + [""] * (width - len(row)) for row in rows)
    writer.writerows([[""] * width] * 2)
    target.write_bytes(b"\xef\xbb\xbf" + (buffer.getvalue() + "\r\n\r\n").encode("utf-8"))
    return target


def with_latin1_row(clean: Path, target: Path, row: str) -> tuple[Path, int, int]:
    """The clean file plus `row` encoded as Latin-1 (its é is not UTF-8); the row's line and the
    column of its first non-ASCII character."""
    text = clean.read_text(encoding="utf-8").rstrip("\n") + "\n"
    target.write_bytes(text.encode("utf-8") + (row + "\n").encode("latin-1"))
    return target, text.count("\n") + 1, next(k for k, char in enumerate(row, start=1) if ord(char) > 127)
