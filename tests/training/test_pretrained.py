"""Fetching TF2 zoo checkpoints: pinned digests, resumable HTTPS download, safe unpacking, no-network messages
(no real download: a local server and archives the tests make)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import urllib.error
from pathlib import Path

import pytest

from chestdet.commands.cli import ExitStatus, run_main
from chestdet.commands.fetch_checkpoint import main
from chestdet.core import http_download
from chestdet.training import pretrained
from tests.support.range_server import Files, serving

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


ZOO_FILES = {"checkpoint/ckpt-0.index": b"index bytes", "checkpoint/ckpt-0.data-00000-of-00001": b"weights" * 100,
             "pipeline.config": b"model {}\n"}


@pytest.fixture(autouse=True)
def pinned_test_files(monkeypatch):
    """Pin the digests of the test archive's files for NAME, as ZOO_DIGESTS pins the official ones."""
    pins = {path: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()} for path, data in ZOO_FILES.items()}
    data = ZOO_FILES["checkpoint/ckpt-0.data-00000-of-00001"]
    pins["checkpoint/ckpt-0.data-00000-of-00001"] = {
        "bytes": len(data), "git_blob": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()}
    monkeypatch.setitem(pretrained.ZOO_DIGESTS, NAME, pins)
    return pins


def test_official_digests_are_pinned_for_both_fpnlite_models():
    pins = pretrained.ZOO_DIGESTS["ssd_mobilenet_v2_fpnlite_640x640_coco17_tpu-8"]  # the fixture replaced 320 only
    assert pins["checkpoint/ckpt-0.index"] == {
        "bytes": 6872, "sha256": "af91d1d5773afbbfe582ac6e9762f6629f28d99233f6793cf1abc3608ac3b1a8"}
    assert pins["checkpoint/ckpt-0.data-00000-of-00001"] == {
        "bytes": 10752177, "git_blob": "d840f3e144bfaae5f57de38016deba2bff78ce2f"}


def test_git_blob_id_is_what_git_hash_object_gives(tmp_path: Path):
    path = tmp_path / "hello"
    path.write_bytes(b"hello\n")
    digests = pretrained.file_digests(path)
    assert digests["git_blob"] == "ce013625030ba8dba906f756967f9e9ca394464a"  # git hash-object of "hello\n"
    assert digests["sha256"] == hashlib.sha256(b"hello\n").hexdigest()
    assert digests["bytes"] == 6


def test_a_file_that_differs_from_its_pinned_digest_is_refused(tmp_path: Path, pinned_test_files):
    archive = zoo_archive(tmp_path / "model.tar.gz")
    pinned_test_files["checkpoint/ckpt-0.data-00000-of-00001"]["git_blob"] = "0" * 40
    dest = tmp_path / "pretrained"
    with pytest.raises(pretrained.ChecksumError, match=r"ckpt-0.data-00000-of-00001: git_blob .*, pinned 0{40}: not "
                       "the official file; not unpacked"):
        pretrained.fetch_checkpoint(NAME, dest, archive=archive)
    assert list(dest.iterdir()) == []


def test_the_real_pins_refuse_other_bytes(tmp_path: Path, monkeypatch):
    monkeypatch.undo()  # the official digests
    archive = zoo_archive(tmp_path / "model.tar.gz")
    with pytest.raises(pretrained.ChecksumError, match="checkpoint/ckpt-0.index: bytes 11, pinned 6856"):
        pretrained.fetch_checkpoint(NAME, tmp_path / "pretrained", archive=archive)


def test_archive_with_the_right_sha256_is_unpacked_and_recorded(tmp_path: Path):
    archive = zoo_archive(tmp_path / "model.tar.gz")
    dest = tmp_path / "pretrained dir"
    prefix = pretrained.fetch_checkpoint(NAME, dest, sha256=sha256(archive).upper(), archive=archive)
    assert prefix == dest / NAME / "checkpoint" / "ckpt-0"
    assert (dest / NAME / "checkpoint" / "ckpt-0.data-00000-of-00001").read_bytes() == b"weights" * 100
    source = pretrained.source_record(prefix)
    assert source["archive_sha256"] == sha256(archive)
    assert source["archive_verified"] is True
    assert source["verified"] is True
    assert source["files"]["checkpoint/ckpt-0.index"]["sha256"] == hashlib.sha256(b"index bytes").hexdigest()
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


