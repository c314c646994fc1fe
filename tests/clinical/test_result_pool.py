"""The SR and GSPS built in worker processes: the same bytes as built in the caller, errors carried back,
and no worker process left behind when the node's process is killed."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest

from chestdet.clinical import results
from chestdet.clinical.result_pool import ResultBuilder, encoded_results
from chestdet.core.detections import Detection
from chestdet.core.labels import CLASS_NAMES
from tests.conftest import REPO, SAMPLE_IMAGES
from tests.support.dicom_films import Study, make_film

NAMES = {number: name for number, name in enumerate(CLASS_NAMES, start=1)}
MODEL = results.ModelInfo("nih-export", "step 1200", results.derived_uid("test model"))
BOXES = [Detection(2, 0.87, 100.5, 200.25, 600.0, 700.0), Detection(5, 0.41, 10.0, 5.0, 80.0, 90.0)]


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> Path:
    png = sorted(SAMPLE_IMAGES.glob("*.png"))[0]
    return make_film(png, tmp_path_factory.mktemp("film") / "film.dcm", "mono1-12bit-window", Study())


@pytest.fixture(scope="module")
def builder():
    pool = ResultBuilder(processes=1)
    yield pool
    pool.close()


def test_a_worker_process_builds_the_same_objects_as_the_caller(film: Path, builder: ResultBuilder):
    here = ResultBuilder(processes=0).build(film, BOXES, NAMES, MODEL, 0.3)
    there = builder.build(film, BOXES, NAMES, MODEL, 0.3)
    assert _timeless(there.sr) == _timeless(here.sr) and _timeless(there.gsps) == _timeless(here.gsps)
    source = pydicom.dcmread(film, stop_before_pixels=True)
    sr, gsps = results.film_results(source, BOXES, NAMES, MODEL, 0.3)
    assert (there.sr_uid, there.gsps_uid) == (sr.SOPInstanceUID, gsps.SOPInstanceUID)
    assert pydicom.dcmread(io.BytesIO(there.sr)).SOPInstanceUID == sr.SOPInstanceUID


def _timeless(encoded: bytes) -> list[str]:
    """The object's elements, at every depth, but the times it was made at (set when it is built)."""
    made_at = ("Instance Creation Time", "Content Time", "Presentation Creation Time", "Contribution DateTime")
    return [line for line in str(pydicom.dcmread(io.BytesIO(encoded))).splitlines()
            if not any(name in line for name in made_at)]


def test_a_film_gone_from_the_spool_or_without_uids_is_an_error_the_caller_sees(film: Path, builder: ResultBuilder,
                                                                              tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        builder.build(tmp_path / "gone.dcm", BOXES, NAMES, MODEL, 0.3)
    header = pydicom.dcmread(film)
    del header.StudyInstanceUID
    header.save_as(tmp_path / "no-study.dcm", enforce_file_format=True)
    with pytest.raises(AttributeError):
        encoded_results(tmp_path / "no-study.dcm", BOXES, NAMES, MODEL, 0.3)
    with pytest.raises(AttributeError):
        builder.build(tmp_path / "no-study.dcm", BOXES, NAMES, MODEL, 0.3)


def test_the_worker_process_ends_when_the_nodes_process_is_killed():
    program = ("from chestdet.clinical.result_pool import ResultBuilder\n"
               "import time\n"
               "pool = ResultBuilder(1)\n"
               "print(*[p.pid for p in pool._pool._processes.values()], flush=True)\n"
               "time.sleep(120)\n")
    node = subprocess.Popen([sys.executable, "-c", program], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        workers = [int(pid) for pid in node.stdout.readline().split()]
        assert len(workers) == 1 and _alive(workers[0])
        node.send_signal(signal.SIGKILL)
        node.wait(10)
        deadline = time.monotonic() + 10
        while _alive(workers[0]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(workers[0])
    finally:
        node.kill()
        node.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split(") ")[-1].startswith("Z"))
