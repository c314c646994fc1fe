"""Append-only record of the images a detection run has finished, so a killed run resumes."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from chestdet.detections import ImageResult

log = logging.getLogger("chestdet.detect")


class Journal:
    """One `ImageResult` a line, written only after the image's files exist.

    A kill can cut the last line short; reading drops it and truncates the file back to whole lines.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._handle = None

    def read(self) -> dict[str, ImageResult]:
        if not self.path.is_file():
            return {}
        results: dict[str, ImageResult] = {}
        good_bytes = 0
        with open(self.path, "rb") as handle:
            for raw in handle:
                if not raw.endswith(b"\n"):
                    break
                try:
                    result = ImageResult.from_json(raw.decode("utf-8"))
                except (ValueError, KeyError, IndexError, TypeError):
                    break
                results[result.image] = result
                good_bytes += len(raw)
        if good_bytes != self.path.stat().st_size:
            log.warning("%s: dropped an incomplete last entry left by an interrupted run", self.path)
            with open(self.path, "r+b") as handle:
                handle.truncate(good_bytes)
        return results

    def append(self, result: ImageResult) -> None:
        with self._lock:
            if self._handle is None:
                self._handle = open(self.path, "a", encoding="utf-8")
            self._handle.write(result.to_json() + "\n")
            self._handle.flush()

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None
