"""Reading the CSV files users hand the pipeline, as spreadsheets and editors write them.

UTF-8 with or without a byte-order mark, LF or CRLF line ends, quoted fields, blank rows (also the
all-comma rows a spreadsheet leaves) and trailing empty columns all read as the clean file. A file
that is not UTF-8 is one `CsvError` naming the file and line, never a traceback.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from chestdet.core.errors import InputError

ENCODING = "utf-8-sig"  # UTF-8, with the byte-order mark some spreadsheets write dropped


class CsvError(InputError):
    """A CSV file that cannot be read at all; the message names the file and line."""


def csv_rows(path: str | Path) -> Iterator[tuple[int, list[str]]]:
    """(row number, stripped cells) of every non-blank row; row numbers count lines as a spreadsheet does."""
    path = Path(path)
    try:
        with open(path, newline="", encoding=ENCODING) as handle:
            reader = csv.reader(handle)
            for row in reader:
                cells = [cell.strip() for cell in row]
                if any(cells):
                    yield reader.line_num, cells
    except UnicodeDecodeError:
        raise undecodable(path) from None
    except csv.Error as error:
        raise CsvError(f"{path}: line {reader.line_num}: not a readable CSV ({error})") from None


def read_frame(path: str | Path) -> pd.DataFrame:
    """A CSV with a header row as a table of strings; blank rows are dropped.

    The index is each row's line number minus 2 (the header is line 1), so that a row's position in
    the file survives the dropped rows.
    """
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding=ENCODING, skip_blank_lines=False)
    except UnicodeDecodeError:
        raise undecodable(path) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise CsvError(f"{path}: cannot read as CSV ({str(error).splitlines()[0]})") from None
    frame = frame.loc[:, [not _unnamed_and_empty(frame, name) for name in frame.columns]]
    if frame.columns.empty:
        return frame
    # Only rows whose first cell is empty are checked (a detections file can hold millions of rows).
    maybe = frame.index[(frame.iloc[:, 0] == "").to_numpy()]
    blank = frame.loc[maybe].apply(lambda column: column.str.strip() == "").all(axis=1)
    return frame.drop(index=blank.index[blank])


def _unnamed_and_empty(frame: pd.DataFrame, name: str) -> bool:
    return str(name).startswith("Unnamed: ") and bool((frame[name].str.strip() == "").all())


def undecodable(path: Path) -> CsvError:
    """The error for a file that is not UTF-8 text, naming the first line that is not."""
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                byte = line[error.start]
                return CsvError(
                    f"{path}: line {number}: not UTF-8 text (byte 0x{byte:02X} at column {error.start + 1}); "
                    "save the file as UTF-8 CSV"
                )
    return CsvError(f"{path}: not UTF-8 text; save the file as UTF-8 CSV")
