"""Fetch a TF2 Detection Zoo checkpoint by name into workspace/pretrained/, verified and safely unpacked.

    workspace/pretrained/<name>/checkpoint/ckpt-0.*   what fine_tune_checkpoint points at
    workspace/pretrained/<name>/SOURCE.json           URL, archive SHA-256, every file's digests, verified

The download goes over HTTPS and continues a partial one (HTTP Range). The unpacked files are checked
against ZOO_DIGESTS, digests of the official files that independent public copies agree on: a SHA-256,
or for the weights, whose SHA-256 is not known, the git blob id (SHA-1 of b"blob <size>\0" + the bytes,
what git names a committed file by). A file that does not match is refused; a model without pinned
digests is unpacked but recorded as not verified, and train.sh then needs --allow-unverified.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tarfile
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from chestdet.core import atomic, http_download
from chestdet.core.errors import ChestdetError
from chestdet.core.resources import workspace
from chestdet.training.checkpoints import checkpoint_files, sha256_file

log = logging.getLogger(__name__)

PRETRAINED_DIR = workspace() / "pretrained"
ZOO_URL = "https://download.tensorflow.org/models/object_detection/tf2/20200711/{name}.tar.gz"
DEFAULT_MODEL = "ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8"
SOURCE_RECORD = "SOURCE.json"
CHECKPOINT_PREFIX = Path("checkpoint") / "ckpt-0"
DATA_FILE = "checkpoint/ckpt-0.data-00000-of-00001"
INDEX_FILE = "checkpoint/ckpt-0.index"
# The official files, by path inside <name>/: bytes, and a SHA-256 or a git blob id.
ZOO_DIGESTS: dict[str, dict[str, dict]] = {
    "ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8": {
        INDEX_FILE: {"bytes": 6856, "sha256": "834034266e707154e342b0d21b96e9def568444485f8075953bac4d065131510"},
        DATA_FILE: {"bytes": 10752177, "git_blob": "6f76d65ba3854323048c358b7fb639eaf14960d3"},
        "pipeline.config": {"sha256": "ff7661add79fdbd6671d1998c446aba652eeb7688cf12547952be529b09057d1"},
    },
    "ssd_mobilenet_v2_fpnlite_640x640_coco17_tpu-8": {
        INDEX_FILE: {"bytes": 6872, "sha256": "af91d1d5773afbbfe582ac6e9762f6629f28d99233f6793cf1abc3608ac3b1a8"},
        DATA_FILE: {"bytes": 10752177, "git_blob": "d840f3e144bfaae5f57de38016deba2bff78ce2f"},
        "pipeline.config": {"sha256": "1f30f631ea633e41c848f55186a6ca4dcc86ad3adef5964c92c194fe59e0bc88"},
    },
}

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")


class FetchError(ChestdetError):
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


def file_digests(path: Path) -> dict:
    """Size, SHA-256 and git blob id of a file, in one read."""
    size = path.stat().st_size
    sha256, blob = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % size)  # git names a blob by this SHA-1
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            sha256.update(block)
            blob.update(block)
    return {"bytes": size, "sha256": sha256.hexdigest(), "git_blob": blob.hexdigest()}


def mismatches(pinned: dict, actual: dict) -> list[str]:
    """How a file's digests differ from the pinned ones (empty when they all match)."""
    return [f"{key} {actual[key]}, pinned {value}" for key, value in pinned.items() if actual[key] != value]


def verify_files(name: str, model_dir: Path) -> dict:
    """Check the unpacked files of zoo model `name` against ZOO_DIGESTS; raise ChecksumError on a mismatch.

    Returns {"verified": bool, "files": {path: digests}} for SOURCE.json.
    """
    pinned = ZOO_DIGESTS.get(name)
    files = {str(p.relative_to(model_dir)): file_digests(p) for p in sorted(model_dir.rglob("*")) if p.is_file()}
    if pinned is None:
        log.warning("no pinned digests for %s: its files are not verified (train.sh will need --allow-unverified)",
                    name)
        return {"verified": False, "files": files}
    for path, digests in pinned.items():
        if path not in files:
            raise ChecksumError(f"{name}: the archive has no {path}; not unpacked")
        wrong = mismatches(digests, files[path])
        if wrong:
            raise ChecksumError(f"{name}/{path}: {'; '.join(wrong)}: not the official file; not unpacked")
    log.info("%s: %s match the pinned digests", name, ", ".join(pinned))
    return {"verified": True, "files": files}


