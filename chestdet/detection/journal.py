"""Append-only record of the images a detection run has finished, so a killed run resumes."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

from chestdet.core.detections import ImageResult

log = logging.getLogger("chestdet.detection.detect")


class Journal:
    """One `ImageResult` a line, written only after the image's files exist.

    A kill can cut the last line short; reading drops it and truncates the file back to whole lines.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._handle = None

    def read(self) -> dict[str, ImageResult]:
        """Every finished image's result, held in memory."""
        with self.finished() as finished:
            return dict(finished.items())

    def finished(self) -> FinishedImages:
        """The finished images, each result read from the file only when asked for."""
        spans: dict[str, tuple[int, int]] = {}
        if not self.path.is_file():
            return FinishedImages(self.path, spans)
        good_bytes = 0
        with open(self.path, "rb") as handle:
            for raw in handle:
                if not raw.endswith(b"\n"):
                    break
                try:
                    image = ImageResult.from_json(raw.decode("utf-8")).image
                except (ValueError, KeyError, IndexError, TypeError):
                    break
                spans[image] = (good_bytes, len(raw))
                good_bytes += len(raw)
        if good_bytes != self.path.stat().st_size:
            log.warning("%s: dropped an incomplete last entry left by an interrupted run", self.path)
            with open(self.path, "r+b") as handle:
                handle.truncate(good_bytes)
        return FinishedImages(self.path, spans)

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


class FinishedImages(Mapping[str, ImageResult]):
    """The images a journal holds, by name; a result is read from its line when looked up, so that
    resuming a large run holds only the names and positions in memory."""

    def __init__(self, path: Path, spans: dict[str, tuple[int, int]]) -> None:
        self._path, self._spans = path, spans
        self._handle: BinaryIO | None = None

    def __getitem__(self, image: str) -> ImageResult:
        start, length = self._spans[image]
        if self._handle is None:
            self._handle = open(self._path, "rb")
        self._handle.seek(start)
        return ImageResult.from_json(self._handle.read(length).decode("utf-8"))

    def __contains__(self, image: object) -> bool:
        return image in self._spans

    def __iter__(self) -> Iterator[str]:
        return iter(self._spans)

    def __len__(self) -> int:
        return len(self._spans)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> FinishedImages:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
