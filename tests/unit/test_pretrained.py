"""Fetching TF2 zoo checkpoints: verification, safe unpacking, no-network messages (no real download)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import urllib.error
from pathlib import Path

import pytest

from chestdet import pretrained
from chestdet.cli import ExitStatus, run_main
from chestdet.commands.fetch_checkpoint import main

NAME = "ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8"


def add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def zoo_archive(path: Path, name: str = NAME, extra: list[tarfile.TarInfo] | None = None) -> Path:
    """A tarball shaped like the zoo's: <name>/checkpoint/ckpt-0.{index,data-*}, pipeline.config."""
    with tarfile.open(path, "w:gz") as tar:
        add_file(tar, f"{name}/checkpoint/ckpt-0.index", b"index bytes")
        add_file(tar, f"{name}/checkpoint/ckpt-0.data-00000-of-00001", b"weights" * 100)
        add_file(tar, f"{name}/pipeline.config", b"model {}\n")
        for member in extra or []:
            tar.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_archive_with_the_right_sha256_is_unpacked_and_recorded(tmp_path: Path):
    archive = zoo_archive(tmp_path / "model.tar.gz")
    dest = tmp_path / "pretrained dir"
    prefix = pretrained.fetch_checkpoint(NAME, dest, sha256=sha256(archive).upper(), archive=archive)
    assert prefix == dest / NAME / "checkpoint" / "ckpt-0"
    assert (dest / NAME / "checkpoint" / "ckpt-0.data-00000-of-00001").read_bytes() == b"weights" * 100
    source = pretrained.source_record(prefix)
    assert source["archive_sha256"] == sha256(archive)
    assert source["verified"] is True
    assert sorted(p.name for p in dest.iterdir()) == [NAME]  # no scratch left behind


def test_wrong_sha256_unpacks_nothing(tmp_path: Path):
    archive = zoo_archive(tmp_path / "model.tar.gz")
    dest = tmp_path / "pretrained"
    with pytest.raises(pretrained.ChecksumError) as error:
        pretrained.fetch_checkpoint(NAME, dest, sha256="0" * 64, archive=archive)
    assert str(error.value) == (
        f"{archive}: SHA-256 {sha256(archive)} does not match the expected {'0' * 64}; not unpacked"
    )
    assert list(dest.iterdir()) == []


def test_without_a_known_sha256_it_warns_and_records_the_hash(tmp_path: Path, caplog):
    archive = zoo_archive(tmp_path / "model.tar.gz")
    prefix = pretrained.fetch_checkpoint(NAME, tmp_path / "pretrained", archive=archive)
    assert f"no known SHA-256 for {NAME}: not verified; its SHA-256 is {sha256(archive)}" in caplog.text
    assert pretrained.source_record(prefix)["verified"] is False


def test_a_recorded_sha256_is_checked(tmp_path: Path, monkeypatch):
    archive = zoo_archive(tmp_path / "model.tar.gz")
    monkeypatch.setitem(pretrained.KNOWN_SHA256, NAME, "f" * 64)
    with pytest.raises(pretrained.ChecksumError):
        pretrained.fetch_checkpoint(NAME, tmp_path / "pretrained", archive=archive)


def test_download_goes_through_urlopen_and_is_verified(tmp_path: Path):
    archive = zoo_archive(tmp_path / "model.tar.gz")
    prefix = pretrained.fetch_checkpoint(
        NAME, tmp_path / "pretrained", sha256=sha256(archive), url=archive.resolve().as_uri()
    )
    assert (prefix.parent / "ckpt-0.index").read_bytes() == b"index bytes"
    assert pretrained.source_record(prefix)["url"] == archive.resolve().as_uri()


def test_no_network_says_so(tmp_path: Path, monkeypatch, caplog):
    def offline(url, timeout=None):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(pretrained.urllib.request, "urlopen", offline)
    status = run_main(main, [NAME, "--dest", str(tmp_path / "pretrained")])
    assert status == ExitStatus.ERROR
    url = pretrained.ZOO_URL.format(name=NAME)
    assert caplog.records[-1].getMessage() == (
        f"error: cannot download {url}: [Errno -3] Temporary failure in name resolution. This machine seems "
        "to have no network access: download the archive elsewhere and pass it with --archive FILE"
    )
    assert not any((tmp_path / "pretrained").iterdir())


