"""Commands and paths as a user can type them from the folder they are in, for the "next command" hints.

A checkout's scripts are named by their absolute path (scripts/train.sh works only from the
repository's root); an installed wheel's by its console command (chestdet-train), or `python -m`.
"""

from __future__ import annotations

import shlex
from importlib import metadata
from pathlib import Path

import chestdet

SCRIPTS_DIR = Path(chestdet.__file__).resolve().parent.parent / "scripts"


def command(name: str) -> str:
    """How to run the command module chestdet.commands.<name> from anywhere, e.g. '/repo/scripts/export.sh'."""
    for script in (SCRIPTS_DIR / f"{name}.sh", SCRIPTS_DIR / f"{name}.py"):
        if script.is_file():
            quoted = shlex.quote(str(script))
            return quoted if script.suffix == ".sh" else f"python {quoted}"
    target = f"chestdet.commands.{name}:entry"
    for entry_point in metadata.entry_points(group="console_scripts"):
        if entry_point.value == target:
            return entry_point.name
    return f"python -m chestdet.commands.{name}"


def shown(path: str | Path) -> str:
    """A path as the user can type it here: relative when it lies under the working folder, quoted for a shell."""
    path = Path(path)
    cwd = Path.cwd()
    if path.is_absolute() and path != cwd and path.is_relative_to(cwd):
        path = path.relative_to(cwd)
    return shlex.quote(str(path))