def test_a_model_without_pinned_digests_is_unpacked_as_not_verified(tmp_path: Path, caplog):
    other = "ssd_resnet50_v1_fpn_640x640_coco17_tpu-8"
    archive = zoo_archive(tmp_path / "model.tar.gz", name=other)
    prefix = pretrained.fetch_checkpoint(other, tmp_path / "pretrained", archive=archive)
    assert f"no pinned digests for {other}: its files are not verified" in caplog.text
    source = pretrained.source_record(prefix)
    assert source["verified"] is False
    assert source["files"]["pipeline.config"]["sha256"] == hashlib.sha256(b"model {}\n").hexdigest()


def test_verify_checkpoint_wherever_the_files_are(tmp_path: Path):
    pretrained.fetch_checkpoint(NAME, tmp_path / "pretrained", archive=zoo_archive(tmp_path / "model.tar.gz"))
    copy = tmp_path / "copied"
    copy.mkdir()
    for path in (tmp_path / "pretrained" / NAME / "checkpoint").glob("ckpt-0.*"):
        (copy / path.name).write_bytes(path.read_bytes())
    result = pretrained.verify_checkpoint(copy / "ckpt-0")
    assert (result["verified"], result["model"]) == (True, NAME)
    (copy / "ckpt-0.index").write_bytes(b"index bytez")
    result = pretrained.verify_checkpoint(copy / "ckpt-0")
    assert result["verified"] is False
    assert result["reason"].startswith(f"not the official {NAME} files (ckpt-0.index: sha256 ")


def test_download_goes_through_urlopen_and_is_verified(tmp_path: Path):
    archive = zoo_archive(tmp_path / "model.tar.gz")
    prefix = pretrained.fetch_checkpoint(
        NAME, tmp_path / "pretrained", sha256=sha256(archive), url=archive.resolve().as_uri()
    )
    assert (prefix.parent / "ckpt-0.index").read_bytes() == b"index bytes"
    assert pretrained.source_record(prefix)["url"] == archive.resolve().as_uri()


def test_download_resumes_a_partial_file_with_a_range_request(tmp_path: Path):
    archive = zoo_archive(tmp_path / "model.tar.gz").read_bytes()
    dest = tmp_path / "pretrained"
    dest.mkdir()
    http_download.part_path(dest / f".{NAME}.tar.gz").write_bytes(archive[:100])
    files = Files({"/m.tar.gz": archive})
    with serving(files) as base:
        prefix = pretrained.fetch_checkpoint(NAME, dest, url=f"{base}/m.tar.gz")
    assert files.requests == [("/m.tar.gz", "bytes=100-")]
    assert (prefix.parent / "ckpt-0.index").read_bytes() == b"index bytes"
    assert sorted(p.name for p in dest.iterdir()) == [NAME]


def test_a_broken_download_is_kept_and_continued(tmp_path: Path, caplog):
    archive = zoo_archive(tmp_path / "model.tar.gz").read_bytes()
    dest = tmp_path / "pretrained"
    files = Files({"/m.tar.gz": archive}, cut_after=50)
    with serving(files) as base:
        with pytest.raises(pretrained.FetchError, match=r"broke off|ended at 50 of"):
            pretrained.fetch_checkpoint(NAME, dest, url=f"{base}/m.tar.gz")
        assert http_download.part_path(dest / f".{NAME}.tar.gz").stat().st_size == 50
        pretrained.fetch_checkpoint(NAME, dest, url=f"{base}/m.tar.gz")
    assert files.requests[-1] == ("/m.tar.gz", "bytes=50-")
    assert sorted(p.name for p in dest.iterdir()) == [NAME]


def test_a_server_without_ranges_sends_it_all_again(tmp_path: Path):
    archive = zoo_archive(tmp_path / "model.tar.gz").read_bytes()
    target = tmp_path / "m.tar.gz"
    http_download.part_path(target).write_bytes(b"garbage that is not the start")
    with serving(Files({"/m.tar.gz": archive}, ranges=False)) as base:
        http_download.fetch(f"{base}/m.tar.gz", target, progress=False)
    assert target.read_bytes() == archive
    assert not http_download.part_path(target).exists()


def test_a_complete_part_file_is_just_renamed(tmp_path: Path):
    target = tmp_path / "m.tar.gz"
    http_download.part_path(target).write_bytes(b"0123456789")
    with serving(Files({"/m.tar.gz": b"0123456789"})) as base:
        http_download.fetch(f"{base}/m.tar.gz", target, progress=False)
    assert target.read_bytes() == b"0123456789"


def test_no_network_says_so(tmp_path: Path, monkeypatch, caplog):
    def offline(url, timeout=None):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(http_download.urllib.request, "urlopen", offline)
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
        "https://download.tensorflow.org/models/object_detection/tf2/20200711/"
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
