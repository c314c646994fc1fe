"""The DICOM node between a real Orthanc and the project's model: films routed by Orthanc's Lua script come
back as SR and GSPS equal to detect.py's detections; kill -9, a PACS that stops, bad inputs; HL7 to a
real MLLP listener. The model is the shared tiny export (random weights: many low-score boxes, so a low
threshold gives every film findings)."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient

from chestdet.clinical.results import model_info, result_uids
from chestdet.commands.cli import run_main
from chestdet.commands.detect import main as detect_main
from tests.conftest import SAMPLE_IMAGES
from tests.support.dicom_films import Study, film_dataset, gray_from_png, make_film
from tests.support.dicom_peers import MllpListener, running, send_films
from tests.support.dicom_results import dcmtk_verdict, sr_findings
from tests.support.node_process import NodeProcess
from tests.support.orthanc import MODALITY_AET, ORTHANC_AET, Orthanc
from tests.support.processes import free_port

pytestmark = pytest.mark.slow

PNGS = sorted(SAMPLE_IMAGES.glob("*.png"))
KINDS = ("mono2-8bit", "mono1-12bit-window", "jpeg2000", "jpeg-lossless")
MIN_SCORE, MAX_BOXES = "0.005", "4"  # random weights score every box about 0.01
DETECTION = ["--min-score", MIN_SCORE, "--max-boxes", MAX_BOXES, "--retry-first", "0.2", "--retry-most", "1",
             "--timeout", "10"]


def to_orthanc(orthanc: Orthanc, films: list) -> list[int]:
    return send_films(orthanc.dicom_port, films, called_ae=ORTHANC_AET, calling_ae=MODALITY_AET)


def wait_until(condition, seconds: float, what: str, node: NodeProcess | None = None) -> None:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while not condition():
        if node is not None and not node.alive():
            raise AssertionError(f"the node died waiting for {what}:\n{node.log_text()[-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}" + (
            f":\n{node.log_text()[-3000:]}" if node else "")
        time.sleep(0.2)


def retrieve(orthanc: Orthanc, study: str, modality: str) -> list[pydicom.Dataset]:
    client = DICOMwebClient(orthanc.dicomweb)
    found = client.search_for_instances(study_instance_uid=study, search_filters={"Modality": modality})
    datasets = []
    for item in found:
        uid = {key: value["Value"][0] for key, value in item.items() if "Value" in value}
        datasets.append(client.retrieve_instance(study, uid["0020000E"], uid["00080018"]))
    return datasets


def test_films_routed_by_orthanc_come_back_as_sr_and_gsps_equal_to_detect(orthanc, tiny_export, tmp_path: Path):
    study = Study(seed="routed films", accession="ACC-ROUTE")
    films = [make_film(PNGS[n], tmp_path / "films" / f"{kind}.dcm", kind, study, n + 1) for n, kind in
             enumerate(KINDS)]
    listener = MllpListener(["AE"])
    node = NodeProcess(tiny_export, tmp_path / "spool", orthanc.node_port, orthanc.address,
                       [*DETECTION, "--hl7", f"127.0.0.1:{listener.port}"])
    with running(listener):
        node.start()
        try:
            assert to_orthanc(orthanc, films) == [0, 0, 0, 0]
            wait_until(lambda: len(orthanc.sop_uids(study.study_uid, "SR")) == 4
                       and len(orthanc.sop_uids(study.study_uid, "PR")) == 4, 120, "4 SR and 4 GSPS", node)
            wait_until(lambda: node.status().get("done") == 4, 60, "the HL7 acknowledgements", node)
        finally:
            assert node.stop() == 0
    out = tmp_path / "detect"
    assert run_main(detect_main, ["--model", str(tiny_export), "--input", str(tmp_path / "films"), "--output-dir",
                                  str(out), "--backend", "tflite", "--min-score", MIN_SCORE, "--max-boxes",
                                  MAX_BOXES, "--keep-score", "0.001", "--dicom-results", "--no-progress"]) == 0
    check_results_equal_detect(orthanc, study, films, out, tiny_export, tmp_path)
    check_hl7(listener, films, orthanc, study)


def check_results_equal_detect(orthanc: Orthanc, study: Study, films: list[Path], out: Path, export: Path,
                               tmp_path: Path) -> None:
    rows = list(csv.DictReader(open(out / "detections.csv", newline="", encoding="utf-8")))
    reports, states = retrieve(orthanc, study.study_uid, "SR"), retrieve(orthanc, study.study_uid, "PR")
    model = model_info(export)
    for film in films:
        source = pydicom.dcmread(film, stop_before_pixels=True)
        uids = result_uids(source, model)
        [sr] = [r for r in reports if r.SOPInstanceUID == uids.sr_instance]
        found = sr_findings(sr, film_uid=source.SOPInstanceUID)
        drawn = [r for r in rows if r["image"] == film.name and float(r["score"]) >= float(MIN_SCORE)][:4]
        assert found and [f.class_name for f in found] == [r["class_name"] for r in drawn], film.name
        assert np.allclose([f.box for f in found], [[float(r[k]) for k in ("xmin", "ymin", "xmax", "ymax")]
                                                   for r in drawn], atol=0.5), film.name
        assert pydicom.dcmread(out / "dicom" / f"{film.stem}.sr.dcm").SOPInstanceUID == sr.SOPInstanceUID
        [gsps] = [s for s in states if s.SOPInstanceUID == uids.pr_instance]
        for name, dataset in (("sr", sr), ("gsps", gsps)):
            path = tmp_path / "back" / f"{film.stem}.{name}.dcm"
            path.parent.mkdir(exist_ok=True)
            dataset.save_as(path, enforce_file_format=True)
            accepted, said = dcmtk_verdict(path)
            assert accepted, f"{path.name}: {said}"


def check_hl7(listener: MllpListener, films: list[Path], orthanc: Orthanc, study: Study) -> None:
    """Every film's findings reached the RIS in an acknowledged ORU, once; the first answer was a NAK."""
    assert len(listener.messages) >= 2
    acknowledged = listener.messages[1:]  # the first was answered AE and sent again
    images = [str(obx[5]).rsplit("image ", 1)[1] for m in acknowledged for obx in m.segments("OBX")]
    film_uids = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in films}
    assert set(images) == film_uids
    assert len(images) == sum(len(sr_findings(sr)) for sr in retrieve(orthanc, study.study_uid, "SR"))
    assert {str(m["OBR.F2"]) for m in listener.messages} == {"ACC-ROUTE"}


