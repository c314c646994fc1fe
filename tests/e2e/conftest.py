"""Browser tests drive Debian's Chromium (never a browser Playwright downloads)."""

from __future__ import annotations

import pytest

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": ["--no-sandbox"]}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict) -> dict:
    """A window the whole review page fits in, film and panels, as on a reading-room screen."""
    return {**browser_context_args, "viewport": {"width": 1400, "height": 1200}}
