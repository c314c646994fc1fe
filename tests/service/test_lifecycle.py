"""The server under load and at its end: a full queue answers 503, a stop finishes the requests in flight,
and the SavedModel backend's real batches give the boxes of one-by-one calls."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from tests.conftest import SAMPLE_IMAGES
from tests.support.service_server import ServiceServer

pytestmark = pytest.mark.slow

FILMS = [path.read_bytes() for path in sorted(SAMPLE_IMAGES.glob("*.png"))[:16]]


def rows(answer: dict) -> list[list]:
    return [[d["class_id"], d["score"], *d["box"]] for d in answer["detections"]]


def test_a_full_queue_answers_503_with_retry_after_and_recovers(tiny_export, tmp_path):
    start = threading.Barrier(len(FILMS))
    with ServiceServer(tiny_export, tmp_path, "--no-explain", "--max-queue", "1") as server:
        def post(data: bytes) -> httpx.Response:
            with server.client() as client:
                start.wait()
                return client.post("/api/v1/detect", content=data)

        with ThreadPoolExecutor(len(FILMS)) as pool:
            answers = list(pool.map(post, FILMS))
        statuses = [answer.status_code for answer in answers]
        assert set(statuses) == {200, 503} and statuses.count(200) >= 1
        for answer in answers:
            if answer.status_code == 503:
                assert answer.headers["retry-after"] == "1"
                assert answer.json()["detail"].startswith("busy: ") and "retry later" in answer.json()["detail"]
        with server.client() as client:
            assert client.post("/api/v1/detect", content=FILMS[0]).status_code == 200


def test_a_stop_finishes_the_request_in_flight_then_exits(tiny_export, tmp_path):
    """SIGTERM while a request's body is half sent: the request is still answered, then the server shuts down
    cleanly and ends by the signal it was sent (uvicorn raises it again, as a service manager expects)."""
    with ServiceServer(tiny_export, tmp_path, "--no-explain") as server:
        with server.client() as client:
            expected = client.post("/api/v1/detect", content=FILMS[0]).json()
        head = (f"POST /api/v1/detect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Length: {len(FILMS[0])}\r\n\r\n").encode()
        half = len(FILMS[0]) // 2
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as connection:
            connection.sendall(head + FILMS[0][:half])
            time.sleep(0.5)  # the server has the request's head: it is in flight
            server.process.send_signal(signal.SIGTERM)
            time.sleep(1.0)
            assert server.process.poll() is None, "the server left before answering the request in flight"
            connection.sendall(FILMS[0][half:])
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
        head_text, _, body = answer.partition(b"\r\n\r\n")
        assert head_text.startswith(b"HTTP/1.1 200")
        assert rows(json.loads(body)) == rows(expected)
        assert server.process.wait(60) == -signal.SIGTERM
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.url}/health", timeout=5)
    log = server.log_text()
    assert "Application shutdown complete" in log and "Finished server process" in log


def test_savedmodel_batches_give_the_one_by_one_boxes(tiny_export, tmp_path):
    """Same-size films meet in one SavedModel call (the TFLite backend runs one image per call)."""
    films = FILMS[:8]
    with ServiceServer(tiny_export, tmp_path, "--no-explain", "--backend", "savedmodel", "--floor-score", "0",
                       "--batch-wait-ms", "300") as server:
        with server.client() as client:
            alone = [client.post("/api/v1/detect", content=data).json() for data in films]
        assert alone[0]["model"]["backend"] == "savedmodel"
        start = threading.Barrier(len(films))

        def post(data: bytes) -> tuple[dict, int]:
            with server.client() as own:
                start.wait()
                answer = own.post("/api/v1/detect", content=data)
                return answer.json(), int(answer.headers["x-batch-size"])

        with ThreadPoolExecutor(len(films)) as pool:
            together = list(pool.map(post, films))
    assert max(size for _, size in together) > 1
    for one, (batched, _) in zip(alone, together, strict=True):
        assert one["image"] == batched["image"]
        np.testing.assert_allclose(np.array(rows(one)), np.array(rows(batched)), atol=1e-5)
