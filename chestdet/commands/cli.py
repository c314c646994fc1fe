"""What every command shares: logging through tqdm, exit statuses, one-line errors."""

from __future__ import annotations

import enum
import gc
import logging
import sys
from collections.abc import Callable
from typing import NoReturn

from chestdet.core.errors import ChestdetError
from chestdet.core.logs import PACKAGE_LOGGER, progress_logging
from chestdet.core.system import available_cpus

__all__ = ["ExitStatus", "UserError", "available_cpus", "exit_with", "progress_logging", "run_main", "setup_logging"]


from chestdet.core import compat

LOG_FORMAT = "%(message)s"


class ExitStatus(enum.IntEnum):
    SUCCESS = 0
    REJECTS = 1  # finished, but some input was rejected and --strict was given
    ERROR = 2  # could not run: bad arguments, missing files
    INTERRUPTED = 130


# The commands raise the library's own base for the problems a user can fix, under this name.
UserError = ChestdetError


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time, so redirected or captured stderr still sees it."""

    @property
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def setup_logging(verbose: bool = False) -> None:
    """Send the package's log lines to stderr; other libraries' loggers, TensorFlow's C++ log and the
    known third-party warnings stay quiet (chestdet.core.compat.quiet) unless verbose, which shows them all."""
    compat.quiet(verbose)
    logger = logging.getLogger(PACKAGE_LOGGER)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not any(isinstance(handler, _StderrHandler) for handler in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logger.addHandler(handler)
    if not logging.root.handlers:
        # Otherwise the first library call to logging.info() runs basicConfig() on the root logger, and
        # every chestdet line, propagating to it, prints twice.
        logging.root.addHandler(logging.NullHandler())
    for noisy in ("tensorflow", "absl", "h5py", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.NOTSET if verbose else logging.WARNING)


def exit_with(main: Callable[[list[str] | None], int]) -> NoReturn:
    """run_main on the command line's arguments, then end the process with its status."""
    status = run_main(main)
    # Python's exit would otherwise spend about a second collecting the cycles among TensorFlow's
    # objects, which vanish with the process anyway (atexit handlers still run and flush).
    gc.freeze()
    sys.exit(status)


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Call main(argv) and turn the library's errors (ChestdetError) and Ctrl-C into an exit status and one line."""
    try:
        return int(main(argv))
    except ChestdetError as error:
        logging.getLogger("chestdet").error("error: %s", error)
        return ExitStatus.ERROR
    except KeyboardInterrupt:
        logging.getLogger("chestdet").error("interrupted")
        return ExitStatus.INTERRUPTED
