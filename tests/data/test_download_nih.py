"""scripts/download_nih.py against local archives served through file:// URLs."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from chestdet.commands.download_nih import main
from chestdet.data.nih_download import NIH_ARCHIVE_URLS, DownloadError, download, fetch_nih_images, images_named_in
from tests.conftest import REPO, SAMPLE_CSV, SAMPLE_IMAGES
from tests.support.range_server import Files, serving


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


def archive_bytes(tmp_path: Path, count: int = 3) -> tuple[bytes, list[Path]]:
    real = sorted(SAMPLE_IMAGES.glob("*.png"))[:count]
    make_archive(tmp_path / "real.tar.gz", {f"images/{p.name}": p.read_bytes() for p in real})
    return (tmp_path / "real.tar.gz").read_bytes(), real


def test_a_partial_archive_is_continued_with_a_range_request(tmp_path: Path):
    data, real = archive_bytes(tmp_path)
    (tmp_path / "dl").mkdir()
    (tmp_path / "dl" / "images_001.tar.gz.part").write_bytes(data[:1000])
    files = Files({"/a.gz": data})
    with serving(files) as base:
        missing = fetch_nih_images({p.name for p in real}, tmp_path / "dl", tmp_path / "images", urls=[f"{base}/a.gz"])
    assert missing == set()
    assert files.requests == [("/a.gz", "bytes=1000-")]
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == sorted(p.name for p in real)
    assert list((tmp_path / "dl").iterdir()) == []


def test_a_damaged_archive_is_fetched_again(tmp_path: Path, caplog):
    data, real = archive_bytes(tmp_path)
    files = Files({"/a.gz": [data[: len(data) // 2], data]})
    with serving(files) as base:
        missing = fetch_nih_images({p.name for p in real}, tmp_path / "dl", tmp_path / "images", urls=[f"{base}/a.gz"])
    assert missing == set()
    assert len(files.requests) == 2
    assert "images_001.tar.gz: not a readable tar.gz archive" in caplog.text
    assert "deleted it, fetching it again" in caplog.text
    assert not [p for p in (tmp_path / "images").iterdir() if p.name.startswith(".")]


def test_an_archive_damaged_twice_is_a_clear_error(tmp_path: Path):
    with serving(Files({"/a.gz": b"<html>quota exceeded</html>"})) as base:
        with pytest.raises(DownloadError, match=r"images_001.tar.gz: not a readable tar.gz archive .*, twice: the "
                           "download is damaged"):
            fetch_nih_images({"x.png"}, tmp_path / "dl", tmp_path / "images", urls=[f"{base}/a.gz"])
    assert not (tmp_path / "dl" / "images_001.tar.gz").exists()


def test_a_killed_download_leaves_only_the_part_file_and_continues(tmp_path: Path):
    data, real = archive_bytes(tmp_path, count=6)
    wanted = sorted(p.name for p in real)
    code = ("import sys\nfrom pathlib import Path\nfrom chestdet.data.nih_download import fetch_nih_images\n"
            "fetch_nih_images(set(sys.argv[2:]), Path(sys.argv[1]) / 'dl', Path(sys.argv[1]) / 'images', "
            "urls=[sys.argv[1] and __import__('os').environ['URL']])\n")
    slow = Files({"/a.gz": data}, seconds_per_kib=0.02)
    with serving(slow) as base:
        env = {**os.environ, "URL": f"{base}/a.gz", "PYTHONPATH": str(REPO)}
        child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path), *wanted], env=env,
                                 stderr=subprocess.DEVNULL)
        part = tmp_path / "dl" / "images_001.tar.gz.part"
        deadline = time.monotonic() + 60
        while not (part.exists() and part.stat().st_size > 20_000) and time.monotonic() < deadline:
            time.sleep(0.1)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert [p.name for p in (tmp_path / "dl").iterdir()] == ["images_001.tar.gz.part"]
    kept = part.stat().st_size
    assert 0 < kept < len(data)
    files = Files({"/a.gz": data})
    with serving(files) as base:
        missing = fetch_nih_images(set(wanted), tmp_path / "dl", tmp_path / "images", urls=[f"{base}/a.gz"])
    assert missing == set()
    assert files.requests == [("/a.gz", f"bytes={kept}-")]
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == wanted


def test_a_stray_part_image_from_a_killed_extraction_is_removed(tmp_path: Path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / ".00000001_000.png.part").write_bytes(b"half")
    fetch_nih_images(set(), tmp_path / "dl", tmp_path / "images", urls=[])
    assert list((tmp_path / "images").iterdir()) == []


def test_cli_missing_box_list_is_one_line_error(tmp_path, caplog):
    from chestdet.commands.cli import ExitStatus, run_main

    status = run_main(main, ["--bbox-csv", str(tmp_path / "no such.csv"), "--output-dir", str(tmp_path)])
    assert status == ExitStatus.ERROR
    assert f"error: {tmp_path / 'no such.csv'}: box list not found" in caplog.text



def test_log_lines_print_once_even_after_a_library_logs_through_the_root_logger():
    import subprocess
    import sys

    code = (
        "import logging\n"
        "from chestdet.commands.cli import setup_logging\n"
        "setup_logging()\n"
        "logging.info('a library line')\n"  # on a bare root logger this runs logging.basicConfig()
        "logging.getLogger('chestdet.demo').info('stage done')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stderr.count("stage done") == 1, result.stderr
