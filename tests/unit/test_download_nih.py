"""scripts/download_nih.py against local archives served through file:// URLs."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from chestdet.commands.download_nih import main
from chestdet.nih_download import NIH_ARCHIVE_URLS, DownloadError, download, fetch_nih_images, images_named_in
from tests.conftest import SAMPLE_CSV, SAMPLE_IMAGES


def make_archive(path: Path, members: dict[str, bytes]) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path.as_uri()


def test_twelve_official_archives():
    assert len(NIH_ARCHIVE_URLS) == 12
    assert len(set(NIH_ARCHIVE_URLS)) == 12
    assert all(url.startswith("https://nihcc.box.com/shared/static/") for url in NIH_ARCHIVE_URLS)


def test_box_list_names_880_images():
    assert len(images_named_in(SAMPLE_CSV)) == 880


def test_extracts_only_wanted_images_and_reports_missing(tmp_path):
    real = sorted(SAMPLE_IMAGES.glob("*.png"))[:3]
    first = make_archive(tmp_path / "a.tar.gz", {f"images/{p.name}": p.read_bytes() for p in real[:2]})
    second = make_archive(tmp_path / "b.tar.gz", {f"images/{real[2].name}": real[2].read_bytes(),
                                                   "images/not_wanted.png": b"x"})
    wanted = {p.name for p in real} | {"99999999_000.png"}
    missing = fetch_nih_images(wanted, tmp_path / "dl", tmp_path / "out" / "images", urls=[first, second])
    assert missing == {"99999999_000.png"}
    for path in real:
        assert (tmp_path / "out" / "images" / path.name).read_bytes() == path.read_bytes()
    assert not (tmp_path / "out" / "images" / "not_wanted.png").exists()
    assert not list((tmp_path / "dl").glob("*.tar.gz")), "archives are removed after extraction by default"


def test_member_names_cannot_escape_the_output_folder(tmp_path):
    url = make_archive(tmp_path / "evil.tar.gz", {"../../escape.png": b"bad", "/abs/escape2.png": b"bad"})
    fetch_nih_images({"escape.png", "escape2.png"}, tmp_path / "dl", tmp_path / "out", urls=[url])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["escape.png", "escape2.png"]
    assert not (tmp_path.parent / "escape.png").exists()


def test_unreachable_host_says_what_to_do(tmp_path):
    with pytest.raises(DownloadError, match="cannot download .*download it by hand from https://nihcc"):
        download((tmp_path / "nowhere.tar.gz").as_uri(), tmp_path / "x.tar.gz")
    assert not (tmp_path / "x.tar.gz").exists()


def test_cli_missing_box_list_is_one_line_error(tmp_path, caplog):
    from chestdet.cli import ExitStatus, run_main

    status = run_main(main, ["--bbox-csv", str(tmp_path / "no such.csv"), "--output-dir", str(tmp_path)])
    assert status == ExitStatus.ERROR
    assert f"error: {tmp_path / 'no such.csv'}: box list not found" in caplog.text



def test_log_lines_print_once_even_after_a_library_logs_through_the_root_logger():
    import subprocess
    import sys

    code = (
        "import logging\n"
        "from chestdet.cli import setup_logging\n"
        "setup_logging()\n"
        "logging.info('a library line')\n"  # on a bare root logger this runs logging.basicConfig()
        "logging.getLogger('chestdet.demo').info('stage done')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stderr.count("stage done") == 1, result.stderr
