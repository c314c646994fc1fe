"""The journal of a detection run: an append-only record of finished images that a killed run resumes from."""

from __future__ import annotations

import gc
import logging
import threading
import weakref
from pathlib import Path

from chestdet.core.detections import ImageResult
from chestdet.detection.journal import Journal
from tests.support.results import made_up_result


def test_what_is_appended_reads_back_equal_in_the_order_it_was_written(tmp_path: Path):
    journal = Journal(tmp_path / "journal.jsonl")
    written = [made_up_result(i) for i in range(12)]
    for item in written:
        journal.append(item)
    journal.close()
    assert list(Journal(journal.path).read().values()) == written
    assert list(Journal(journal.path).read()) == [item.image for item in written]


def test_a_journal_that_does_not_exist_yet_holds_nothing_and_is_not_created_by_reading(tmp_path: Path):
    journal = Journal(tmp_path / "journal.jsonl")
    assert journal.read() == {}
    with journal.finished() as finished:
        assert len(finished) == 0 and "folder/000.png" not in finished
    assert not journal.path.exists()


def test_a_resumed_run_appends_after_the_finished_images_and_never_rewrites_them(tmp_path: Path):
    path = tmp_path / "journal.jsonl"
    first = Journal(path)
    for index in range(5):
        first.append(made_up_result(index))
    first.close()
    earlier = path.read_bytes()

    resumed = Journal(path)
    assert set(resumed.read()) == {made_up_result(i).image for i in range(5)}
    for index in range(5, 9):
        resumed.append(made_up_result(index))
    resumed.close()
    assert path.read_bytes().startswith(earlier)
    assert list(Journal(path).read().values()) == [made_up_result(i) for i in range(9)]


def test_each_line_is_on_disk_as_soon_as_it_is_appended(tmp_path: Path):
    """A kill right after append() (no close) must not lose the image: another reader sees it at once."""
    journal = Journal(tmp_path / "journal.jsonl")
    journal.append(made_up_result(1))
    assert Journal(journal.path).read() == {made_up_result(1).image: made_up_result(1)}
    journal.append(made_up_result(2))
    assert list(Journal(journal.path).read()) == [made_up_result(1).image, made_up_result(2).image]
    journal.close()


def test_a_line_torn_by_a_crash_is_dropped_and_the_run_goes_on_from_whole_lines(tmp_path: Path, caplog):
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    for index in range(4):
        journal.append(made_up_result(index))
    journal.close()
    whole = path.read_bytes()
    torn = made_up_result(4).to_json().encode()[:17]  # the kill came half-way through writing the line
    path.write_bytes(whole + torn)

    with caplog.at_level(logging.WARNING):
        finished = Journal(path).read()
    assert list(finished.values()) == [made_up_result(i) for i in range(4)]
    assert "dropped an incomplete last entry" in caplog.text and str(path) in caplog.text
    assert path.read_bytes() == whole, "the torn bytes are cut off so the next line starts on a line of its own"

    resumed = Journal(path)
    resumed.append(made_up_result(4))  # the torn image is done again
    resumed.close()
    assert list(Journal(path).read().values()) == [made_up_result(i) for i in range(5)]


def test_a_last_line_without_its_newline_is_not_taken_as_finished(tmp_path: Path):
    """The JSON may be whole while its newline never reached the disk: the image is done again, not trusted."""
    path = tmp_path / "journal.jsonl"
    path.write_text(made_up_result(0).to_json() + "\n" + made_up_result(1).to_json(), encoding="utf-8")
    assert list(Journal(path).read()) == [made_up_result(0).image]
    assert path.read_text(encoding="utf-8") == made_up_result(0).to_json() + "\n"


def test_results_are_read_back_one_at_a_time_by_name_not_held_in_memory(tmp_path: Path):
    path = tmp_path / "journal.jsonl"
    names = [f"lookup/{name}" for name in ("plain.png", "données/été.png", "胸部/結節.png", "a, b.png", "z.png")]
    journal = Journal(path)
    for index, name in enumerate(names):
        journal.append(made_up_result(index, name))
    journal.close()

    with Journal(path).finished() as finished:
        assert list(finished) == names and len(finished) == len(names)
        assert "missing.png" not in finished and all(name in finished for name in names)
        gc.collect()
        assert not [o for o in gc.get_objects() if type(o) is ImageResult and o.image in names], \
            "opening the journal holds no result"
        for name in reversed(names):  # byte offsets hold with multi-byte names before them
            looked_up = finished[name]
            assert looked_up == made_up_result(names.index(name), name)
            probe = weakref.ref(looked_up)
            del looked_up
            gc.collect()
            assert probe() is None, "a result looked up is not kept by the journal"


def test_appends_from_several_threads_each_land_on_a_line_of_their_own(tmp_path: Path):
    journal = Journal(tmp_path / "journal.jsonl")

    def write(start: int) -> None:
        for index in range(start, start + 60):
            journal.append(made_up_result(index, f"thread/{index}.png"))

    threads = [threading.Thread(target=write, args=(start,)) for start in range(0, 360, 60)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    journal.close()
    finished = Journal(journal.path).read()
    assert finished == {f"thread/{i}.png": made_up_result(i, f"thread/{i}.png") for i in range(360)}
    assert journal.path.read_bytes().count(b"\n") == 360


def test_appending_after_close_reopens_the_journal(tmp_path: Path):
    journal = Journal(tmp_path / "journal.jsonl")
    journal.append(made_up_result(0))
    journal.close()
    journal.close()  # closing twice is harmless
    journal.append(made_up_result(1))
    journal.close()
    assert list(Journal(journal.path).read()) == [made_up_result(0).image, made_up_result(1).image]
