"""The node in process, between a modality and a PACS that are real pynetdicom peers: films in, SR and
GSPS out, with refusals, a destination that is down, restarts, bad films and HL7."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest

from chestdet.clinical.node import Node, NodeSettings, read_status
from chestdet.clinical.result_pool import dicom_bytes
from chestdet.clinical.results import ModelInfo, derived_uid
from chestdet.clinical.scp import Timeouts
from chestdet.clinical.spool import Spool
from chestdet.core.imaging import read_image
from chestdet.core.labels import CLASS_NAMES
from chestdet.detection.thresholds import Thresholds
from chestdet.export.backends import to_pixels
from tests.conftest import SAMPLE_IMAGES
from tests.support.dicom_films import Study, film_dataset, gray_from_png, make_film
from tests.support.dicom_peers import BoxesFromPixels, MllpListener, Pacs, running, send_films
from tests.support.dicom_results import sr_findings
from tests.support.processes import free_port

NAMES = {number: name for number, name in enumerate(CLASS_NAMES, start=1)}
MODEL = ModelInfo("export", "step 5", derived_uid("node test model"))
PNGS = sorted(SAMPLE_IMAGES.glob("*.png"))
QUICK = Timeouts(acse=3, dimse=3, network=5, connect=2)
STUDY = Study()


def wait_for(condition: Callable[[], bool], seconds: float = 30, what: str = "the condition") -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def make_node(spool: Path, pacs_port: int, hl7: str | None = None, associations: int = 4) -> Node:
    settings = NodeSettings(ae_title="CHESTDET", spool=spool, send_to=f"PACS@127.0.0.1:{pacs_port}",
                            port=free_port(), hl7=hl7, batch_size=4, thresholds=Thresholds(0.3),
                            retry_first=0.1, retry_most=0.3, timeouts=QUICK, associations=associations)
    return Node(settings, BoxesFromPixels(), NAMES, MODEL)


def films(tmp_path: Path, count: int = 3, kinds: tuple[str, ...] = ("mono2-8bit", "jpeg2000", "mono1-12bit-window"),
          study: Study = STUDY) -> list[Path]:
    return [make_film(PNGS[n % len(PNGS)], tmp_path / "films" / f"{n}.dcm", kinds[n % len(kinds)], study, n + 1,
                      size=96) for n in range(count)]


def expected_boxes(film: Path) -> list[tuple[str, tuple[float, ...]]]:
    """What detect would draw on this film with the same backend and threshold."""
    pixels = read_image(film)
    backend = BoxesFromPixels()
    output = backend.infer([backend.prepare(pixels)])[0]
    kept = [d.as_printed() for d in to_pixels(output, pixels.shape[1], pixels.shape[0])]
    return [(NAMES[d.class_id], (d.xmin, d.ymin, d.xmax, d.ymax)) for d in Thresholds(0.3).shown(kept, 100)]


def test_films_in_sr_and_gsps_out_with_one_log_line_per_step(tmp_path: Path, caplog):
    pacs, sent = Pacs(), films(tmp_path)
    node = make_node(tmp_path / "spool", pacs.port)
    with caplog.at_level(logging.INFO, logger="chestdet"), running(pacs):
        node.start()
        try:
            assert send_films(node.port, sent) == [0, 0, 0]
            wait_for(lambda: len(pacs.of_modality("SR")) == 3 and len(pacs.of_modality("PR")) == 3, what="results")
            wait_for(lambda: node.status()["done"] == 3, what="the spool")
        finally:
            node.stop()
    for film in sent:
        uid = pydicom.dcmread(film, stop_before_pixels=True).SOPInstanceUID
        [sr] = [d for d in pacs.of_modality("SR") if sr_findings(d, film_uid=uid)]
        found = sr_findings(sr, film_uid=uid)
        assert [f.class_name for f in found] == [name for name, _ in expected_boxes(film)]
        assert np.allclose([f.box for f in found], [box for _, box in expected_boxes(film)], atol=1e-4)
        for step in ("received", "processed", "sent"):
            assert sum(step in r.getMessage() and uid in r.getMessage() for r in caplog.records) == 1, (step, uid)
    status = read_status(tmp_path / "spool")
    assert (status["waiting"], status["to_send"], status["done"], status["failed"]) == (0, 0, 3, 0)
    assert status["since_start"] == {"received": 3, "processed": 3, "sent": 3}


def test_results_go_over_several_associations_at_once_in_rounds_each_film_once(tmp_path: Path, caplog):
    """40 films, 3 associations of at most 8 films a round: at least two rounds, each sending at once.
    A store left unanswered within the test's 3 s (a loaded machine) is sent again, with its film's
    other object: the PACS then holds it once, and the log says so."""
    pacs, sent = Pacs(), films(tmp_path, 40, kinds=("mono2-8bit",))
    node = make_node(tmp_path / "spool", pacs.port, associations=3)
    with caplog.at_level(logging.WARNING, logger="chestdet"), running(pacs):
        node.start()
        try:
            assert send_films(node.port, sent) == [0] * 40
            wait_for(lambda: node.status()["done"] == 40, what="every film sent")
        finally:
            node.stop()
    assert len(pacs.of_modality("SR")) == 40 and len(pacs.of_modality("PR")) == 40
    resent = sum("retrying in" in record.getMessage() for record in caplog.records)
    assert 80 <= pacs.attempts <= 80 + 2 * resent
    assert 2 <= pacs.most_associations <= 3


def test_a_refusing_destination_gets_retries_and_nothing_is_dropped_or_doubled(tmp_path: Path):
    pacs, sent = Pacs(), films(tmp_path, 2)
    pacs.refuse = [0xA700, 0xA700, 0xA700]
    node = make_node(tmp_path / "spool", pacs.port)
    with running(pacs):
        node.start()
        try:
            send_films(node.port, sent)
            wait_for(lambda: node.status()["done"] == 2, what="delivery after refusals")
        finally:
            node.stop()
    assert len(pacs.of_modality("SR")) == 2 and len(pacs.of_modality("PR")) == 2
    assert pacs.attempts == 4 + 3
    assert any("status 0xA700" in e["error"] for e in read_status(tmp_path / "spool")["last_errors"])


def test_a_destination_down_keeps_results_until_it_is_back_and_a_restart_resumes(tmp_path: Path):
    pacs, sent = Pacs(), films(tmp_path, 3)
    spool = Spool(tmp_path / "spool")
    waiting = film_dataset(gray_from_png(PNGS[5], 80), "mono2-8bit", Study(seed="waiting"))
    spool.receive(waiting.SOPInstanceUID, dicom_bytes(waiting))  # received by an earlier run, never processed
    first = make_node(tmp_path / "spool", pacs.port)
    first.start()
    try:
        send_films(first.port, sent)
        wait_for(lambda: first.status()["to_send"] == 4 and first.status()["last_errors"],
                 what="results waiting for the PACS, and a failed send")
    finally:
        first.stop()
    second = make_node(tmp_path / "spool", pacs.port)
    with running(pacs):
        second.start()
        try:
            wait_for(lambda: second.status()["done"] == 4, what="delivery after the restart")
        finally:
            second.stop()
    assert len(pacs.of_modality("SR")) == 4 and len(pacs.of_modality("PR")) == 4


def test_an_undecodable_film_goes_to_failed_and_the_node_goes_on(tmp_path: Path):
    pacs = Pacs()
    truncated = film_dataset(gray_from_png(PNGS[0], 64), "mono2-8bit", Study(), 1)
    truncated.PixelData = truncated.PixelData[:500]
    good = film_dataset(gray_from_png(PNGS[1], 64), "mono2-8bit", Study(), 2)
    node = make_node(tmp_path / "spool", pacs.port)
    with running(pacs):
        node.start()
        try:
            assert send_films(node.port, [truncated, good]) == [0, 0]
            wait_for(lambda: node.status()["done"] == 1 and node.status()["failed"] == 1, what="the two films")
        finally:
            node.stop()
    reason = (tmp_path / "spool" / "failed" / f"{truncated.SOPInstanceUID}.txt").read_text()
    assert reason.startswith("cannot decode DICOM pixel data")
    assert [sr_findings(d) != [] for d in pacs.of_modality("SR")] == [True]


def test_hl7_per_study_is_retried_until_acknowledged_and_the_dicom_is_sent_once(tmp_path: Path):
    pacs, listener = Pacs(), MllpListener(["AE", "silent", "AA"])
    sent = films(tmp_path, 2, study=Study(seed="hl7 study"))
    node = make_node(tmp_path / "spool", pacs.port, hl7=f"127.0.0.1:{listener.port}")
    with running(pacs, listener):
        node.start()
        try:
            send_films(node.port, sent)
            wait_for(lambda: node.status()["done"] == 2, seconds=60, what="the HL7 acknowledgement")
        finally:
            node.stop()
    assert len(listener.messages) == 3
    assert len({str(m.segment("MSH")[10]) for m in listener.messages}) == 1, "a retry is the same message"
    obx = listener.messages[-1].segments("OBX")
    assert len(obx) == sum(len(expected_boxes(f)) for f in sent)
    assert str(listener.messages[-1]["OBR.F2"]) == STUDY.accession
    assert len(pacs.of_modality("SR")) == 2 and pacs.attempts == 4
    events = [(e["event"], e.get("hl7")) for e in Spool(tmp_path / "spool").events() if e["event"] == "sent"]
    assert events == [("sent", str(listener.messages[-1].segment("MSH")[10]))] * 2


@pytest.fixture(autouse=True)
def _no_leftover_status(tmp_path: Path):
    yield
    status = tmp_path / "spool" / "status.json"
    if status.exists():
        json.loads(status.read_text())  # always whole JSON, even when written by two threads
