"""The API on a real uvicorn process: every route, every error status, the token, and micro-batching."""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from chestdet.core.imaging import read_image
from chestdet.core.labels import class_colour, load_label_map
from chestdet.data import labelstudio
from chestdet.detection.drawing import HEAT_OPACITY
from chestdet.detection.thresholds import OperatingPoint, OperatingPoints, write_operating_points
from chestdet.export.identity import model_version
from tests.conftest import SAMPLE_IMAGES
from tests.support.image_makers import write_bomb_png, write_dicom, write_truncated
from tests.support.range_server import Files, serving
from tests.support.service_server import ServiceServer

pytestmark = pytest.mark.slow

NAMES = sorted(path.name for path in SAMPLE_IMAGES.glob("*.png"))[:8]
FILM = SAMPLE_IMAGES / NAMES[0]
TOKEN = "s3cret-token"
ROUTES = {"/api/v1/detect", "/api/v1/explain", "/api/v1/model", "/api/v1/feedback", "/api/v1/feedback/summary",
          "/health", "/predict", "/setup", "/validate"}


@pytest.fixture(scope="module")
def points_file(tmp_path_factory) -> Path:
    """Operating points a validation run could have written (the random model's boxes all score 0.00995)."""
    points = OperatingPoints({"Pneumothorax": {"1fp": OperatingPoint(0.005, 0.6, 1.0, 0.3), "2fp": OperatingPoint(0.0)},
                              "Mass": {"1fp": OperatingPoint(0.2, 0.5, 0.9, 0.4)}}, split="val")
    return write_operating_points(tmp_path_factory.mktemp("points") / "operating_points.json", points)


@pytest.fixture(scope="module")
def server(tiny_export, tmp_path_factory, points_file):
    """Every box of the random model (scores about 0.01) listed; a long batch window, so concurrent requests meet."""
    with ServiceServer(tiny_export, tmp_path_factory.mktemp("main server"), "--floor-score", "0", "--min-score", "0",
                       "--max-boxes", "10", "--batch-wait-ms", "150", "--operating-points", str(points_file),
                       "--operating-point", "1fp") as running:
        yield running


def library_boxes(export: Path, image: Path) -> list[list]:
    """The boxes detect.py finds, through the same backend and steps, in this process."""
    from chestdet.export.backends import open_backend, to_pixels

    backend = open_backend("tflite", export, interpreters=1)
    pixels = read_image(image)
    output = backend.infer([backend.prepare(pixels)])[0]
    return [[d.class_id, d.score, d.xmin, d.ymin, d.xmax, d.ymax]
            for d in (d.as_printed() for d in to_pixels(output, pixels.shape[1], pixels.shape[0]))]


def as_rows(response: dict) -> list[list]:
    return [[d["class_id"], d["score"], *d["box"]] for d in response["detections"]]


def decode_data_url(url: str) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8), cv2.IMREAD_UNCHANGED)


