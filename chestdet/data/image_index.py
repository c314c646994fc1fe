"""Finding users' images by name in their folders (linked sub-folders once each), and judging paths as
written, so that a symlinked dataset is accepted and a path escaping its folder is not."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from chestdet.core.folders import walk_visible
from chestdet.core.imaging import (
    IMAGE_SUFFIXES,
)


def as_written(path: str | Path) -> Path:
    """An absolute path with `.` and `..` taken as written: no symlink is followed."""
    return Path(os.path.abspath(path))


class ImageIndex:
    """Image files under the allowed folders, by file name and by stem, found once.

    A file reached through a symlink inside a folder (a per-file symlink as DVC, git-annex and DataLad
    check data out, or a linked sub-folder) is the folder's own: paths are judged as written, never
    by where a symlink points, and are kept as written.
    """

    def __init__(self, roots: Iterable[str | Path]) -> None:
        self.roots = [as_written(root) for root in roots if Path(root).is_dir()]
        self.by_name: dict[str, Path] = {}
        self.by_stem: dict[str, Path] = {}
        self.duplicates: list[tuple[Path, Path]] = []
        for root in self.roots:
            for directory, files in walk_visible(root):
                for name in sorted(files):
                    if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                        self._add(Path(directory) / name)

    def _add(self, path: Path) -> None:
        if path.name in self.by_name:
            first = self.by_name[path.name]
            if first != path and first.resolve() != path.resolve():
                self.duplicates.append((first, path))
            return
        self.by_name[path.name] = path
        self.by_stem.setdefault(path.stem, path)

    def contains(self, path: Path) -> bool:
        """True when `path`, as written (`..` taken as written, no symlink followed), lies inside an
        allowed folder."""
        written = as_written(path)
        return any(written == root or written.is_relative_to(root) for root in self.roots)

    def escapes(self, path: Path) -> bool:
        return not self.contains(path)

    def find(self, name: str) -> Path | None:
        """By exact file name, then by name without extension."""
        found = self.by_name.get(name)
        if found is None and not Path(name).suffix:
            found = self.by_stem.get(name)
        return found

    def find_near(self, folder: Path, name: str) -> Path | None:
        """Beside `folder` first (a labelImg habit), then anywhere in the index."""
        beside = as_written(folder / name)
        candidates = [beside] if Path(name).suffix else [beside.with_name(beside.name + s) for s in _suffixes()]
        for candidate in candidates:
            if candidate.is_file() and self.contains(candidate):
                return candidate
        found = self.find(Path(name).name)
        if found is not None and self.contains(found):
            return found
        return None


def _suffixes() -> list[str]:
    return [*IMAGE_SUFFIXES, *(suffix.upper() for suffix in IMAGE_SUFFIXES)]
