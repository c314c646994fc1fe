"""The errors library code raises; only the command layer (`chestdet.cli`) turns them into exit statuses."""

from __future__ import annotations


class ChestdetError(Exception):
    """A problem with the inputs or settings that the user can fix; its message is one line."""


class InputError(ChestdetError):
    """A file or folder the user named cannot be used as given."""
