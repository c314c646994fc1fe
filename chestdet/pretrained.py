"""Fetch a TF2 Detection Zoo checkpoint by name into workspace/pretrained/, verified and safely unpacked.

    workspace/pretrained/<name>/checkpoint/ckpt-0.*   what fine_tune_checkpoint points at
    workspace/pretrained/<name>/SOURCE.json           URL, archive SHA-256, whether it was verified

A SHA-256 is verified when one is known: given by the user (--sha256) or recorded in
KNOWN_SHA256. None is recorded yet: the zoo publishes no checksums and this project has not been
able to download the archives to compute one; after a trusted download, add its hash there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

from chestdet import atomic
from chestdet.labels import REPO_ROOT

log = logging.getLogger(__name__)

PRETRAINED_DIR = REPO_ROOT / "workspace" / "pretrained"
ZOO_URL = "http://download.tensorflow.org/models/object_detection/tf2/20200711/{name}.tar.gz"
DEFAULT_MODEL = "ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8"
SOURCE_RECORD = "SOURCE.json"
CHECKPOINT_PREFIX = Path("checkpoint") / "ckpt-0"
# Archive SHA-256s verified by a maintainer from a trusted download; none yet (see the docstring).
KNOWN_SHA256: dict[str, str] = {}

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")


class FetchError(Exception):
    """The checkpoint could not be fetched; the message says why and what to do."""


class NoNetworkError(FetchError):
    pass


class ChecksumError(FetchError):
    pass


class UnsafeArchiveError(FetchError):
    pass


def checkpoint_prefix(name: str, directory: Path = PRETRAINED_DIR) -> Path:
    """Where fine_tune_checkpoint points for a fetched zoo model: <dir>/<name>/checkpoint/ckpt-0."""
    return directory / name / CHECKPOINT_PREFIX


def source_record(prefix: str | Path) -> dict | None:
    """SOURCE.json of a fetched checkpoint, given its ckpt-0 prefix; None for other checkpoints."""
    path = Path(prefix).parent.parent / SOURCE_RECORD
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def check_name(name: str) -> None:
    if not NAME_PATTERN.fullmatch(name) or ".." in name:
        raise FetchError(f"not a model name: {name!r} (expected e.g. {DEFAULT_MODEL})")


def check_sha256(value: str) -> str:
    value = value.strip().lower()
    if not SHA256_PATTERN.fullmatch(value):
        raise FetchError(f"not a SHA-256 (64 hex digits): {value!r}")
    return value


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, target: Path, timeout: float = 60.0) -> None:
    """Download `url` to `target` atomically; no network becomes a NoNetworkError that says so."""
    log.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, atomic.atomic_open(target, "wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
    except urllib.error.HTTPError as error:
        message = f"cannot download {url}: HTTP {error.code} {error.reason} (is the model name right?)"
        raise FetchError(message) from error
    except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
        reason = getattr(error, "reason", error)
        raise NoNetworkError(
            f"cannot download {url}: {reason}. This machine seems to have no network access: download the "
            f"archive elsewhere and pass it with --archive FILE"
        ) from error


def safe_extract(archive: Path, directory: Path) -> None:
    """Unpack a .tar.gz refusing absolute paths, '..', links that leave `directory`, and device files."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar.getmembers():
                target = (directory / member.name).resolve()
                if member.name.startswith(("/", "\\")) or not target.is_relative_to(directory.resolve()):
                    raise UnsafeArchiveError(f"{archive}: member {member.name!r} would be written outside {directory}")
            tar.extractall(directory, filter="data")
    except tarfile.FilterError as error:
        raise UnsafeArchiveError(f"{archive}: {error}") from error
    except (tarfile.TarError, EOFError, OSError) as error:
        if isinstance(error, UnsafeArchiveError):
            raise
        raise FetchError(f"{archive} is not a readable .tar.gz archive: {error}") from error


def fetch_checkpoint(
    name: str = DEFAULT_MODEL,
    directory: Path = PRETRAINED_DIR,
    sha256: str | None = None,
    archive: Path | None = None,
    url: str | None = None,
    force: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Fetch (or take from `archive`), verify and unpack a zoo model; returns its ckpt-0 prefix."""
    check_name(name)
    expected = check_sha256(sha256) if sha256 else KNOWN_SHA256.get(name)
    prefix = checkpoint_prefix(name, directory)
    if (prefix.parent / "ckpt-0.index").is_file() and not force:
        log.info("%s is already in %s (use --force to fetch it again)", name, directory / name)
        return prefix
    directory.mkdir(parents=True, exist_ok=True)
    url = url or ZOO_URL.format(name=name)
    with tempfile.TemporaryDirectory(prefix=f".{name}.", dir=directory) as scratch_name:
        scratch = Path(scratch_name)
        if archive is None:
            archive_path = scratch / f"{name}.tar.gz"
            download(url, archive_path, timeout)
        else:
            archive_path = Path(archive)
            if not archive_path.is_file():
                raise FetchError(f"archive not found: {archive_path}")
        actual = sha256_of(archive_path)
        verify(name, archive_path, actual, expected)
        unpacked = scratch / "unpacked"
        unpacked.mkdir()
        safe_extract(archive_path, unpacked)
        model_dir = unpacked / name
        if not (model_dir / CHECKPOINT_PREFIX.parent / "ckpt-0.index").is_file():
            raise FetchError(f"{archive_path} holds no {name}/{CHECKPOINT_PREFIX}.index: not a zoo archive of {name}")
        atomic.write_json(model_dir / SOURCE_RECORD, {
            "name": name,
            "url": url if archive is None else None,
            "archive": str(archive_path) if archive is not None else f"{name}.tar.gz",
            "archive_sha256": actual,
            "verified": expected is not None,
            "fetched": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
        final = directory / name
        if final.exists():
            shutil.rmtree(final)
        model_dir.rename(final)
    log.info("%s -> %s", name, prefix)
    return prefix


def verify(name: str, archive: Path, actual: str, expected: str | None) -> None:
    if expected is None:
        log.warning("no known SHA-256 for %s: not verified; its SHA-256 is %s (recorded in %s)",
                    name, actual, SOURCE_RECORD)
        return
    if actual != expected:
        raise ChecksumError(f"{archive}: SHA-256 {actual} does not match the expected {expected}; not unpacked")
    log.info("SHA-256 verified: %s", actual)