def raw_request(url: str, head: str, body: bytes = b"") -> tuple[int, str]:
    """Send a hand-made HTTP/1.1 request; the status and the whole answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as connection:
        connection.sendall(head.encode() + body)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    text = answer.decode(errors="replace")
    return int(text.split(" ", 2)[1]), text


# ---------------------------------------------------------------- routes


def test_health_model_docs_and_page(server, tiny_export, points_file):
    with server.client() as client:
        health = client.get("/health").json()
        assert health["status"] == "UP" and health["model_version"] == model_version(tiny_export)
        assert health["explain"] == "ready"
        model = client.get("/api/v1/model").json()
        names = load_label_map(tiny_export / "label_map.pbtxt")
        assert [c["name"] for c in model["classes"]] == [names[i] for i in sorted(names)]
        by_name = {c["name"]: c for c in model["classes"]}
        for item in model["classes"]:
            assert item["colour"] == "#{:02x}{:02x}{:02x}".format(*class_colour(item["id"]))
        assert by_name["Pneumothorax"]["threshold"] == 0.005 and by_name["Mass"]["threshold"] == 0.2
        assert by_name["Nodule"]["threshold"] == 0.0  # --min-score for a class the file lacks
        assert by_name["Pneumothorax"]["operating_points"]["1fp"]["sensitivity"] == 0.6
        assert model["operating_points"]["default"] == "1fp" and model["operating_points"]["split"] == "val"
        assert model["model"]["backend"] == "tflite" and model["limits"]["max_body_bytes"] == 50 << 20
        assert ROUTES <= set(client.get("/openapi.json").json()["paths"])
        assert client.get("/docs").status_code == 200
        page = client.get("/", headers={"Origin": "http://elsewhere.example"})
        assert page.status_code == 200 and "not a diagnosis" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert "access-control-allow-origin" not in page.headers  # no CORS
        preflight = client.options("/api/v1/detect", headers={"Origin": "http://elsewhere.example",
                                                              "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in preflight.headers
        assert {"static/app.js", "static/app.css"} <= set(re.findall(r'(?:src|href)="(static/[^"]+)"', page.text))
        for asset in sorted(path.name for path in (resources.files("chestdet.service") / "static").iterdir()):
            served = client.get(f"/static/{asset}")  # every asset local: no URL elsewhere (but SVG's namespace)
            assert served.status_code == 200 and not re.search(r"https?://(?!www\.w3\.org)", served.text), asset


def test_detect_gives_detect_py_boxes_for_every_format(server, tiny_export, tmp_path):
    expected = library_boxes(tiny_export, FILM)
    assert expected, "the random model has boxes above 0"
    with server.client() as client:
        multipart = client.post("/api/v1/detect", files={"file": ("x.png", FILM.read_bytes())},
                                params={"preview": "true"}).json()
        raw = client.post("/api/v1/detect", content=FILM.read_bytes()).json()
        assert as_rows(multipart) == as_rows(raw) == expected
        assert multipart["image"] == {"sha256": raw["image"]["sha256"], "width": 1024, "height": 1024, "format": "PNG"}
        assert multipart["model"]["version"] == model_version(tiny_export)
        assert np.array_equal(decode_data_url(multipart["preview"]), read_image(FILM))
        gray = read_image(FILM)
        Image.fromarray(gray).save(tmp_path / "film.tif")
        cv2.imwrite(str(tmp_path / "film.jpg"), gray)
        write_dicom(tmp_path / "film.dcm", gray.astype(np.uint16) * 16, window=(2048, 4096))
        for name, fmt in (("film.tif", "TIFF"), ("film.jpg", "JPEG"), ("film.dcm", "DICOM")):
            answer = client.post("/api/v1/detect", files={"file": (name, (tmp_path / name).read_bytes())},
                                 params={"preview": "true"})
            assert answer.status_code == 200, answer.text
            result = answer.json()
            assert (result["image"]["format"], result["image"]["width"], result["image"]["height"]) == (fmt, 1024, 1024)
            assert as_rows(result) == library_boxes(tiny_export, tmp_path / name)
            assert np.array_equal(decode_data_url(result["preview"]), read_image(tmp_path / name))  # DICOM: windowed


def test_explain_gives_detect_explain_maps_and_files(server, tiny_export):
    from chestdet.detection.explain import Explainer

    with server.client() as client:
        boxes = client.post("/api/v1/detect", content=FILM.read_bytes()).json()["detections"][:2]
        files = {"file": ("x.png", FILM.read_bytes())}
        data = {"boxes": json.dumps(boxes)}
        maps = client.post("/api/v1/explain", files=files, data=data).json()
        npz = client.post("/api/v1/explain", files=files, data=data, params={"format": "npz"})
        png = client.post("/api/v1/explain", files=files, data=data, params={"format": "png"})
    assert [b["index"] for b in maps["boxes"]] == [0, 1] and all(b["heatmap"] for b in maps["boxes"])
    assert png.headers["content-type"] == "image/png" and png.content.startswith(b"\x89PNG")
    import io

    arrays = np.load(io.BytesIO(npz.content))
    for index, box in enumerate(maps["boxes"]):  # a coloured map, as opaque as it is hot (a random model's
        heat = decode_data_url(box["heatmap"])     # Grad-CAM may be cold everywhere)
        assert heat.shape[2] == 4
        assert heat[:, :, 3].max() == pytest.approx(round(arrays["heatmaps"][index].max() * 255 * HEAT_OPACITY), abs=1)
    from chestdet.core.detections import Detection

    detections = [Detection(b["class_id"], b["score"], *b["box"]) for b in boxes]
    local = Explainer.open(tiny_export).explain(read_image(FILM), detections)
    np.testing.assert_allclose(arrays["heatmaps"], local.heatmaps, atol=1e-5)
    assert arrays["anchor_indices"].tolist() == local.anchor_indices.tolist()


def test_bad_input_gets_its_status_and_one_reason(server, tmp_path):
    bomb = write_bomb_png(tmp_path / "bomb.png", 10_000, 10_000)
    frames = write_dicom(tmp_path / "frames.dcm", np.zeros((1024, 1024), np.uint16), frames=100)
    Image.fromarray(read_image(FILM)[:64, :64]).save(tmp_path / "x.gif")
    truncated = write_truncated(FILM, tmp_path / "cut.png")
    with server.client() as client:
        def detect(data: bytes) -> tuple[int, str]:
            answer = client.post("/api/v1/detect", content=data)
            return answer.status_code, answer.json()["detail"]

        assert detect(b"hello, not an image") == (415, "not an image (its content is none of PNG, JPEG, TIFF, DICOM)")
        assert detect((tmp_path / "x.gif").read_bytes()) == (415, "not an image (its content is none of PNG, JPEG, "
                                                             "TIFF, DICOM)")
        status, reason = detect(bomb.read_bytes())
        assert status == 422 and "10000x10000 = 100000000 pixels, over the limit of 80000000" in reason
        status, reason = detect(frames.read_bytes())
        assert status == 422 and "100 frames of 1024x1024" in reason and "over the limit" in reason
        assert detect(truncated.read_bytes())[0] == 422
        assert detect(b"") == (422, "empty file")
        no_file = client.post("/api/v1/detect", files={"other": ("x.png", b"x")})
        assert no_file.status_code == 422 and "'file'" in no_file.json()["detail"]
        raw_explain = client.post("/api/v1/explain", content=FILM.read_bytes())
        assert raw_explain.status_code == 415
        unknown = client.post("/api/v1/explain", files={"file": ("x.png", FILM.read_bytes())},
                              data={"boxes": json.dumps([{"class": "Fracture", "box": [1, 2, 30, 40]}])})
        assert unknown.status_code == 422 and "unknown class 'Fracture'" in unknown.json()["detail"]
        review = client.post("/api/v1/feedback", files={"file": ("x.png", FILM.read_bytes())},
                             data={"review": json.dumps({"boxes": []})})
        assert review.status_code == 422 and "reviewer" in review.json()["detail"]
    declared = f"POST /api/v1/detect HTTP/1.1\r\nHost: x\r\nContent-Length: {(50 << 20) + 1}\r\n\r\n"
    status, answer = raw_request(server.url, declared)
    assert status == 413 and "over the limit of 52428800 bytes" in answer
    chunk = b"\x00" * (1 << 20)  # no length declared: 50 MB in chunks, then the byte over the limit
    streamed = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(50)) + b"1\r\n\x00\r\n"
    status, answer = raw_request(server.url, "POST /api/v1/detect HTTP/1.1\r\nHost: x\r\n"
                                 "Transfer-Encoding: chunked\r\n\r\n", streamed)
    assert status == 413 and "over the limit" in answer


def sized_films(count: int) -> list[bytes]:
    """The film at `count` sizes: the random model's boxes are the same for any image, in normalised
    coordinates, so only the size tells whose boxes a response holds."""
    gray = read_image(FILM)
    sizes = [(512 + 64 * i, 1024 - 48 * i) for i in range(count)]
    return [cv2.imencode(".png", cv2.resize(gray, size, interpolation=cv2.INTER_AREA))[1].tobytes() for size in sizes]


def test_concurrent_requests_are_batched_and_give_the_one_by_one_boxes(server):
    images = sized_films(8)
    with server.client() as client:
        one_by_one = [client.post("/api/v1/detect", content=data).json() for data in images]
    start = threading.Barrier(len(images))

    def post(data: bytes) -> tuple[dict, int]:
        with server.client() as own:
            start.wait()
            answer = own.post("/api/v1/detect", content=data)
            return answer.json(), int(answer.headers["x-batch-size"])

    with ThreadPoolExecutor(len(images)) as pool:
        together = list(pool.map(post, images))
    assert max(size for _, size in together) > 1, "no two requests met in a batch"
    assert len({json.dumps(as_rows(alone)) for alone in one_by_one}) == len(images)  # each image its own boxes
    for alone, (batched, _) in zip(one_by_one, together, strict=True):
        a, b = np.array(as_rows(alone)), np.array(as_rows(batched))
        assert a.shape == b.shape and a.size
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_the_token_guards_the_api_and_label_studio_routes_not_health_or_page(tiny_export, tmp_path):
    with ServiceServer(tiny_export, tmp_path, "--token", TOKEN, "--no-explain") as guarded, guarded.client() as client:
        assert client.get("/health").status_code == 200
        assert client.get("/").status_code == 200 and client.get("/static/app.js").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
            refused = client.get("/api/v1/model", headers=headers)
            assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert client.post("/api/v1/detect", content=FILM.read_bytes()).status_code == 401
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert client.get("/api/v1/model", headers=bearer).status_code == 200
        assert client.post("/api/v1/detect", content=FILM.read_bytes(), headers=bearer).status_code == 200
        setup = {"project": "1.1700000000", "hostname": "http://127.0.0.1:1", "access_token": "t"}
        assert client.post("/setup", json=setup).status_code == 401
        assert client.post("/setup", json=setup, auth=("label-studio", "wrong")).status_code == 401
        assert client.post("/setup", json=setup, auth=("label-studio", TOKEN)).status_code == 200
        assert client.post("/setup", json=setup, headers=bearer).status_code == 200


# ---------------------------------------------------------------- Label Studio's ML backend protocol


def test_label_studio_routes_answer_with_the_tasks_regions(server, tiny_export, points_file):
    from chestdet.detection.thresholds import read_operating_points

    config = ('<View><Image name="xray" value="$film"/><RectangleLabels name="findings" toName="xray">'
              + "".join(f'<Label value="{name}"/>' for name in ("Atelectasis", "Mass", "Pneumothorax", "Nodule"))
              + "</RectangleLabels></View>")
    files = Files({"/data/upload/3/8f3a2b1c-film.png": FILM.read_bytes()})
    with serving(files) as label_studio, server.client() as client:
        setup = client.post("/setup", json={"project": "3.1700000000", "schema": config, "hostname": label_studio,
                                            "access_token": "ls-token"})
        assert setup.json() == {"model_version": model_version(tiny_export)}
        assert client.post("/validate", json={"config": config}).status_code == 200
        no_boxes = client.post("/validate", json={"config": '<View><Image name="i" value="$image"/></View>'})
        assert no_boxes.status_code == 422 and "RectangleLabels" in no_boxes.json()["detail"]
        other = config.replace("Atelectasis", "Cat").replace("Mass", "Dog").replace("Pneumothorax", "Owl")
        assert client.post("/validate", json={"config": other.replace("Nodule", "Fox")}).status_code == 422
        tasks = [{"id": 1, "data": {"film": "/data/upload/3/8f3a2b1c-film.png"}},
                 {"id": 2, "data": {"film": "http://elsewhere.example/film.png"}}]
        predicted = client.post("/predict", json={"tasks": tasks, "project": "3.1700000000", "label_config": config,
                                                  "params": {"context": None}}).json()
        detected = client.post("/api/v1/detect", content=FILM.read_bytes()).json()
    assert files.requests == [("/data/upload/3/8f3a2b1c-film.png", None)]
    assert files.authorizations == ["Token ls-token"]
    names = load_label_map(tiny_export / "label_map.pbtxt")
    thresholds = read_operating_points(points_file).thresholds("1fp", names, 0.0)
    from chestdet.core.detections import Detection

    everything = [Detection(d["class_id"], d["score"], *d["box"]) for d in detected["detections"]]
    shown = [d for d in thresholds.shown(everything, 10) if names[d.class_id] in ("Atelectasis", "Mass",
                                                                                   "Pneumothorax", "Nodule")]
    first, second = predicted["results"]
    assert first["result"] == [{**labelstudio.region(d, 1024, 1024, names, n), "from_name": "findings",
                                "to_name": "xray"} for n, d in enumerate(shown, start=1)]
    assert first["model_version"] == model_version(tiny_export)
    assert second["result"] == []  # not on Label Studio's host: not fetched
