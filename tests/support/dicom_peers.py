"""The node's peers in unit tests, real and in-process: a pynetdicom Storage SCP standing for the PACS
(it can refuse), a DICOM sender standing for a modality, an MLLP listener standing for the RIS, and a
backend whose boxes follow from the pixels."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import hl7
import numpy as np
import pydicom
from hl7.mllp import start_hl7_server
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from chestdet.core.imaging import to_rgb
from chestdet.export.backends import ModelOutput
from tests.support.processes import free_port


class BoxesFromPixels:
    """A backend with three boxes per image whose places and scores follow from the pixels: a
    Cardiomegaly one scoring 0.5-1.0, a Nodule one at 0.2, a Mass one at 0.005."""

    name, max_batch, concurrency = "boxes from pixels", 1, 1

    def __init__(self) -> None:
        self.loaded = 0

    def prepare(self, pixels: np.ndarray) -> np.ndarray:
        return to_rgb(pixels)

    def load(self) -> None:
        self.loaded += 1

    def infer(self, batch: Sequence[np.ndarray]) -> list[ModelOutput]:
        outputs = []
        for image in batch:
            mean = float(image.mean()) / 255.0
            boxes = np.array([[0.2, 0.1 + mean / 10, 0.7, 0.6], [0.05, 0.05, 0.25, 0.3], [0.5, 0.5, 0.9, 0.9]],
                             np.float32)
            outputs.append(ModelOutput(boxes, np.array([2, 6, 5], np.int32),
                                       np.array([0.5 + mean / 2, 0.2, 0.005], np.float32)))
        return outputs


class Pacs:
    """A Storage SCP that keeps what it is sent; `refuse` statuses are answered first, one per C-STORE."""

    def __init__(self, ae_title: str = "PACS", port: int | None = None) -> None:
        self.ae_title, self.port = ae_title, port or free_port()
        self.stored: dict[str, pydicom.Dataset] = {}
        self.refuse: list[int] = []
        self.attempts = 0
        self.open_associations = self.most_associations = 0
        self._lock = threading.Lock()
        self.server = None

    def start(self) -> Pacs:
        ae = AE(ae_title=self.ae_title)
        ae.require_called_aet = True
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax)
        ae.add_supported_context(Verification)
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._store), (evt.EVT_ACCEPTED, self._opened),
                                                    (evt.EVT_RELEASED, self._closed), (evt.EVT_ABORTED, self._closed)])
        return self

    def _opened(self, _event: evt.Event) -> None:
        with self._lock:
            self.open_associations += 1
            self.most_associations = max(self.most_associations, self.open_associations)

    def _closed(self, _event: evt.Event) -> None:
        with self._lock:
            self.open_associations -= 1

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    def _store(self, event: evt.Event) -> int:
        with self._lock:
            self.attempts += 1
            if self.refuse:
                return self.refuse.pop(0)
            dataset = event.dataset
            dataset.file_meta = event.file_meta
            self.stored[str(dataset.SOPInstanceUID)] = dataset
        return 0x0000

    def of_modality(self, modality: str) -> list[pydicom.Dataset]:
        with self._lock:
            return [d for d in self.stored.values() if d.Modality == modality]


def send_films(port: int, films: Sequence[pydicom.Dataset | Path], called_ae: str = "CHESTDET",
               calling_ae: str = "MODALITY") -> list[int]:
    """C-STORE each film over one association, as a modality would; the statuses in order."""
    ae = AE(ae_title=calling_ae)
    datasets = [pydicom.dcmread(f) if isinstance(f, Path) else f for f in films]
    for sop_class, syntax in {(str(d.SOPClassUID), str(d.file_meta.TransferSyntaxUID)) for d in datasets}:
        ae.add_requested_context(sop_class, [syntax])
    association = ae.associate("127.0.0.1", port, ae_title=called_ae)
    assert association.is_established, f"no association with {called_ae} on port {port}"
    try:
        return [int(association.send_c_store(d).Status) for d in datasets]
    finally:
        association.release()


class MllpListener:
    """An HL7 receiver over MLLP in its own thread. `answers` says what to do with each message in turn
    ("AA", "AE", "AR" as the MSA code, "silent": read it and never answer); then it acknowledges."""

    def __init__(self, answers: Sequence[str] = ()) -> None:
        self.answers = list(answers)
        self.port = free_port()
        self.messages: list[hl7.Message] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="mllp-listener")
        self._server = None

    def start(self) -> MllpListener:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            start_hl7_server(self._client, "127.0.0.1", self.port), self._loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _shutdown(self) -> None:
        self._server.close()
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _client(self, reader, writer) -> None:  # noqa: ANN001
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while not writer.is_closing():
                message = await reader.readmessage()
                self.messages.append(message)
                answer = self.answers.pop(0) if self.answers else "AA"
                if answer == "silent":
                    await asyncio.sleep(3600)
                writer.writemessage(message.create_ack(ack_code=answer))
                await writer.drain()


@contextlib.contextmanager
def running(*peers: Pacs | MllpListener) -> Iterator[None]:
    for peer in peers:
        peer.start()
    try:
        yield
    finally:
        for peer in peers:
            peer.stop()
