"""Ctrl-C in detect says how many images are done and gives the command that finishes the run."""

from __future__ import annotations

import shlex
from pathlib import Path

from chestdet.commands import detect
from chestdet.commands.cli import ExitStatus, run_main
from chestdet.core.contracts import JOURNAL
from chestdet.core.detections import ImageResult
from chestdet.core.shell import command
from chestdet.detection.journal import Journal
from tests.conftest import SAMPLE_IMAGES


def test_ctrl_c_says_how_many_images_are_done_and_how_to_continue(tmp_path: Path, monkeypatch, caplog):
    out = tmp_path / "my detections"
    total = len(list(SAMPLE_IMAGES.glob("*.png")))

    def interrupted_after_two(args, listing, ahead, started) -> int:  # noqa: ANN001
        out.mkdir(exist_ok=True)
        journal = Journal(out / JOURNAL)
        for image in listing.images[:2]:
            journal.append(ImageResult(image.name, str(image.path), 1024, 1024))
        journal.close()
        raise KeyboardInterrupt

    monkeypatch.setattr(detect, "_detect", interrupted_after_two)
    (tmp_path / "export").mkdir()
    argv = ["--model", str(tmp_path / "export"), "--input", str(SAMPLE_IMAGES), "--output-dir", str(out)]
    assert run_main(detect.main, argv) == ExitStatus.INTERRUPTED
    assert caplog.records[-1].getMessage() == (
        f"interrupted: 2 of {total} images done; to continue, run the same command with --resume: "
        f"{command('detect')} {shlex.join(argv)} --resume")
    caplog.clear()
    assert run_main(detect.main, [*argv, "--resume"]) == ExitStatus.INTERRUPTED  # --resume is not given twice
    assert caplog.records[-1].getMessage().startswith(f"interrupted: 2 of {total} images done")
    assert caplog.records[-1].getMessage().endswith(f"{shlex.join(argv)} --resume")
