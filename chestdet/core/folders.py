"""Walking a user's data folder: into linked sub-folders, each real folder once, past hidden files and OS litter."""

from __future__ import annotations

import os
from collections.abc import Iterator

# Files and folders operating systems and archivers leave beside data (besides hidden `.` names:
# `.DS_Store`, macOS's `._` copies, `.git` where git-annex keeps its objects, `.dvc`).
OS_LITTER = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini", "__macosx", "$recycle.bin",
                       "system volume information"})


def is_litter(name: str) -> bool:
    """A hidden name or one an OS leaves behind: never the user's data."""
    return name.startswith(".") or name.lower() in OS_LITTER


def walk_visible(root: str | os.PathLike, skipped: list[str] | None = None) -> Iterator[tuple[str, list[str]]]:
    """(folder, file names) under `root`, into linked sub-folders too, each real folder once (a link to
    a parent is no loop). Hidden and litter files and folders are left out; with `skipped`, their
    paths are appended to it (a folder once, not what it holds)."""
    seen: set[str] = set()
    for directory, folders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(directory)
        if real in seen:
            folders[:] = []
            continue
        seen.add(real)
        if skipped is not None:
            skipped.extend(os.path.join(directory, name) for name in sorted(folders + files) if is_litter(name))
        folders[:] = sorted(name for name in folders if not is_litter(name))
        yield directory, [name for name in files if not is_litter(name)]
