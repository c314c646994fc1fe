"""serve.py's checks before anything loads: the token off loopback, the export, the operating points."""

from __future__ import annotations

import pytest

from chestdet.commands.cli import ExitStatus, run_main
from chestdet.commands.serve import build_parser, is_loopback, main, settings_from


@pytest.fixture
def export(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "label_map.pbtxt").write_text("item { id: 1 name: 'Mass' }\n")
    (folder / "model.tflite").write_bytes(b"")
    return folder


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("::1", True), ("localhost", True),
                                            ("0.0.0.0", False), ("192.168.1.5", False), ("example.org", False)])
def test_only_loopback_addresses_count_as_local(host, loopback):
    assert is_loopback(host) is loopback


def test_a_public_host_without_a_token_is_refused_in_one_line(export, caplog, monkeypatch):
    monkeypatch.delenv("CHESTDET_TOKEN", raising=False)
    assert run_main(main, ["--model", str(export), "--host", "0.0.0.0"]) == ExitStatus.ERROR
    assert "error: --host 0.0.0.0 is reachable from other machines: pass --token" in caplog.text


def test_a_token_from_the_flag_or_the_environment_lets_it_listen_anywhere(export, monkeypatch):
    settings = settings_from(build_parser().parse_args(["--model", str(export), "--host", "0.0.0.0", "--token", "t"]))
    assert settings.token == "t"
    monkeypatch.setenv("CHESTDET_TOKEN", "from-env")
    settings = settings_from(build_parser().parse_args(["--model", str(export), "--host", "0.0.0.0"]))
    assert settings.token == "from-env" and settings.max_body_bytes == 50 << 20 and settings.explain


@pytest.mark.parametrize("args, message", [
    (["--model", "{tmp}/nothing"], "not an export directory of export.py"),
    (["--model", "{export}", "--operating-point", "1fp"], "--operating-point NAME needs --operating-points FILE"),
    (["--model", "{export}", "--operating-points", "{tmp}/missing.json", "--operating-point", "1fp"], "not found"),
    (["--model", "{export}", "--floor-score", "2"], "--floor-score 2.0: must be between 0 and 1"),
    (["--model", "{export}", "--max-queue", "0"], "--max-queue 0: must be at least 1"),
])
def test_bad_settings_are_one_line(export, tmp_path, caplog, args, message):
    argv = [a.format(tmp=tmp_path, export=export) for a in args]
    assert run_main(main, argv) == ExitStatus.ERROR
    assert message in caplog.text
