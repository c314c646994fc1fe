"""The command-line plumbing every script shares: exit statuses and the process exit."""

from __future__ import annotations

import gc
import logging

import pytest

from chestdet.commands.cli import ExitStatus, UserError, exit_with, run_main


def test_run_main_turns_user_errors_and_ctrl_c_into_a_status_and_one_line(caplog):
    def fails(argv):
        raise UserError("--input nowhere: no images found")

    def interrupted(argv):
        raise KeyboardInterrupt

    with caplog.at_level(logging.ERROR, logger="chestdet"):
        assert run_main(fails) == ExitStatus.ERROR
        assert run_main(interrupted) == ExitStatus.INTERRUPTED
    assert [r.getMessage() for r in caplog.records] == ["error: --input nowhere: no images found", "interrupted"]
    assert run_main(lambda argv: ExitStatus.REJECTS) == ExitStatus.REJECTS


def test_exit_with_ends_with_the_status_and_spares_the_exit_a_full_collection():
    try:
        with pytest.raises(SystemExit) as exited:
            exit_with(lambda argv: ExitStatus.REJECTS)
        assert exited.value.code == ExitStatus.REJECTS
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
