"""What every command shares: logging through tqdm, exit statuses, one-line errors."""

from __future__ import annotations

import enum
import logging
import os
import sys
from collections.abc import Callable

LOG_FORMAT = "%(message)s"


class ExitStatus(enum.IntEnum):
    SUCCESS = 0
    REJECTS = 1  # finished, but some input was rejected and --strict was given
    ERROR = 2  # could not run: bad arguments, missing files
    INTERRUPTED = 130


class UserError(Exception):
    """A problem the user can fix; reported as one line, without a traceback."""


def setup_logging(verbose: bool = False) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT, stream=sys.stderr, force=True
    )
    for noisy in ("tensorflow", "absl", "h5py", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Call main(argv) and turn the user's errors and Ctrl-C into an exit status and one line."""
    try:
        return int(main(argv))
    except UserError as error:
        logging.getLogger("chestdet").error("error: %s", error)
        return ExitStatus.ERROR
    except KeyboardInterrupt:
        logging.getLogger("chestdet").error("interrupted")
        return ExitStatus.INTERRUPTED
