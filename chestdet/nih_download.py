"""Fetch NIH's official ChestX-ray14 image archives and keep just the images a box list names.

The twelve `images_NNN.tar.gz` archives (about 42 GB) are the links NIH publishes in
`batch_download_zips.py` on https://nihcc.app.box.com/v/ChestXray-NIHCC. Downloads resume, files
appear under their final name only when complete, and the end reports every expected image that
did not arrive.
"""

from __future__ import annotations

import logging
import shutil
import tarfile
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

import pandas as pd
from tqdm import tqdm

from chestdet.atomic import atomic_path

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
CHUNK_BYTES = 1 << 20


class DownloadError(RuntimeError):
    """An archive could not be fetched; the message says which and why."""


def images_named_in(bbox_csv: str | Path) -> set[str]:
    """The image file names of a BBox_List_2017.csv (first column)."""
    frame = pd.read_csv(bbox_csv, usecols=[0], dtype=str)
    return set(frame.iloc[:, 0].str.strip())


def archive_name(index: int) -> str:
    return f"images_{index + 1:03d}.tar.gz"


def download(url: str, target: Path, timeout: float = 60.0) -> Path:
    """Fetch `url` to `target` unless it is already there; a partial file never gets the final name."""
    if target.exists():
        log.info("%s already downloaded", target.name)
        return target
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, atomic_path(target) as tmp:
            total = int(response.headers.get("Content-Length") or 0) or None
            with open(tmp, "wb") as out, tqdm(total=total, unit="B", unit_scale=True, desc=target.name) as bar:
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
        raise DownloadError(
            f"cannot download {url} ({error}); check the network, or download it by hand from "
            "https://nihcc.app.box.com/v/ChestXray-NIHCC into the same folder and run again"
        ) from error
    return target


def extract_images(archive: Path, wanted: set[str], image_dir: Path) -> list[str]:
    """Copy the wanted images out of one archive, flat into image_dir; returns the names extracted."""
    extracted = []
    image_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            name = PurePosixPath(member.name).name
            if not member.isfile() or name not in wanted or (image_dir / name).exists():
                continue
            source = tar.extractfile(member)
            if source is None:
                continue
            with source, atomic_path(image_dir / name) as tmp, open(tmp, "wb") as out:
                shutil.copyfileobj(source, out)
            extracted.append(name)
    return extracted


def fetch_nih_images(
    wanted: set[str],
    download_dir: Path,
    image_dir: Path,
    urls: Iterable[str] = NIH_ARCHIVE_URLS,
    keep_archives: bool = False,
) -> set[str]:
    """Download each archive, extract the wanted images, and return the names still missing."""
    for index, url in enumerate(urls):
        missing = {name for name in wanted if not (image_dir / name).exists()}
        if not missing:
            break
        archive = download(url, download_dir / archive_name(index))
        names = extract_images(archive, missing, image_dir)
        log.info("%s: %d images extracted", archive.name, len(names))
        if not keep_archives:
            archive.unlink()
    return {name for name in wanted if not (image_dir / name).exists()}
