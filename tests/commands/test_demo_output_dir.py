"""The demo empties only a folder that an earlier demo made."""

from __future__ import annotations

from pathlib import Path

from chestdet.commands import demo
from chestdet.commands.cli import ExitStatus, run_main


def test_a_folder_the_demo_did_not_make_is_left_alone(tmp_path: Path, caplog):
    mine = tmp_path / "my results"
    mine.mkdir()
    (mine / "thesis.tex").write_text("months of work")
    assert run_main(demo.main, ["--output-dir", str(mine)]) == ExitStatus.ERROR
    assert caplog.records[-1].getMessage() == (
        f"error: --output-dir {mine}: exists and was not made by the demo; choose another folder "
        "(the demo empties its folder at the start)"
    )
    assert (mine / "thesis.tex").read_text() == "months of work"


def test_an_earlier_demo_folder_is_emptied_and_marked_again(tmp_path: Path):
    out = tmp_path / "demo"
    demo.prepare_output_dir(out)
    assert (out / demo.DEMO_MARKER).is_file()
    (out / "records").mkdir()
    (out / "records" / "train-00000-of-00001").write_bytes(b"old")
    demo.prepare_output_dir(out)
    assert sorted(p.name for p in out.iterdir()) == [demo.DEMO_MARKER]


def test_an_empty_folder_is_used(tmp_path: Path):
    demo.prepare_output_dir(tmp_path)
    assert (tmp_path / demo.DEMO_MARKER).is_file()
