"""Fetch NIH's official ChestX-ray14 image archives and keep just the images a box list names.

The twelve `images_NNN.tar.gz` archives (about 42 GB) are the links NIH publishes in
`batch_download_zips.py` on https://nihcc.app.box.com/v/ChestXray-NIHCC. A download stopped in any
way (even killed) leaves only `images_NNN.tar.gz.part`, which the next run continues with an HTTP Range
request; an image being extracted is written as `.NAME.part` and renamed when whole, so a killed run
leaves no half image and the next run removes the stray part. An archive that cannot be read as a
tar.gz is fetched once more. The end reports every expected image that did not arrive.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import zlib
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

import pandas as pd

from chestdet.core import http_download
from chestdet.core.errors import ChestdetError

log = logging.getLogger(__name__)

NIH_ARCHIVE_URLS: tuple[str, ...] = tuple(
    f"https://nihcc.box.com/shared/static/{key}.gz"
    for key in (
        "vfk49d74nhbxq3nqjg0900w5nvkorp5c",
        "i28rlmbvmfjbl8p2n3ril0pptcmcu9d1",
        "f1t00wrtdk94satdfb9olcolqx20z2jp",
        "0aowwzs5lhjrceb3qp67ahp0rd1l1etg",
        "v5e3goj22zr6h8tzualxfsqlqaygfbsn",
        "asi7ikud9jwnkrnkj99jnpfkjdes7l6l",
        "jn1b4mw4n6lnh74ovmcjb8y48h8xj07n",
        "tvpxmn7qyrgl0w8wfh9kqfjskv6nmm1j",
        "upyy3ml7qdumlgk2rfcvlb9k6gvqq2pj",
        "l6nilvfa9cg3s28tqv1qc1olm3gnz54p",
        "hhq8fkdgvcari67vfhs7ppg2w6ni4jze",
        "ioqwiy20ihqwyr8pf4c24eazhh281pbu",
    )
)
PART_SUFFIX = ".part"


class DownloadError(ChestdetError):
    """An archive could not be fetched; the message says which and why."""


class DamagedArchiveError(DownloadError):
    """An archive is not a readable tar.gz (cut short, or not an archive at all)."""


def images_named_in(bbox_csv: str | Path) -> set[str]:
    """The image file names of a BBox_List_2017.csv (first column)."""
    frame = pd.read_csv(bbox_csv, usecols=[0], dtype=str)
    return set(frame.iloc[:, 0].str.strip())


def archive_name(index: int) -> str:
    return f"images_{index + 1:03d}.tar.gz"


def download(url: str, target: Path, timeout: float = 60.0) -> Path:
    """Fetch `url` to `target` unless it is already there, continuing `target`.part from an earlier try."""
    if target.exists():
        log.info("%s already downloaded", target.name)
        return target
    try:
        return http_download.fetch(url, target, timeout)
    except http_download.DownloadError as error:
        raise DownloadError(
            f"{error}; check the network and run again (a partial download is continued), or download it by hand "
            "from https://nihcc.app.box.com/v/ChestXray-NIHCC into the same folder"
        ) from error


def remove_stray_parts(image_dir: Path) -> None:
    """Images a killed run was extracting (their final names never appeared)."""
    for stray in image_dir.glob(f".*{PART_SUFFIX}"):
        stray.unlink(missing_ok=True)


def extract_images(archive: Path, wanted: set[str], image_dir: Path) -> list[str]:
    """Copy the wanted images out of one archive, flat into image_dir; returns the names extracted.

    Raises DamagedArchiveError when the archive cannot be read to its end.
    """
    extracted = []
    image_dir.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                name = PurePosixPath(member.name).name
                if not member.isfile() or name not in wanted or (image_dir / name).exists():
                    continue
                source = tar.extractfile(member)
                if source is None:
                    continue
                part = image_dir / f".{name}{PART_SUFFIX}"
                with source, open(part, "wb") as out:
                    shutil.copyfileobj(source, out)
                os.replace(part, image_dir / name)
                extracted.append(name)
    except (tarfile.TarError, EOFError, zlib.error) as error:
        remove_stray_parts(image_dir)
        reason = " ".join(str(error).split()) or type(error).__name__
        raise DamagedArchiveError(f"{archive}: not a readable tar.gz archive ({reason})") from error
    return extracted


def fetch_and_extract(url: str, archive: Path, missing: set[str], image_dir: Path) -> list[str]:
    """download + extract_images; a damaged archive is deleted and fetched once more."""
    for attempt in (1, 2):
        download(url, archive)
        try:
            return extract_images(archive, missing, image_dir)
        except DamagedArchiveError as error:
            archive.unlink(missing_ok=True)
            if attempt == 2:
                raise DownloadError(f"{error}, twice: the download is damaged; delete it and try again later, or "
                                    "download it by hand from https://nihcc.app.box.com/v/ChestXray-NIHCC") from error
            log.warning("%s; deleted it, fetching it again", error)
    return []


def fetch_nih_images(
    wanted: set[str],
    download_dir: Path,
    image_dir: Path,
    urls: Iterable[str] = NIH_ARCHIVE_URLS,
    keep_archives: bool = False,
) -> set[str]:
    """Download each archive, extract the wanted images, and return the names still missing."""
    if image_dir.is_dir():
        remove_stray_parts(image_dir)
    for index, url in enumerate(urls):
        missing = {name for name in wanted if not (image_dir / name).exists()}
        if not missing:
            break
        archive = download_dir / archive_name(index)
        names = fetch_and_extract(url, archive, missing, image_dir)
        log.info("%s: %d images extracted", archive.name, len(names))
        if not keep_archives:
            archive.unlink()
    return {name for name in wanted if not (image_dir / name).exists()}
