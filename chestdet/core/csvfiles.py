"""Reading the CSV files users hand the pipeline, as spreadsheets and editors write them.

UTF-8 with or without a byte-order mark, LF or CRLF line ends, quoted fields, blank rows (also the
all-comma rows a spreadsheet leaves) and trailing empty columns all read as the clean file. A file
that is not UTF-8 is one `CsvError` naming the file and line, never a traceback.
"""

from __future__ import annotations

import csv
import warnings
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
        frame = _read_table(path)
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


def _read_table(path: Path) -> pd.DataFrame:
    """pandas' reading, where a row may end in more (empty) cells than the header names: pandas would
    take a longer row's first cells for an index and shift every column, or stop at it."""
    options = {"dtype": str, "keep_default_na": False, "encoding": ENCODING, "skip_blank_lines": False,
               "index_col": False}
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.ParserWarning)  # pandas warns when it drops the extra cells
        try:
            return pd.read_csv(path, **options)
        except (pd.errors.ParserWarning, pd.errors.ParserError):
            pass
    return pd.read_csv(path, usecols=range(_checked_width(path)), **options)


def _checked_width(path: Path) -> int:
    """The header's number of columns; a `CsvError` naming the first row with a value beyond them."""
    with open(path, newline="", encoding=ENCODING) as handle:
        reader = csv.reader(handle)
        try:
            width = len(next(reader, []))
            for row in reader:
                if any(cell.strip() for cell in row[width:]):
                    raise CsvError(f"{path}: line {reader.line_num}: a value beyond the header's {width} columns; "
                                   "name its column in the header or remove it")
        except csv.Error as error:
            raise CsvError(f"{path}: line {reader.line_num}: not a readable CSV ({error})") from None
    return width


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
