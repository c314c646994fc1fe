"""The errors library code raises; only the command layer (`chestdet.commands.cli`) turns them into exit statuses."""

from __future__ import annotations


class ChestdetError(Exception):
    """A problem with the inputs or settings that the user can fix; its message is one line."""


class InputError(ChestdetError):
    """A file or folder the user named cannot be used as given."""


class DetectError(ChestdetError):
    """A problem with a detection run's inputs or settings."""


class BackendError(ChestdetError):
    """The export cannot be run by the requested backend; the message says why."""


class ExportError(ChestdetError):
    """An export that cannot be made; the message names the file and the reason."""


class EvaluationError(ChestdetError):
    """Detections, ground truth or split that cannot be evaluated as given."""


class StageError(ChestdetError):
    """A stage of a multi-stage run ended with a failing exit status."""