def test_unreachable_url_says_so(tmp_path: Path):
    unreachable = r"cannot download http://127\.0\.0\.1:9/m\.tar\.gz: .*no network"
    with pytest.raises(pretrained.NoNetworkError, match=unreachable):
        pretrained.fetch_checkpoint(NAME, tmp_path, url="http://127.0.0.1:9/m.tar.gz", timeout=5)


def test_the_zoo_url_pattern():
    assert pretrained.ZOO_URL.format(name=NAME) == (
        "http://download.tensorflow.org/models/object_detection/tf2/20200711/"
        "ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8.tar.gz"
    )


def escaping_member(kind: str) -> tarfile.TarInfo:
    if kind == "dotdot":
        info = tarfile.TarInfo(f"{NAME}/../../escaped.txt")
        info.size = 1
    elif kind == "absolute":
        info = tarfile.TarInfo("/tmp/chestdet-absolute-escape.txt")
        info.size = 1
    elif kind == "symlink":
        info = tarfile.TarInfo(f"{NAME}/link")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
    else:
        info = tarfile.TarInfo(f"{NAME}/device")
        info.type = tarfile.CHRTYPE
    return info


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "device"])
def test_archives_that_escape_are_refused(tmp_path: Path, kind: str):
    archive = zoo_archive(tmp_path / "evil.tar.gz", extra=[escaping_member(kind)])
    dest = tmp_path / "deep" / "pretrained"
    with pytest.raises(pretrained.UnsafeArchiveError):
        pretrained.fetch_checkpoint(NAME, dest, archive=archive)
    assert not (tmp_path / "deep" / "escaped.txt").exists()
    assert not Path("/tmp/chestdet-absolute-escape.txt").exists()
    assert list(dest.iterdir()) == []


def test_an_archive_of_something_else_is_refused(tmp_path: Path):
    archive = zoo_archive(tmp_path / "other.tar.gz", name="another_model")
    with pytest.raises(pretrained.FetchError, match=f"holds no {NAME}/checkpoint/ckpt-0.index"):
        pretrained.fetch_checkpoint(NAME, tmp_path / "pretrained", archive=archive)


def test_not_a_tarball(tmp_path: Path):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"<html>not found</html>")
    with pytest.raises(pretrained.FetchError, match="is not a readable .tar.gz archive"):
        pretrained.fetch_checkpoint(NAME, tmp_path / "pretrained", archive=junk)


def test_already_fetched_is_not_fetched_again(tmp_path: Path, monkeypatch):
    archive = zoo_archive(tmp_path / "model.tar.gz")
    pretrained.fetch_checkpoint(NAME, tmp_path / "pretrained", archive=archive)
    monkeypatch.setattr(pretrained, "download", lambda *a, **k: pytest.fail("downloaded again"))
    assert pretrained.fetch_checkpoint(NAME, tmp_path / "pretrained") == pretrained.checkpoint_prefix(
        NAME, tmp_path / "pretrained"
    )


@pytest.mark.parametrize("name", ["../etc", "a/b", "", ".."])
def test_bad_names_are_refused(tmp_path: Path, name: str, caplog):
    assert run_main(main, [name, "--dest", str(tmp_path)]) == ExitStatus.ERROR
    assert caplog.records[-1].getMessage().startswith(f"error: not a model name: {name!r}")


def test_cli_with_an_archive_and_a_bad_sha256_text(tmp_path: Path, caplog):
    archive = zoo_archive(tmp_path / "model.tar.gz")
    assert run_main(main, [NAME, "--archive", str(archive), "--sha256", "xyz", "--dest", str(tmp_path)]) == 2
    assert caplog.records[-1].getMessage() == "error: not a SHA-256 (64 hex digits): 'xyz'"
    assert run_main(main, [NAME, "--archive", str(archive), "--dest", str(tmp_path / "p")]) == 0
    assert json.loads((tmp_path / "p" / NAME / "SOURCE.json").read_text())["archive"] == str(archive)
