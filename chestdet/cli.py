"""What every command shares: logging through tqdm, exit statuses, one-line errors."""

from __future__ import annotations

import contextlib
import enum
import gc
import logging
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from tqdm.contrib.logging import logging_redirect_tqdm

from chestdet import compat

LOG_FORMAT = "%(message)s"
PACKAGE_LOGGER = "chestdet"


class ExitStatus(enum.IntEnum):
    SUCCESS = 0
    REJECTS = 1  # finished, but some input was rejected and --strict was given
    ERROR = 2  # could not run: bad arguments, missing files
    INTERRUPTED = 130


class UserError(Exception):
    """A problem the user can fix; reported as one line, without a traceback."""


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
    known third-party warnings stay quiet (chestdet.compat.quiet) unless verbose, which shows them all."""
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


def progress_logging() -> contextlib.AbstractContextManager:
    """Use around tqdm bars so log lines print above the bar instead of through it."""
    return logging_redirect_tqdm(loggers=[logging.getLogger(PACKAGE_LOGGER)])


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, as in a container), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def exit_with(main: Callable[[list[str] | None], int]) -> NoReturn:
    """run_main on the command line's arguments, then end the process with its status."""
    status = run_main(main)
    # Python's exit would otherwise spend about a second collecting the cycles among TensorFlow's
    # objects, which vanish with the process anyway (atexit handlers still run and flush).
    gc.freeze()
    sys.exit(status)


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
