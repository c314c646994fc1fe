"""Resumable downloads against a real local HTTP server: a .part file continued with Range, servers that
ignore Range, broken and refused connections."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from chestdet.core.errors import ChestdetError
from chestdet.core.http_download import DownloadError, OfflineError, fetch, part_path
from tests.support.range_server import Files, serving

DATA = bytes(range(256)) * 40 + b"the end"  # 10 247 bytes, every offset distinguishable


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def folder_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_fresh_download_asks_for_the_whole_file_and_appears_only_complete(tmp_path: Path):
    files = Files({"/f.bin": DATA})
    target = tmp_path / "new folder" / "f.bin"
    with serving(files) as base:
        assert fetch(f"{base}/f.bin", target, progress=False) == target
    assert target.read_bytes() == DATA
    assert files.requests == [("/f.bin", None)]
    assert folder_names(target.parent) == ["f.bin"]


def test_a_part_file_is_continued_with_a_range_request(tmp_path: Path):
    target = tmp_path / "f.bin"
    part_path(target).write_bytes(DATA[:3000])
    files = Files({"/f.bin": DATA})
    with serving(files) as base:
        fetch(f"{base}/f.bin", target, progress=False)
    assert files.requests == [("/f.bin", "bytes=3000-")]
    assert target.read_bytes() == DATA
    assert folder_names(tmp_path) == ["f.bin"]


def test_a_server_that_ignores_range_sends_it_all_and_the_part_is_not_doubled(tmp_path: Path):
    target = tmp_path / "f.bin"
    part_path(target).write_bytes(DATA[:3000])
    files = Files({"/f.bin": DATA}, ranges=False)
    with serving(files) as base:
        fetch(f"{base}/f.bin", target, progress=False)
    assert files.requests == [("/f.bin", "bytes=3000-")]
    assert target.read_bytes() == DATA
    assert folder_names(tmp_path) == ["f.bin"]


def test_a_part_longer_than_the_file_is_dropped_and_the_file_fetched_again(tmp_path: Path, caplog):
    target = tmp_path / "f.bin"
    part_path(target).write_bytes(DATA + b"bytes of an older, longer version")
    files = Files({"/f.bin": DATA})
    with serving(files) as base:
        fetch(f"{base}/f.bin", target, progress=False)
    assert files.requests == [("/f.bin", f"bytes={len(DATA) + 33}-"), ("/f.bin", None)]
    assert target.read_bytes() == DATA
    assert "cannot continue the partial download; starting it again" in caplog.text


def test_a_part_that_already_holds_every_byte_is_renamed_without_fetching_again(tmp_path: Path):
    target = tmp_path / "f.bin"
    part_path(target).write_bytes(DATA)
    files = Files({"/f.bin": DATA})
    with serving(files) as base:
        fetch(f"{base}/f.bin", target, progress=False)
    assert files.requests == [("/f.bin", f"bytes={len(DATA)}-")]
    assert target.read_bytes() == DATA and not part_path(target).exists()


def test_a_connection_cut_short_keeps_what_arrived_and_the_next_try_continues_it(tmp_path: Path):
    target = tmp_path / "f.bin"
    files = Files({"/f.bin": DATA}, cut_after=4000)
    with serving(files) as base:
        url = f"{base}/f.bin"
        with pytest.raises(DownloadError, match=rf"download of {url} (ended at 4000 of {len(DATA)} bytes|broke off "
                           r"at 4000 bytes).*run again to continue it \(kept as .*f\.bin\.part\)"):
            fetch(url, target, progress=False)
        assert not target.exists() and part_path(target).read_bytes() == DATA[:4000]
        fetch(url, target, progress=False)
    assert files.requests[-1] == ("/f.bin", "bytes=4000-")
    assert target.read_bytes() == DATA


def test_an_http_error_names_the_url_and_status_and_keeps_the_part(tmp_path: Path):
    target = tmp_path / "f.bin"
    part_path(target).write_bytes(DATA[:100])
    with serving(Files({})) as base:
        with pytest.raises(DownloadError, match=rf"^cannot download {base}/missing\.bin: HTTP 404") as caught:
            fetch(f"{base}/missing.bin", target, progress=False)
    assert not isinstance(caught.value, OfflineError)
    assert not target.exists() and part_path(target).read_bytes() == DATA[:100]


def test_an_unreachable_host_is_an_offline_error_and_the_part_is_kept_for_later(tmp_path: Path):
    target = tmp_path / "f.bin"
    part_path(target).write_bytes(DATA[:100])
    url = f"http://127.0.0.1:{closed_port()}/f.bin"
    with pytest.raises(OfflineError, match=rf"^cannot download {url}: .*refused") as caught:
        fetch(url, target, timeout=5, progress=False)
    assert isinstance(caught.value, ChestdetError) and "\n" not in str(caught.value)
    assert folder_names(tmp_path) == ["f.bin.part"] and part_path(target).read_bytes() == DATA[:100]


def test_the_part_file_sits_beside_the_target_under_a_fixed_name(tmp_path: Path):
    assert part_path(tmp_path / "images_001.tar.gz") == tmp_path / "images_001.tar.gz.part"
    assert os.path.dirname(part_path(Path("a/b.zip"))) == "a"
