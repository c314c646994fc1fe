"""rejects.csv: what a stage could not use and why, counted by kind, written whole."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pytest

from chestdet.core.contracts import REJECT_COLUMNS
from chestdet.core.rejects import Reject, RejectKind, count_by_kind, write_rejects

REJECTS = [
    Reject("boxes.csv", "row 3", "unknown label 'Masss'; expected one of Mass, Nodule", RejectKind.UNKNOWN_LABEL,
           "00000001_000.png"),
    Reject("voc/b.xml", "object 2", 'xmax is "12,5", not a number', RejectKind.NOT_A_NUMBER, "b é.png"),
    Reject("boxes.csv", "row 9", "unknown label 'Nodle'", RejectKind.UNKNOWN_LABEL, "00000002_000.png"),
    Reject("images", "c.png", "unreadable image (truncated file)\nsecond line of a library's message",
           RejectKind.UNREADABLE_IMAGE, "c.png"),
    Reject("folds.csv", "row 4", "patient in two folds"),
]


def read_back(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def test_rejects_csv_has_the_contract_columns_and_a_row_per_reject_in_order(tmp_path: Path):
    path = write_rejects(REJECTS, tmp_path / "rejects.csv")
    assert path == tmp_path / "rejects.csv"
    columns, rows = read_back(path)
    assert tuple(columns) == REJECT_COLUMNS
    assert [(row["source"], row["location"], row["image"], row["reason"]) for row in rows] == [
        (r.source, r.location, r.image, r.reason) for r in REJECTS]


def test_no_rejects_is_a_header_only_file(tmp_path: Path):
    path = write_rejects([], tmp_path / "rejects.csv")
    assert read_back(path) == (list(REJECT_COLUMNS), [])


def test_the_folder_is_made_and_an_earlier_file_replaced(tmp_path: Path):
    path = tmp_path / "new" / "folder" / "rejects.csv"
    write_rejects(REJECTS, path)
    write_rejects(REJECTS[:1], path)
    assert len(read_back(path)[1]) == 1


def test_a_failure_while_writing_leaves_the_earlier_file_whole(tmp_path: Path):
    path = write_rejects(REJECTS, tmp_path / "rejects.csv")
    earlier = path.read_bytes()

    def failing() -> Iterator[Reject]:
        yield REJECTS[0]
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_rejects(failing(), path)
    assert path.read_bytes() == earlier
    assert [p.name for p in tmp_path.iterdir()] == ["rejects.csv"], "no temporary file is left"


def test_rejects_are_counted_by_kind_most_frequent_first():
    counts = count_by_kind(REJECTS)
    assert counts == {"unknown label": 2, "not a number": 1, "unreadable image": 1, "other": 1}
    assert next(iter(counts)) == "unknown label"
    assert count_by_kind([]) == {}


def test_the_count_follows_the_kind_not_the_wording():
    same_words = [Reject("a.csv", "row 2", "bad value", RejectKind.NOT_A_NUMBER),
                  Reject("a.csv", "row 3", "bad value", RejectKind.MISSING_VALUE),
                  Reject("a.csv", "row 4", "something else entirely", RejectKind.NOT_A_NUMBER)]
    assert count_by_kind(same_words) == {RejectKind.NOT_A_NUMBER.value: 2, RejectKind.MISSING_VALUE.value: 1}


def test_every_kind_has_a_name_of_its_own_to_show():
    names = [kind.value for kind in RejectKind]
    assert len(set(names)) == len(names) and all(name and name == name.strip() for name in names)
