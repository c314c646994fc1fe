"""Outputs appear whole or not at all, with ordinary permissions."""

from __future__ import annotations

import os

import pytest

from chestdet.core.atomic import atomic_open, write_json, write_text


def test_file_appears_only_when_complete(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError):
        with atomic_open(target) as handle:
            handle.write("half")
            raise RuntimeError("crash mid-write")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == [], "no temporary file is left behind"


def test_replaces_existing_file_and_creates_folders(tmp_path):
    target = tmp_path / "a" / "b" / "out.json"
    write_json(target, {"x": 1})
    write_json(target, {"x": 2})
    assert target.read_text() == '{\n  "x": 2\n}\n'


def test_permissions_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "report.md", "ok")
    finally:
        os.umask(old)
    assert (tmp_path / "report.md").stat().st_mode & 0o777 == 0o644
