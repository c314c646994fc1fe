"""The images a detection run reads: a folder, one image, a text file of paths, a glob, or one split of
the records step, named and numbered."""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from chestdet.core.errors import DetectError
from chestdet.core.folders import walk_visible
from chestdet.core.imaging import IMAGE_SUFFIXES, READ_FORMATS, sniff_format

log = logging.getLogger("chestdet.detection.detect")

TIFF_SUFFIXES = (".tif", ".tiff")
NOT_IN_IMAGE_DIRS = "not found in the --image-dir folders"
_SNIFF_BYTES = 8192


@dataclass(frozen=True, slots=True)  # slots: a listing of 20,000 images holds 20,000 of these
class InputImage:
    name: str  # posix path relative to the input folder (absolute only for images on different drives)
    path: Path
    image_id: int  # 1-based position in the listing; the COCO image id
    error: str | None = None  # known before reading, e.g. an image a split names that no folder holds


@dataclass
class Listing:
    """The images of an input, and the hidden files and OS litter met in its folders (not read)."""

    images: list[InputImage]
    ignored: list[str] = field(default_factory=list)


def list_inputs(spec: str | Path, exclude: Path | None = None) -> list[InputImage]:
    """The images of `read_listing`."""
    return read_listing(spec, exclude).images


def read_listing(spec: str | Path, exclude: Path | None = None) -> Listing:
    """A folder (recursive), one image, a text file of paths, or a glob.

    A folder yields every file in it but hidden ones and OS litter (which are counted), whatever its
    name: images are known by their content, and the rest become errors of the run. A single file is
    an image when its content or suffix says so, and a list of paths when it is text. Text lists take
    one path per line (relative to the list's folder; blank lines and `#` comments skipped). Images
    are named by their path relative to the list's folder, or, when some lie outside it, to the
    deepest folder holding them all. A path listed twice is processed once.
    """
    spec_path = Path(spec)
    ignored: list[str] = []
    if spec_path.is_dir():
        root = spec_path
        paths = _folder_files(root, ignored)
    elif spec_path.is_file() and _is_image_file(spec_path):
        root, paths = spec_path.parent, [spec_path]
    elif spec_path.is_file():
        paths = _read_list(spec_path)
        root = _common_root(spec_path.parent, paths)
    elif glob.has_magic(str(spec)):
        root = _glob_root(str(spec))
        paths = sorted(Path(p) for p in glob.glob(str(spec), recursive=True) if Path(p).is_file())
    else:
        raise DetectError(f"--input {spec}: no such folder, file or matching glob")
    if exclude is not None:
        excluded = Path(os.path.abspath(exclude))
        paths = [p for p in paths if excluded not in Path(os.path.abspath(p)).parents]
        ignored = [p for p in ignored if excluded not in Path(os.path.abspath(p)).parents]
    if ignored:
        shown = ", ".join(Path(p).name for p in ignored[:3]) + (", ..." if len(ignored) > 3 else "")
        log.info("skipped %d hidden or system files and folders (%s)", len(ignored), shown)
    return Listing(_number(root, paths), ignored)


def _folder_files(root: Path, ignored: list[str]) -> list[Path]:
    files = (Path(directory) / name for directory, names in walk_visible(root, ignored) for name in names)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _is_image_file(path: Path) -> bool:
    """An image by its content or suffix (a broken one is then an error of the run); a list when it is
    text; otherwise an image when PIL finds some image format in it (an unsupported one is an error)."""
    if sniff_format(path) is not None or path.suffix.lower() in (*IMAGE_SUFFIXES, *TIFF_SUFFIXES):
        return True
    with open(path, "rb") as handle:
        if b"\x00" not in handle.read(_SNIFF_BYTES):
            return False  # text, in any 8-bit encoding (_read_list names the line that is not UTF-8)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path):
            return True
    except Image.DecompressionBombError:
        return True  # refused when read, with a row of errors.csv
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise DetectError(
            f"--input {path}: neither an image ({', '.join(READ_FORMATS)}) nor a text file of image paths"
        ) from None


def _read_list(list_path: Path) -> list[Path]:
    data = list_path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DetectError(f"--input {list_path}: line {line}: not UTF-8 text; save the list as UTF-8") from None
    entries = (line.strip() for line in text.splitlines())
    return [
        p if p.is_absolute() else list_path.parent / p
        for p in (Path(e) for e in entries if e and not e.startswith("#"))
    ]


def _common_root(list_folder: Path, paths: Sequence[Path]) -> Path:
    """The list's folder when every image lies under it, else the deepest folder holding them all."""
    folder = os.path.abspath(list_folder)
    parents = {os.path.dirname(os.path.abspath(p)) for p in paths}
    if not parents or all(os.path.commonpath([folder, parent]) == folder for parent in parents):
        return list_folder
    return Path(os.path.commonpath(parents))


def _glob_root(pattern: str) -> Path:
    parts = []
    for part in Path(pattern).parts:
        if glob.has_magic(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def _number(root: Path, paths: Iterable[Path]) -> list[InputImage]:
    """Name and number the images; symlinks keep their own names (two links are two images)."""
    root = Path(os.path.abspath(root))
    seen: set[str] = set()  # strings, not Paths: a third of the memory while a large folder is listed
    images: list[InputImage] = []
    duplicates = 0
    for path in paths:
        absolute_name = os.path.abspath(path)
        if absolute_name in seen:
            duplicates += 1
            continue
        seen.add(absolute_name)
        absolute = Path(absolute_name)
        try:
            name = absolute.relative_to(root).as_posix()
        except ValueError:
            name = absolute.as_posix()
        images.append(InputImage(name, path, len(images) + 1))
    if duplicates:
        log.warning("skipped %d paths listed more than once", duplicates)
    return images


# ---------------------------------------------------------------- one split of the records step


def list_split(split_file: Path, split: str, image_dirs: Sequence[Path]) -> list[InputImage]:
    """The images split.csv assigns to `split`, in its order, found by file name in `image_dirs`
    as the records step finds them; one it names that no folder holds is an error of the run."""
    from chestdet.data.image_index import ImageIndex

    for folder in image_dirs:
        if not Path(folder).is_dir():
            raise DetectError(f"--image-dir {folder}: not a folder")
    names = _split_names(split_file, split)
    index = ImageIndex(image_dirs)
    if index.duplicates:
        log.warning("%d image names are found twice in the --image-dir folders; the first of each is used",
                    len(index.duplicates))
    images = []
    for number, name in enumerate(names, start=1):
        path = index.find(name)
        images.append(InputImage(name, path, number) if path is not None
                      else InputImage(name, Path(name), number, NOT_IN_IMAGE_DIRS))
    missing = sum(image.error is not None for image in images)
    if missing:
        log.warning("%d of the %d %s images of %s are %s", missing, len(images), split, split_file, NOT_IN_IMAGE_DIRS)
    return images


def _split_names(split_file: Path, split: str) -> list[str]:
    from chestdet.data.split import SplitFileError, read_split, split_images

    try:
        return split_images(read_split(split_file), split, split_file)
    except SplitFileError as error:
        raise DetectError(f"--split-file {error}") from None
