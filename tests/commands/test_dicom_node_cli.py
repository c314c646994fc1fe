"""scripts/dicom_node.py's command line: --status, and one line for each bad argument (no model is loaded)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chestdet.commands.cli import ExitStatus, run_main
from chestdet.commands.dicom_node import main


def test_status_prints_what_the_node_wrote(tmp_path: Path, capsys):
    status = {"waiting": 3, "to_send": 1, "failed": 0, "done": 12, "last_errors": [{"error": "refused"}]}
    (tmp_path / "status.json").write_text(json.dumps(status))
    assert run_main(main, ["--spool", str(tmp_path), "--status"]) == ExitStatus.SUCCESS
    assert json.loads(capsys.readouterr().out) == status


def test_status_without_a_node_says_so(tmp_path: Path, caplog):
    assert run_main(main, ["--spool", str(tmp_path), "--status"]) == ExitStatus.ERROR
    assert "no status.json" in caplog.text


@pytest.mark.parametrize(("arguments", "message"), [
    ([], "--model and --send-to are needed"),
    (["--model", "{missing}", "--send-to", "PACS@h:104"], "not a directory"),
    (["--model", "{tmp}", "--send-to", "PACS@h:104", "--port", "0"], "--port 0: not a port number"),
    (["--model", "{tmp}", "--send-to", "PACS@h:104", "--min-score", "2"], "--min-score 2.0: must be between 0 and 1"),
    (["--model", "{tmp}", "--send-to", "PACS@h:104", "--retry-first", "0"], "--retry-first 0.0: must be more than 0"),
    (["--model", "{tmp}", "--send-to", "PACS@h:104", "--ae-title", "A" * 17], "1 to 16 characters"),
    (["--model", "{tmp}", "--send-to", "PACS@h:104"], "label map"),
])
def test_bad_arguments_get_one_line(tmp_path: Path, caplog, arguments: list[str], message: str):
    filled = [a.format(tmp=tmp_path, missing=tmp_path / "missing") for a in arguments]
    assert run_main(main, ["--spool", str(tmp_path / "spool"), *filled]) == ExitStatus.ERROR
    assert message in caplog.text
