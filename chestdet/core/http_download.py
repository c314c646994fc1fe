"""Resumable downloads: a partial file is kept beside the target and continued with an HTTP Range request.

The partial file has a fixed name (`<target>.part`), so a download stopped in any way, even by SIGKILL,
leaves nothing but the file the next run continues; the target name appears only once the file is whole.
"""

from __future__ import annotations

import logging
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from chestdet.core.errors import ChestdetError

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
PART_SUFFIX = ".part"


class DownloadError(ChestdetError):
    """The file could not be fetched (the partial file, if any, is kept for the next try)."""


class OfflineError(DownloadError):
    """The host could not be reached at all."""


def part_path(target: Path) -> Path:
    return target.with_name(target.name + PART_SUFFIX)


def fetch(url: str, target: Path, timeout: float = 60.0, progress: bool = True) -> Path:
    """Download `url` to `target`, continuing `target`.part from where an earlier try stopped."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(target)
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have and _complete_size(error.headers) == have:
            os.replace(part, target)  # the earlier try had every byte but stopped before the rename
            return target
        if error.code == 416 and have:
            log.warning("%s: the server cannot continue the partial download; starting it again", target.name)
            part.unlink()
            return fetch(url, target, timeout, progress)
        raise DownloadError(f"cannot download {url}: HTTP {error.code} {error.reason}") from error
    except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
        raise OfflineError(f"cannot download {url}: {getattr(error, 'reason', error)}") from error
    with response:
        resumed = have > 0 and getattr(response, "status", None) == 206
        if have and not resumed:
            log.info("%s: the server sends the whole file; starting again", target.name)
        _copy(response, part, have if resumed else 0, target.name, progress, url)
    os.replace(part, target)
    return target


def _complete_size(headers: object) -> int | None:
    match = re.fullmatch(r"bytes \*/(\d+)", (headers.get("Content-Range") or "") if headers else "")
    return int(match.group(1)) if match else None


def _copy(response: object, part: Path, offset: int, name: str, progress: bool, url: str) -> None:
    length = response.headers.get("Content-Length")
    total = offset + int(length) if length else None
    if offset:
        log.info("%s: continuing a partial download at %d bytes", name, offset)
    written = offset
    try:
        with open(part, "ab" if offset else "wb") as out, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, desc=name, disable=not progress
        ) as bar:
            read = getattr(response, "read1", response.read)  # what has arrived, so progress shows as it comes
            while chunk := read(CHUNK_BYTES):
                out.write(chunk)
                written += len(chunk)
                bar.update(len(chunk))
    except (OSError, TimeoutError) as error:
        raise DownloadError(f"download of {url} broke off at {written} bytes ({error}); run again to continue it "
                            f"(kept as {part})") from error
    if total is not None and written < total:
        raise DownloadError(f"download of {url} ended at {written} of {total} bytes; run again to continue it "
                            f"(kept as {part})")
