"""The package's logger, and log lines that print above tqdm bars instead of through them."""

from __future__ import annotations

import contextlib
import logging

from tqdm.contrib.logging import logging_redirect_tqdm

PACKAGE_LOGGER = "chestdet"


def progress_logging() -> contextlib.AbstractContextManager:
    """Use around tqdm bars so log lines print above the bar instead of through it."""
    return logging_redirect_tqdm(loggers=[logging.getLogger(PACKAGE_LOGGER)])
