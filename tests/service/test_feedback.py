"""Reviews posted to a real server land in the feedback folder, replace earlier ones, survive a kill, and
go back into training through generate_tfrecords unchanged."""

from __future__ import annotations

import hashlib
import json
import signal
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from defusedxml import ElementTree

from chestdet.commands.cli import ExitStatus, run_main
from chestdet.commands.generate_tfrecords import main as generate_tfrecords
from chestdet.core.imaging import read_image
from tests.conftest import SAMPLE_IMAGES
from tests.support.image_makers import gradient, write_dicom
from tests.support.records_reader import read_records
from tests.support.service_server import ServiceServer

pytestmark = pytest.mark.slow

FILM = sorted(SAMPLE_IMAGES.glob("*.png"))[0]


def xml_boxes(path: Path) -> list[tuple[str, list[int]]]:
    root = ElementTree.parse(str(path)).getroot()
    return [(o.findtext("name"), [int(o.find("bndbox").findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")])
            for o in root.iter("object")]


def post_review(client, data: bytes, review: dict, name: str = "film.png"):  # noqa: ANN201 - an httpx.Response
    return client.post("/api/v1/feedback", files={"file": (name, data)}, data={"review": json.dumps(review)})


def model_box(cls: str, box: list[float], score: float) -> dict:
    return {"class": cls, "box": box, "score": score}


FIRST = {"reviewer": "Dr A", "operating_point": "1fp", "boxes": [
    {"verdict": "accepted", "class": "Mass", "box": [100, 120, 300, 330],
     "original": model_box("Mass", [100, 120, 300, 330], 0.8)},
    {"verdict": "drawn", "class": "Nodule", "box": [600, 600, 640, 650.4]},
]}
SECOND = {"reviewer": "Dr B", "boxes": [
    {"verdict": "moved", "class": "Mass", "box": [110.4, 130, 310, 340],
     "original": model_box("Mass", [100, 120, 300, 330], 0.8)},
    {"verdict": "relabelled", "class": "Effusion", "box": [700, 500, 900, 800],
     "original": model_box("Atelectasis", [700, 500, 900, 800], 0.4)},
    {"verdict": "deleted", "class": "Nodule", "box": [10, 10, 40, 40],
     "original": model_box("Nodule", [10, 10, 40, 40], 0.3)},
    {"verdict": "drawn", "class": "Pneumothorax", "box": [-20, 50, 200, 2000]},  # clipped to the image
]}
SECOND_XML = [("Mass", [110, 130, 310, 340]), ("Effusion", [700, 500, 900, 800]), ("Pneumothorax", [0, 50, 200, 1024])]


def test_a_later_review_replaces_the_earlier_and_generate_tfrecords_reads_the_folder(tiny_export, tmp_path):
    film = FILM.read_bytes()
    sha = hashlib.sha256(film).hexdigest()
    gray = read_image(FILM)
    dicom = write_dicom(tmp_path / "film.dcm", gray.astype(np.uint16) * 16, window=(2048, 4096)).read_bytes()
    tiff = cv2.imencode(".tiff", gray)[1].tobytes()
    with ServiceServer(tiny_export, tmp_path / "server", "--no-explain") as server, server.client() as client:
        first = post_review(client, film, FIRST, name="../../../etc/passwd").json()
        assert first == {"sha256": sha, "image": f"images/{sha}.png", "xml": f"xml/{sha}.xml", "boxes": 2,
                         "replaced": False}
        second = post_review(client, film, SECOND).json()
        assert second["replaced"] is True and second["boxes"] == 3
        assert post_review(client, dicom, FIRST, "x.dcm").json()["image"].endswith(".dcm")
        assert post_review(client, tiff, FIRST, "x.tiff").json()["image"].endswith(".png")
        bad = post_review(client, film, {**FIRST, "boxes": [{"verdict": "drawn", "class": "Fracture",
                                                             "box": [1, 1, 50, 50]}]})
        assert bad.status_code == 422 and "box 1: unknown class 'Fracture'" in bad.json()["detail"]
        empty = post_review(client, film, {**FIRST, "boxes": [{"verdict": "drawn", "class": "Mass",
                                                               "box": [2000, 5, 2100, 50]}]})
        assert empty.status_code == 422 and "no area inside the 1024x1024 image" in empty.json()["detail"]
        summary = client.get("/api/v1/feedback/summary").json()
    feedback = server.feedback
    assert sorted(p.name for p in (feedback / "images").iterdir()) == sorted(
        [f"{sha}.png", f"{hashlib.sha256(dicom).hexdigest()}.dcm", f"{hashlib.sha256(tiff).hexdigest()}.png"])
    assert (feedback / "images" / f"{sha}.png").read_bytes() == film  # the client's name never became a path
    assert xml_boxes(feedback / "xml" / f"{sha}.xml") == SECOND_XML
    lines = [json.loads(line) for line in (feedback / "reviews.jsonl").read_text().splitlines()]
    assert [(line["sha256"] == sha, line["reviewer"], line["replaces"]) for line in lines] == [
        (True, "Dr A", False), (True, "Dr B", True), (False, "Dr A", False), (False, "Dr A", False)]
    assert [box["verdict"] for box in lines[1]["boxes"]] == ["moved", "relabelled", "deleted", "drawn"]
    assert summary["images"] == 3
    assert summary["classes"]["Atelectasis"] == {"relabelled": 1} and summary["classes"]["Nodule"] == {
        "deleted": 1, "drawn": 2}
    out = tmp_path / "records"
    status = run_main(generate_tfrecords, [
        "--xml-dir", str(feedback / "xml"), "--image-dir", str(feedback / "images"), "--output-dir", str(out)])
    assert status == ExitStatus.SUCCESS
    records = read_records(sorted(out.glob("*.tfrecord")))
    assert set(records) == {p.name for p in (feedback / "images").iterdir()}
    film_record = records[f"{sha}.png"]
    names = {"Mass": 5, "Effusion": 3, "Pneumothorax": 8}
    assert film_record["classes"] == [names[name] for name, _ in SECOND_XML]
    expected = np.array([[y0, x0, y1, x1] for _, (x0, y0, x1, y1) in SECOND_XML]) / 1024
    np.testing.assert_allclose(film_record["boxes"], expected, atol=1e-6)


def test_acknowledged_reviews_survive_a_killed_server(tiny_export, tmp_path):
    """Reviews posted one after another while the server is killed: each acknowledged one is whole on disk."""
    acknowledged: list[str] = []
    stop = threading.Event()
    with ServiceServer(tiny_export, tmp_path / "server", "--no-explain") as server:
        def post_forever() -> None:
            with server.client(timeout=10) as client:
                for number in range(100_000):
                    if stop.is_set():
                        return
                    image = gradient(96, 64).copy()
                    image.flat[:4] = np.frombuffer(number.to_bytes(4, "big"), np.uint8)
                    data = cv2.imencode(".png", image)[1].tobytes()
                    try:
                        answer = post_review(client, data, FIRST | {"boxes": [FIRST["boxes"][1] | {
                            "box": [10, 10, 40, 40]}]})
                    except Exception:  # noqa: BLE001 - the server was killed under this request
                        return
                    if answer.status_code == 200:
                        acknowledged.append(answer.json()["sha256"])

        poster = threading.Thread(target=post_forever)
        poster.start()
        deadline = time.monotonic() + 60
        while len(acknowledged) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.stop(signal.SIGKILL)
        stop.set()
        poster.join()
    feedback = server.feedback
    assert len(acknowledged) >= 20
    for sha in acknowledged:
        image = feedback / "images" / f"{sha}.png"
        assert hashlib.sha256(image.read_bytes()).hexdigest() == sha
        assert xml_boxes(feedback / "xml" / f"{sha}.xml") == [("Nodule", [10, 10, 40, 40])]
    for xml in (feedback / "xml").glob("*.xml"):  # nothing under a final name is half written
        xml_boxes(xml)
    logged = []
    lines = (feedback / "reviews.jsonl").read_text().splitlines()
    for number, line in enumerate(lines, start=1):
        try:
            logged.append(json.loads(line)["sha256"])
        except ValueError:  # only the last line may be cut by the kill, and it was never acknowledged
            assert number == len(lines)
    assert set(acknowledged) <= set(logged)
