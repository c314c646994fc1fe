"""Building films' SR and GSPS outside the node's process.

highdicom builds a film's two objects in pure Python, about 50 ms a film, all of it holding the GIL
that the SCP, the decoders and the senders also need. In `processes` worker processes (started with
spawn: the node's process runs TensorFlow Lite threads, which a fork would copy in an unknown state)
that time runs on another core. Each process reads the film's header from the spool itself, so no
pixel data crosses between processes. With 0 processes the objects are built in the caller's thread.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import signal
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pydicom

from chestdet.clinical.results import ModelInfo, film_results
from chestdet.core.detections import Detection


@dataclass(frozen=True)
class EncodedResults:
    sr: bytes
    gsps: bytes
    sr_uid: str
    gsps_uid: str


def encoded_results(film: Path, shown: Sequence[Detection], class_names: Mapping[int, str], model: ModelInfo,
                    threshold: float) -> EncodedResults:
    """The film's SR and GSPS as DICOM files' bytes; the film's header is read from `film`."""
    source = pydicom.dcmread(film, stop_before_pixels=True)
    sr, gsps = film_results(source, shown, class_names, model, threshold)
    return EncodedResults(dicom_bytes(sr), dicom_bytes(gsps), str(sr.SOPInstanceUID), str(gsps.SOPInstanceUID))


def dicom_bytes(dataset: pydicom.Dataset) -> bytes:
    """The dataset as a DICOM file's bytes (preamble and file meta)."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


class ResultBuilder:
    def __init__(self, processes: int = 1) -> None:
        self._pool = None
        if processes > 0:
            self._pool = ProcessPoolExecutor(processes, multiprocessing.get_context("spawn"),
                                             initializer=_exit_with_parent)
            self._pool.submit(_ready).result()  # start-up (imports) before the first film, not during it

    def build(self, film: Path, shown: Sequence[Detection], class_names: Mapping[int, str], model: ModelInfo,
              threshold: float) -> EncodedResults:
        """As `encoded_results`, in a worker process when there are any; raises what it raises."""
        if self._pool is None:
            return encoded_results(film, shown, class_names, model, threshold)
        return self._pool.submit(encoded_results, film, list(shown), dict(class_names), model, threshold).result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()


def _ready() -> int:
    return os.getpid()


def _exit_with_parent() -> None:
    """A worker process ends when the node's process does, even after a kill -9 (which closes nothing).
    Ctrl-C reaches the whole process group: the node's process stops its workers in order itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=lambda: (parent.join(), os._exit(0)), daemon=True).start()
