"""Reading the CSV files users hand the pipeline, as spreadsheets and editors save them."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from chestdet.core.csvfiles import CsvError, csv_rows, read_frame
from chestdet.core.errors import InputError
from tests.support.spreadsheets import as_spreadsheet, with_latin1_row

HEADER = ["image", "label", "x", "note"]
ROWS = [
    ["00000001_000.png", "Mass", "12.5", "plain"],
    ["sub dir/00000002_000.png", "Nodule", "7", "a, comma"],
    ["été 結節.png", "Effusion", "0", 'say "when"'],
    ["00000004_000.png", "NA", "", "null"],
]


@pytest.fixture
def clean(tmp_path: Path) -> Path:
    path = tmp_path / "clean.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, lineterminator="\n").writerows([HEADER, *ROWS])
    return path


def test_a_spreadsheets_save_reads_as_the_clean_file(clean: Path, tmp_path: Path):
    """BOM, CRLF, every field quoted, two empty columns, all-comma rows and blank lines at the end."""
    saved = as_spreadsheet(clean, tmp_path / "saved.csv")
    assert saved.read_bytes().startswith(b"\xef\xbb\xbf\"image\"") and b"\r\n" in saved.read_bytes()

    frame = read_frame(saved)
    assert list(frame.columns) == HEADER
    assert frame.values.tolist() == ROWS
    assert frame.equals(read_frame(clean))

    assert [cells for _, cells in csv_rows(saved)] == [HEADER + ["", ""], *(row + ["", ""] for row in ROWS)]
    assert [cells[:4] for _, cells in csv_rows(saved)] == [cells for _, cells in csv_rows(clean)]


def test_values_stay_the_text_of_the_file(clean: Path):
    """No value is guessed into a number or a missing value: NA and null are text, 007 keeps its zeros."""
    clean.write_text("image,count,label\n007.png,007,NA\nnull,1e3,None\n", encoding="utf-8")
    frame = read_frame(clean)
    assert frame.values.tolist() == [["007.png", "007", "NA"], ["null", "1e3", "None"]]
    assert all(isinstance(value, str) for value in frame.to_numpy().ravel())


def test_blank_rows_are_dropped_and_rows_keep_their_line_numbers(tmp_path: Path):
    path = tmp_path / "gaps.csv"
    path.write_text("image,label\n\na.png,Mass\n,\n\nb.png,Nodule\n\n", encoding="utf-8")
    assert list(csv_rows(path)) == [(1, ["image", "label"]), (3, ["a.png", "Mass"]), (6, ["b.png", "Nodule"])]
    frame = read_frame(path)
    assert frame["image"].tolist() == ["a.png", "b.png"]
    assert (frame.index + 2).tolist() == [3, 6], "the index is each row's line number minus 2"


def test_cells_are_stripped_and_quoted_line_breaks_stay_in_their_cell(tmp_path: Path):
    path = tmp_path / "quoted.csv"
    path.write_bytes(b'image,note\r\n  a.png  ," two\nlines "\r\nb.png,x\r\n')  # in-cell breaks are LF
    assert list(csv_rows(path)) == [(1, ["image", "note"]), (3, ["a.png", "two\nlines"]), (4, ["b.png", "x"])]


def test_an_empty_column_with_a_name_is_kept(tmp_path: Path):
    path = tmp_path / "named.csv"
    path.write_text("image,comment,\na.png,,\nb.png,,\n", encoding="utf-8")
    frame = read_frame(path)
    assert list(frame.columns) == ["image", "comment"]
    assert frame["comment"].tolist() == ["", ""]


@pytest.mark.parametrize("text", [
    "image,label\na.png,Mass,\nb.png,Nodule,\n",  # a writer that ends every data row with a comma
    "image,label\na.png,Mass\nb.png,Nodule,,\n",
    "image,label\na.png,Mass, ,\n,,\nb.png,Nodule\n",
])
def test_empty_cells_beyond_the_header_read_as_the_clean_file(tmp_path: Path, text: str):
    clean = tmp_path / "clean.csv"
    clean.write_text("image,label\na.png,Mass\nb.png,Nodule\n", encoding="utf-8")
    path = tmp_path / "ragged.csv"
    path.write_text(text, encoding="utf-8")
    frame = read_frame(path)
    assert list(frame.columns) == ["image", "label"]
    assert frame.values.tolist() == [["a.png", "Mass"], ["b.png", "Nodule"]]
    assert [cells[:2] for _, cells in csv_rows(path)] == [cells for _, cells in csv_rows(clean)]


@pytest.mark.parametrize(("text", "line"), [
    ("image,label\na.png,Mass,0.9\nb.png,Nodule\n", 2),
    ("image,label\na.png,Mass\nb.png,Nodule,,0.9\n", 3),
])
def test_a_value_beyond_the_header_is_an_error_naming_the_file_and_line(tmp_path: Path, text: str, line: int):
    """Never a silent shift of the columns (pandas would take the extra leading cells for an index)."""
    path = tmp_path / "too wide.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CsvError, match=rf"^{path}: line {line}: a value beyond the header's 2 columns"):
        read_frame(path)


def test_an_unnamed_column_that_holds_values_is_kept(tmp_path: Path):
    path = tmp_path / "unnamed.csv"
    path.write_text("image,\na.png,kept\n", encoding="utf-8")
    assert read_frame(path).values.tolist() == [["a.png", "kept"]]


@pytest.mark.parametrize("reader", [read_frame, lambda path: list(csv_rows(path))], ids=["read_frame", "csv_rows"])
def test_a_file_that_is_not_utf8_is_one_error_naming_the_file_line_and_column(clean: Path, tmp_path: Path, reader):
    bad, line, column = with_latin1_row(clean, tmp_path / "latin 1.csv", "Radiographie_é.png,Mass,1,x")
    with pytest.raises(CsvError) as caught:
        reader(bad)
    message = str(caught.value)
    assert message == (f"{bad}: line {line}: not UTF-8 text (byte 0xE9 at column {column}); "
                       "save the file as UTF-8 CSV")
    assert "\n" not in message and isinstance(caught.value, InputError)


def test_an_empty_file_is_an_error_for_a_table_and_no_rows_for_the_row_reader(tmp_path: Path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(CsvError, match=rf"^{path}: cannot read as CSV \("):
        read_frame(path)
    assert list(csv_rows(path)) == []


def test_a_quote_left_open_is_an_error_naming_the_file(tmp_path: Path):
    path = tmp_path / "open quote.csv"
    path.write_text('image,label\na.png,"Mass\nb.png,Nodule\n', encoding="utf-8")
    with pytest.raises(CsvError, match=rf"^{path}: cannot read as CSV \(.*EOF inside string"):
        read_frame(path)


def test_a_field_too_large_to_be_a_cell_is_an_error_naming_the_file_and_line(tmp_path: Path):
    path = tmp_path / "huge.csv"
    path.write_text("image,label\na.png,Mass\nb.png,\"" + "x" * 200_000 + "\"\n", encoding="utf-8")
    with pytest.raises(CsvError, match=rf"^{path}: line 3: not a readable CSV \(field larger than field limit"):
        list(csv_rows(path))
