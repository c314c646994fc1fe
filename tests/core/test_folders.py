"""Walking a user's data folder: past hidden files and OS litter (counted, not read), into linked sub-folders,
each real folder once, through symlink loops."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from chestdet.core.folders import is_litter, walk_visible


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def walked(root: Path, skipped: list[str] | None = None) -> dict[str, list[str]]:
    """{folder relative to root: sorted file names} of the walk's first 50 folders (a loop fails, not hangs)."""
    return {os.path.relpath(folder, root): sorted(files)
            for folder, files in itertools.islice(walk_visible(root, skipped), 50)}


@pytest.mark.parametrize("name", [".DS_Store", "._00001.png", ".hidden.png", "Thumbs.db", "THUMBS.DB", "ehthumbs.db",
                                  "desktop.ini", "Desktop.ini", "__MACOSX", "$RECYCLE.BIN",
                                  "System Volume Information", ".git", ".dvc"])
def test_hidden_names_and_what_operating_systems_leave_are_litter(name: str):
    assert is_litter(name)


@pytest.mark.parametrize("name", ["00001_000.png", "thumbs.png", "desktop", "images", "a.DS_Store", "macosx"])
def test_the_users_files_are_not_litter(name: str):
    assert not is_litter(name)


def test_litter_is_left_out_and_counted_once_per_file_or_folder(tmp_path: Path):
    root = tmp_path / "data"
    touch(root / "a.png")
    touch(root / ".DS_Store")
    touch(root / "._a.png")
    touch(root / "Thumbs.db")
    touch(root / "sub" / "b.png")
    touch(root / "sub" / "desktop.ini")
    touch(root / "__MACOSX" / "sub" / "._b.png")
    touch(root / ".git" / "annex" / "objects" / "xx" / "b.png")
    skipped: list[str] = []
    assert walked(root, skipped) == {".": ["a.png"], "sub": ["b.png"]}
    assert sorted(os.path.relpath(path, root) for path in skipped) == sorted(
        [".DS_Store", "._a.png", "Thumbs.db", "__MACOSX", ".git", os.path.join("sub", "desktop.ini")])


def test_without_a_list_for_them_litter_is_only_left_out(tmp_path: Path):
    touch(tmp_path / "a.png")
    touch(tmp_path / ".DS_Store")
    assert walked(tmp_path) == {".": ["a.png"]}


def test_folders_are_walked_in_name_order(tmp_path: Path):
    for name in ("b", "a", "c", "a/z", "a/y"):
        touch(tmp_path / name / "f.png")
    assert [os.path.relpath(folder, tmp_path) for folder, _ in itertools.islice(walk_visible(tmp_path), 50)] == [
        ".", "a", os.path.join("a", "y"), os.path.join("a", "z"), "b", "c"]


def test_a_linked_sub_folder_is_walked_and_a_second_link_to_it_is_not(tmp_path: Path):
    store = tmp_path / "elsewhere" / "batch 2"
    touch(store / "c.png")
    root = tmp_path / "data"
    touch(root / "a.png")
    os.symlink(store, root / "batch 2")
    os.symlink(store, root / "zz same batch again")
    assert walked(root) == {".": ["a.png"], "batch 2": ["c.png"]}


def test_a_link_to_a_folder_inside_the_walk_does_not_repeat_it(tmp_path: Path):
    touch(tmp_path / "a" / "x.png")
    os.symlink(tmp_path / "a", tmp_path / "b")
    assert walked(tmp_path) == {".": [], "a": ["x.png"]}


def test_links_to_a_parent_end_the_walk_instead_of_looping(tmp_path: Path):
    root = tmp_path / "data"
    touch(root / "sub" / "deeper" / "d.png")
    os.symlink(root, root / "sub" / "up")
    os.symlink("..", root / "sub" / "deeper" / "parent")
    os.symlink(".", root / "self")
    assert walked(root) == {".": [], "sub": [], os.path.join("sub", "deeper"): ["d.png"]}


def test_a_linked_root_is_walked(tmp_path: Path):
    touch(tmp_path / "real" / "a.png")
    os.symlink(tmp_path / "real", tmp_path / "link")
    assert walked(tmp_path / "link") == {".": ["a.png"]}


def test_a_broken_link_is_listed_as_a_file_for_the_reader_to_report(tmp_path: Path):
    touch(tmp_path / "a.png")
    os.symlink(tmp_path / "gone.png", tmp_path / "b.png")
    assert walked(tmp_path) == {".": ["a.png", "b.png"]}