def verify_checkpoint(prefix: str | Path) -> dict:
    """Whether a start checkpoint's files are those of a zoo model in ZOO_DIGESTS, wherever they are.

    Returns {"verified", "model" (the zoo name or None), "reason" (when not verified), "files": digests}.
    """
    found = {path.name: file_digests(path) for path in checkpoint_files(prefix)}
    reasons = []
    for model, pinned in ZOO_DIGESTS.items():
        wanted = {Path(path).name: digests for path, digests in pinned.items() if path.startswith("checkpoint/")}
        if set(wanted) != set(found):
            continue
        wrong = [f"{file}: {'; '.join(mismatches(digests, found[file]))}"
                 for file, digests in wanted.items() if mismatches(digests, found[file])]
        if not wrong:
            return {"verified": True, "model": model, "files": found}
        reasons.append(f"not the official {model} files ({', '.join(wrong)})")
    reason = reasons[0] if reasons else "its files match no checkpoint whose digests are pinned"
    return {"verified": False, "model": None, "reason": reason, "files": found}


def download(url: str, target: Path, timeout: float = 60.0) -> None:
    """Download `url` to `target` (continuing a partial download); no network becomes a NoNetworkError."""
    log.info("downloading %s", url)
    try:
        http_download.fetch(url, target, timeout)
    except http_download.OfflineError as error:
        raise NoNetworkError(
            f"{error}. This machine seems to have no network access: download the "
            f"archive elsewhere and pass it with --archive FILE"
        ) from error
    except http_download.DownloadError as error:
        raise FetchError(f"{error} (is the model name right?)" if "HTTP 404" in str(error) else str(error)) from error


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
    """Fetch (or take from `archive`), verify and unpack a zoo model; returns its ckpt-0 prefix.

    The download is kept as <directory>/.<name>.tar.gz.part until complete, so an interrupted one
    continues on the next call.
    """
    check_name(name)
    expected = check_sha256(sha256) if sha256 else None
    prefix = checkpoint_prefix(name, directory)
    if (prefix.parent / "ckpt-0.index").is_file() and not force:
        log.info("%s is already in %s (use --force to fetch it again)", name, directory / name)
        return prefix
    directory.mkdir(parents=True, exist_ok=True)
    url = url or ZOO_URL.format(name=name)
    downloaded = directory / f".{name}.tar.gz"
    try:
        if archive is None:
            download(url, downloaded, timeout)
        elif not Path(archive).is_file():
            raise FetchError(f"archive not found: {archive}")
        archive_path = downloaded if archive is None else Path(archive)
        actual = sha256_file(archive_path)
        verify(name, archive_path, actual, expected)
        source = {"name": name, "url": url if archive is None else None,
                  "archive": str(archive_path) if archive is not None else f"{name}.tar.gz",
                  "archive_sha256": actual, "archive_verified": expected is not None}
        install(name, archive_path, directory, source)
    finally:
        downloaded.unlink(missing_ok=True)
    log.info("%s -> %s", name, prefix)
    return prefix


def install(name: str, archive: Path, directory: Path, source: dict) -> None:
    """Unpack `archive` beside `directory`/`name`, verify its files, write SOURCE.json, then swap it in."""
    with tempfile.TemporaryDirectory(prefix=f".{name}.", dir=directory) as scratch:
        unpacked = Path(scratch) / "unpacked"
        unpacked.mkdir()
        safe_extract(archive, unpacked)
        model_dir = unpacked / name
        if not (model_dir / CHECKPOINT_PREFIX.parent / "ckpt-0.index").is_file():
            raise FetchError(f"{archive} holds no {name}/{CHECKPOINT_PREFIX}.index: not a zoo archive of {name}")
        files = verify_files(name, model_dir)
        atomic.write_json(model_dir / SOURCE_RECORD, {
            **source, **files, "fetched": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
        final = directory / name
        if final.exists():
            shutil.rmtree(final)
        model_dir.rename(final)


def verify(name: str, archive: Path, actual: str, expected: str | None) -> None:
    if expected is None:
        log.debug("%s: archive SHA-256 %s (recorded in %s)", name, actual, SOURCE_RECORD)
        return
    if actual != expected:
        raise ChecksumError(f"{archive}: SHA-256 {actual} does not match the expected {expected}; not unpacked")
    log.info("SHA-256 verified: %s", actual)
