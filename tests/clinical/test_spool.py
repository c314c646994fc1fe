"""The spool keeps what it acknowledged: each step is all or nothing, also under kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chestdet.clinical.spool import DONE, FAILED, INCOMING, RESULTS, Spool, SpoolError, check_uid
from tests.conftest import REPO

UIDS = [f"1.2.826.0.1.{n}" for n in range(1, 6)]


def payload(uid: str, size: int = 4096) -> bytes:
    return (uid.encode() + b"|") * (size // (len(uid) + 1))


def test_a_film_moves_from_incoming_through_results_to_done(tmp_path: Path):
    spool = Spool(tmp_path / "spool")
    assert spool.receive(UIDS[0], payload(UIDS[0]), sender="MODALITY")
    assert not spool.receive(UIDS[0], b"again"), "a film already waiting is not overwritten"
    assert spool.film(UIDS[0]).read_bytes() == payload(UIDS[0])
    assert (spool.unprocessed(), spool.processed()) == ([UIDS[0]], [])
    spool.save_results(UIDS[0], {"sr.dcm": b"sr", "gsps.dcm": b"pr"}, {"film": UIDS[0], "findings": []})
    assert (spool.unprocessed(), spool.processed()) == ([], [UIDS[0]])
    spool.finish(UIDS[0], destination="PACS@host:104")
    assert spool.waiting() == [] and (tmp_path / "spool" / DONE / f"{UIDS[0]}.dcm").is_file()
    assert (tmp_path / "spool" / DONE / UIDS[0] / "sr.dcm").read_bytes() == b"sr"
    assert [(e["event"], e["uid"]) for e in spool.events()] == [("received", UIDS[0]), ("sent", UIDS[0])]


def test_an_unreadable_film_goes_to_failed_with_its_reason(tmp_path: Path):
    spool = Spool(tmp_path)
    spool.receive(UIDS[1], payload(UIDS[1]))
    spool.fail(UIDS[1], "cannot decode DICOM pixel data (truncated)")
    assert spool.waiting() == []
    assert (tmp_path / FAILED / f"{UIDS[1]}.txt").read_text() == "cannot decode DICOM pixel data (truncated)\n"
    assert list(spool.events())[-1]["reason"] == "cannot decode DICOM pixel data (truncated)"


def test_films_wait_oldest_first(tmp_path: Path):
    spool = Spool(tmp_path)
    for number, uid in enumerate(reversed(UIDS)):
        spool.receive(uid, payload(uid))
        os.utime(spool.film(uid), ns=(10**9 * number, 10**9 * number))
    assert spool.waiting() == list(reversed(UIDS))


@pytest.mark.parametrize("uid", ["", "../../etc/passwd", "1.2.3/4", "1." * 40, "1.2.a"])
def test_a_uid_that_is_not_a_uid_never_becomes_a_file_name(tmp_path: Path, uid: str):
    with pytest.raises(SpoolError, match="not a valid SOP Instance UID"):
        Spool(tmp_path).receive(uid, b"x")
    assert check_uid("1.2.840.10008.1") == "1.2.840.10008.1"


def test_recover_clears_temporaries_and_finishes_a_half_done_delivery(tmp_path: Path):
    spool = Spool(tmp_path)
    (tmp_path / INCOMING / f".{UIDS[0]}.dcm.abc.tmp").write_bytes(b"half a film")  # killed while receiving
    (tmp_path / RESULTS / f".{UIDS[1]}.xyz.tmp").mkdir()  # killed while writing results
    spool.receive(UIDS[2], payload(UIDS[2]))
    spool.save_results(UIDS[2], {"sr.dcm": b"sr"}, {"film": UIDS[2]})
    os.replace(spool.film(UIDS[2]), tmp_path / DONE / f"{UIDS[2]}.dcm")  # killed between the two moves
    spool.receive(UIDS[3], payload(UIDS[3]))
    assert spool.recover() == 1
    assert sorted(p.name for p in (tmp_path / INCOMING).iterdir()) == [f"{UIDS[3]}.dcm"]
    assert sorted(p.name for p in (tmp_path / RESULTS).iterdir()) == []
    assert (tmp_path / DONE / UIDS[2] / "sr.dcm").read_bytes() == b"sr"


RECEIVER = """
import sys
from pathlib import Path
from chestdet.clinical.spool import Spool

spool = Spool(Path(sys.argv[1]))
count, size = int(sys.argv[2]), int(sys.argv[3])
for n in range(count):
    uid = f"1.2.826.0.1.{n}"
    spool.receive(uid, (uid.encode() + b"|") * (size // (len(uid) + 1)))
    print(uid, flush=True)  # the C-STORE is answered only after receive() returns
"""


def test_kill_9_while_receiving_leaves_every_acknowledged_film_whole_and_no_partial_one(tmp_path: Path):
    script = tmp_path / "receiver.py"
    script.write_text(RECEIVER)
    acknowledged: list[str] = []
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for round_number in range(3):
        process = subprocess.Popen([sys.executable, str(script), str(tmp_path / "spool"), "400", str(1 << 20)],
                                   stdout=subprocess.PIPE, text=True, env=env)
        acknowledged.extend(process.stdout.readline().strip() for _ in range(3 + 5 * round_number))
        time.sleep(0.01 * round_number)
        process.send_signal(signal.SIGKILL)
        process.wait()
        acknowledged.extend(line.strip() for line in process.stdout if line.strip())
    spool = Spool(tmp_path / "spool")
    spool.recover()
    waiting = spool.waiting()
    assert set(acknowledged) <= set(waiting)
    for uid in waiting:
        assert spool.film(uid).read_bytes() == payload(uid, 1 << 20), f"{uid} is not whole"
    assert not [p for p in (tmp_path / "spool" / INCOMING).iterdir() if p.name.startswith(".")]
    journal = [json.loads(line) for line in (tmp_path / "spool" / "journal.jsonl").read_text().splitlines()
               if line.endswith("}")]
    assert {e["uid"] for e in journal} <= set(waiting)