def test_kill_9_mid_burst_then_restart_gives_one_sr_and_one_gsps_per_film(orthanc, tiny_export, tmp_path: Path):
    study = Study(seed="burst of 50", accession="ACC-BURST")
    films = [film_dataset(gray_from_png(PNGS[n % len(PNGS)], 96), "mono2-8bit", study, n + 1) for n in range(50)]
    node = NodeProcess(tiny_export, tmp_path / "spool", orthanc.node_port, orthanc.address, DETECTION).start()
    sent = to_orthanc(orthanc, films[:25])
    wait_until(lambda: node.log_text().count("received ") >= 10, 60, "10 films at the node", node)
    node.kill9()
    sent += to_orthanc(orthanc, films[25:])
    assert sent == [0] * 50
    wait_until(lambda: len(orthanc.sop_uids(study.study_uid, "DX")) == 50, 60, "the 50 films in Orthanc")
    time.sleep(2)  # the Lua routing of the films stored while the node was down fails, as it would in a hospital
    node.start()
    wait_until(lambda: node.status().get("waiting") == 0 and node.status().get("to_send") == 0, 120,
               "the spool to drain after the restart", node)
    acknowledged = {line.split("received ", 1)[1].split()[0] for line in node.log_text().splitlines()
                    if "received " in line and "not processed" not in line}
    stored_sr = set(orthanc.sop_uids(study.study_uid, "SR"))
    model = model_info(tiny_export)
    by_film = {str(f.SOPInstanceUID): result_uids(f, model).sr_instance for f in films}
    assert {by_film[uid] for uid in acknowledged} <= stored_sr, "a film the node acknowledged has no SR"
    missing = [i["ID"] for i in orthanc.find(study.study_uid, "DX") if by_film[i["MainDicomTags"]["SOPInstanceUID"]]
               not in stored_sr]
    orthanc.route_again(missing)  # the PACS re-sends what the node never acknowledged
    wait_until(lambda: len(orthanc.sop_uids(study.study_uid, "SR")) == 50
               and len(orthanc.sop_uids(study.study_uid, "PR")) == 50, 120, "50 SR and 50 GSPS", node)
    wait_until(lambda: node.status().get("to_send") == 0 and node.status().get("waiting") == 0, 60, "idle", node)
    assert node.stop() == 0
    assert len(orthanc.sop_uids(study.study_uid, "SR")) == 50 and len(orthanc.sop_uids(study.study_uid, "PR")) == 50
    assert set(orthanc.sop_uids(study.study_uid, "SR")) == set(by_film.values())


