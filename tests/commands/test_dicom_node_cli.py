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
    (["--model", "{tmp}", "--send-to", "PACS@h:104", "--associations", "0"], "--associations 0: must be at least 1"),
    (["--model", "{tmp}", "--send-to", "PACS@h:104", "--result-processes", "-1"],
     "--result-processes -1: must be 0 or more"),
    (["--model", "{tmp}", "--send-to", "PACS@h:104"], "label map"),
])
def test_bad_arguments_get_one_line(tmp_path: Path, caplog, arguments: list[str], message: str):
    filled = [a.format(tmp=tmp_path, missing=tmp_path / "missing") for a in arguments]
    assert run_main(main, ["--spool", str(tmp_path / "spool"), *filled]) == ExitStatus.ERROR
    assert message in caplog.text


@pytest.mark.parametrize(("label_map", "extra", "message"), [
    ("item {\n  id: 1\n  name: 'Atelectasis'\n", [], "label_map.pbtxt:3:9: not a valid label map"),
    (None, ["--min-score-file", "t.csv", "--operating-points", "p.json"], "give one"),
])
def test_the_exports_label_map_and_one_form_of_thresholds(tmp_path: Path, caplog, label_map, extra, message):
    from chestdet.core.resources import DEFAULT_LABEL_MAP, resource

    model = tmp_path / "export"
    model.mkdir()
    text = label_map if label_map is not None else resource(DEFAULT_LABEL_MAP).read_text(encoding="utf-8")
    (model / "label_map.pbtxt").write_text(text, encoding="utf-8")
    argv = ["--spool", str(tmp_path / "spool"), "--model", str(model), "--send-to", "PACS@h:104", *extra]
    assert run_main(main, argv) == ExitStatus.ERROR
    assert message in caplog.text and "Traceback" not in caplog.text
