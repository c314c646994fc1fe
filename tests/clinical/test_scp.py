"""The node's Storage SCP, in process: it spools what it reads, acknowledges what it turns away, and
answers C-ECHO; real associations from pynetdicom."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, RLELossless
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from chestdet.clinical.filters import load_filter
from chestdet.clinical.results import ModelInfo, derived_uid, structured_report
from chestdet.clinical.scp import StorageSCP, decodable_transfer_syntaxes
from chestdet.clinical.spool import Spool
from tests.conftest import SAMPLE_IMAGES
from tests.support.dicom_films import Study, film_dataset, gray_from_png, make_film
from tests.support.dicom_peers import send_films
from tests.support.processes import free_port

PNG = sorted(SAMPLE_IMAGES.glob("*.png"))[0]


@pytest.fixture
def scp(tmp_path: Path):  # noqa: ANN201 - (StorageSCP, Spool, wake event)
    spool, woken = Spool(tmp_path / "spool"), threading.Event()
    server = StorageSCP("CHESTDET", ("127.0.0.1", free_port()), spool, load_filter(None), woken.set)
    server.start()
    yield server, spool, woken
    server.stop()


def test_a_film_is_spooled_as_it_came_before_the_answer_and_wakes_the_worker(scp, tmp_path: Path):
    server, spool, woken = scp
    films = [make_film(PNG, tmp_path / f"{kind}.dcm", kind, Study(), n, size=128)
             for n, kind in enumerate(("mono2-8bit", "jpeg2000", "jpeg-lossless", "rle"), start=1)]
    started = time.perf_counter()
    assert send_films(server.port, films) == [0, 0, 0, 0]
    assert time.perf_counter() - started < 5
    assert woken.is_set()
    for film in films:
        sent = pydicom.dcmread(film)
        kept = pydicom.dcmread(spool.film(sent.SOPInstanceUID))
        assert kept.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID
        assert kept.PixelData == sent.PixelData
    assert [e["event"] for e in spool.events()] == ["received"] * 4


def test_instances_it_does_not_read_are_acknowledged_logged_and_not_spooled(scp, caplog):
    server, spool, _ = scp
    film = film_dataset(gray_from_png(PNG, 64), "mono2-8bit", Study(), 1)
    model = ModelInfo("export", "step 1", derived_uid("scp test"))
    sr = structured_report(film, [], {}, model, 0.3)
    sr.file_meta = pydicom.dataset.FileMetaDataset()
    sr.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    bare = film_dataset(gray_from_png(PNG, 64), "mono2-8bit", Study(), 2)
    del bare.PixelData
    knee = film_dataset(gray_from_png(PNG, 64), "mono2-8bit", Study(), 3)
    knee.BodyPartExamined = "KNEE"
    with caplog.at_level(logging.INFO, logger="chestdet"):
        assert send_films(server.port, [sr, bare, knee]) == [0, 0, 0]
    assert spool.waiting() == []
    reasons = {e["uid"]: e["reason"] for e in spool.events() if e["event"] == "ignored"}
    assert reasons == {
        sr.SOPInstanceUID: f"SOPClassUID {sr.SOPClassUID} (Comprehensive 3D SR Storage) is not one of those read",
        bare.SOPInstanceUID: "no pixel data", knee.SOPInstanceUID: "BodyPartExamined 'KNEE' is not one of those read"}
    assert f"received {bare.SOPInstanceUID} from MODALITY, not processed: no pixel data" in caplog.text


def test_a_film_already_waiting_is_acknowledged_and_kept_once(scp):
    server, spool, _ = scp
    film = film_dataset(gray_from_png(PNG, 64), "mono2-8bit", Study(), 1)
    assert send_films(server.port, [film, film]) == [0, 0]
    assert spool.waiting() == [film.SOPInstanceUID]
    assert [e["event"] for e in spool.events()] == ["received"]


def test_a_spool_that_cannot_keep_the_film_answers_out_of_resources(scp, monkeypatch):
    server, spool, _ = scp

    def full(*args: object, **kwargs: object) -> bool:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spool, "receive", full)
    assert send_films(server.port, [film_dataset(np.zeros((8, 8), np.uint8), "mono2-8bit")]) == [0xA700]


def test_echo_works_and_a_wrong_called_ae_is_rejected(scp):
    server, _, _ = scp
    ae = AE(ae_title="ECHOSCU")
    ae.add_requested_context(Verification)
    association = ae.associate("127.0.0.1", server.port, ae_title="CHESTDET")
    assert association.is_established
    assert association.send_c_echo().Status == 0
    association.release()
    assert not ae.associate("127.0.0.1", server.port, ae_title="SOMEONE").is_established


def test_it_takes_the_compressed_syntaxes_the_decoders_read():
    syntaxes = decodable_transfer_syntaxes()
    assert syntaxes[:2] == [pydicom.uid.ImplicitVRLittleEndian, pydicom.uid.ExplicitVRLittleEndian]
    for needed in (JPEG2000Lossless, RLELossless, pydicom.uid.JPEGBaseline8Bit, pydicom.uid.JPEGLosslessSV1):
        assert needed in syntaxes


def test_both_ends_of_the_nodes_associations_send_without_nagles_delay(scp, monkeypatch):
    """Each C-STORE is a command and a dataset written apart, then a wait for the answer: with Nagle's
    algorithm on, every one waited for a delayed ACK (5 films/s through the node instead of dozens)."""
    import socket

    from chestdet.clinical import scp as scp_module
    from chestdet.clinical import senders

    opened = []
    monkeypatch.setattr(senders, "without_delay", lambda a: (opened.append(a), scp_module.without_delay(a)))
    server, _, _ = scp
    with senders.DicomDestination("CHESTDET", "127.0.0.1", server.port, "NODE").open():
        [accepted] = server.server.active_associations
        for association in (accepted, *opened):
            assert association.dul.socket.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    assert len(opened) == 1
