"""Destinations of the results: C-STORE against a real in-process SCP, the --send-to forms, the backoff."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from chestdet.clinical.results import ModelInfo, derived_uid, film_results
from chestdet.clinical.scp import Timeouts
from chestdet.clinical.senders import (
    Backoff,
    DestinationError,
    DicomDestination,
    SendError,
    StowDestination,
    parse_destination,
)
from chestdet.core.detections import Detection
from tests.support.dicom_films import film_dataset
from tests.support.dicom_peers import Pacs, running
from tests.support.processes import free_port

QUICK = Timeouts(acse=5, dimse=5, network=5, connect=2)


@pytest.fixture
def results(tmp_path: Path) -> list[Path]:
    film = film_dataset(np.full((64, 64), 90, np.uint8), "mono2-8bit")
    model = ModelInfo("export", "step 1", derived_uid("senders test"))
    paths = []
    for name, dataset in zip(("sr.dcm", "gsps.dcm"), film_results(
            film, [Detection(2, 0.9, 1, 2, 30, 40)], {2: "Cardiomegaly"}, model, 0.3), strict=True):
        dataset.save_as(tmp_path / name, enforce_file_format=True)
        paths.append(tmp_path / name)
    return paths


def test_c_store_returns_once_the_pacs_accepted_both(results: list[Path]):
    pacs = Pacs()
    with running(pacs), DicomDestination("PACS", "127.0.0.1", pacs.port, "CHESTDET", QUICK).open() as store:
        store(results)
    assert sorted(d.Modality for d in pacs.stored.values()) == ["PR", "SR"]


@pytest.mark.parametrize("status", [0xA700, 0xC000])
def test_a_refused_object_is_a_send_error(results: list[Path], status: int):
    pacs = Pacs()
    pacs.refuse = [status]
    with running(pacs), pytest.raises(SendError, match=f"not stored \\(status 0x{status:04X}\\)"):
        with DicomDestination("PACS", "127.0.0.1", pacs.port, "CHESTDET", QUICK).open() as store:
            store(results)
    assert pacs.stored == {}


def test_a_rejected_or_unreachable_destination_is_a_send_error(results: list[Path]):
    pacs = Pacs()
    with running(pacs), pytest.raises(SendError, match="association rejected"):
        DicomDestination("NOT-PACS", "127.0.0.1", pacs.port, "CHESTDET", QUICK).open().__enter__()
    with pytest.raises(SendError, match="association failed"):
        DicomDestination("PACS", "127.0.0.1", free_port(), "CHESTDET", QUICK).open().__enter__()


def test_send_to_forms():
    assert parse_destination("ORTHANC@10.0.0.5:4242", "CHESTDET") == DicomDestination(
        "ORTHANC", "10.0.0.5", 4242, "CHESTDET")
    assert parse_destination("dicomweb+https://pacs.example/dicom-web", "CHESTDET") == StowDestination(
        "https://pacs.example/dicom-web")
    for bad in ("ORTHANC@host", "host:4242", "A@h:0", "THIS-AE-TITLE-IS-TOO-LONG@h:104", "http://pacs/dicom-web"):
        with pytest.raises(DestinationError, match="expected AE@HOST:PORT"):
            parse_destination(bad, "CHESTDET")


def test_backoff_doubles_to_its_ceiling_and_starts_again_after_a_success():
    backoff = Backoff(first=0.5, most=3.0)
    assert [backoff.delay() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.delay() == 0.5


def test_results_can_be_sent_from_their_files_as_stored(results: list[Path], monkeypatch):
    from pynetdicom import _config

    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)  # as the node command sends them
    pacs = Pacs()
    with running(pacs), DicomDestination("PACS", "127.0.0.1", pacs.port, "CHESTDET", QUICK).open() as store:
        store(results)
    assert sorted(d.Modality for d in pacs.stored.values()) == ["PR", "SR"]
    assert {str(d.file_meta.TransferSyntaxUID) for d in pacs.stored.values()} == {"1.2.840.10008.1.2.1"}