def test_a_pacs_that_stops_gets_everything_when_it_is_back_over_stow_rs(tiny_export, tmp_path: Path):
    pacs = Orthanc(tmp_path / "pacs", free_port()).start()
    study = Study(seed="pacs down", accession="ACC-DOWN")
    films = [film_dataset(gray_from_png(PNGS[n], 96), "mono2-8bit", study, n + 1) for n in range(5)]
    node = NodeProcess(tiny_export, tmp_path / "spool", free_port(), f"dicomweb+{pacs.dicomweb}", DETECTION).start()
    try:
        pacs.stop()
        assert send_films(node.port, films) == [0] * 5
        wait_until(lambda: node.status().get("to_send") == 5 and node.status().get("last_errors"), 60,
                   "results waiting for the stopped PACS", node)
        pacs.start()
        wait_until(lambda: node.status().get("done") == 5, 60, "delivery once the PACS is back", node)
    finally:
        node.stop()
        pacs.stop()
    pacs.start()
    try:
        assert len(pacs.sop_uids(study.study_uid, "SR")) == 5 and len(pacs.sop_uids(study.study_uid, "PR")) == 5
    finally:
        pacs.stop()
    assert "STOW-RS failed" in node.log_text()


def test_bad_inputs_are_logged_and_none_stops_the_node(orthanc, tiny_export, tmp_path: Path):
    study = Study(seed="bad inputs", accession="ACC-BAD")
    truncated = film_dataset(gray_from_png(PNGS[0], 96), "mono2-8bit", study, 1)
    truncated.PixelData = truncated.PixelData[:1000]
    bare = film_dataset(gray_from_png(PNGS[1], 96), "mono2-8bit", study, 2)
    del bare.PixelData
    good = film_dataset(gray_from_png(PNGS[2], 96), "mono2-8bit", study, 3)
    sr_file = tmp_path / "an.sr.dcm"
    run_main(detect_main, ["--model", str(tiny_export), "--input", str(_saved(good, tmp_path / "good.dcm")),
                           "--output-dir", str(tmp_path / "detect"), "--dicom-results", "--no-progress"])
    sr_file.write_bytes((tmp_path / "detect" / "dicom" / "good.sr.dcm").read_bytes())
    node = NodeProcess(tiny_export, tmp_path / "spool", free_port(), orthanc.address, DETECTION).start()
    try:
        assert send_films(node.port, [truncated, bare, pydicom.dcmread(sr_file), good]) == [0, 0, 0, 0]
        wait_until(lambda: node.status().get("done") == 1 and node.status().get("failed") == 1, 60, "the films", node)
        assert node.alive()
    finally:
        assert node.stop() == 0
    log = node.log_text()
    assert f"failed {truncated.SOPInstanceUID}: cannot decode DICOM pixel data" in log
    assert f"received {bare.SOPInstanceUID} from MODALITY, not processed: no pixel data" in log
    assert "(Comprehensive 3D SR Storage) is not one of those read" in log
    assert "Traceback" not in log
    assert orthanc.sop_uids(study.study_uid, "SR") == [result_uids(good, model_info(tiny_export)).sr_instance]


def _saved(dataset: pydicom.Dataset, path: Path) -> Path:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    path.write_bytes(buffer.getvalue())
    return path
