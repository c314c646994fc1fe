"""The model the server holds: the export's backend opened once, its classes, thresholds and explainer.

Everything here blocks (TensorFlow, TFLite, decoding); the app calls it from worker threads only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from chestdet.core.contracts import TFLITE_FILE
from chestdet.core.detections import Detection
from chestdet.core.errors import ChestdetError
from chestdet.core.labels import class_colour
from chestdet.detection.thresholds import OperatingPoints, Thresholds, choose_thresholds, read_operating_points
from chestdet.export.backends import Backend, ModelOutput, choose_backend, gpu_available, open_backend, to_pixels
from chestdet.export.identity import model_labels, model_version, read_export_record
from chestdet.service.settings import Settings

log = logging.getLogger("chestdet.service")


@dataclass(frozen=True)
class ModelInfo:
    """What a response says about the model: the export's name, its checkpoint's step, the backend."""

    name: str
    step: int | None
    version: str  # as Label Studio's model_version: "nih step 12000"
    backend: str

    def as_dict(self) -> dict:
        return {"name": self.name, "step": self.step, "version": self.version, "backend": self.backend}


@dataclass
class Detector:
    """An opened export: `prepare` and `infer` as the backend's, boxes in pixels down to the floor score."""

    backend: Backend
    class_names: dict[int, str]
    thresholds: Thresholds  # what is shown by default, and sent to Label Studio
    info: ModelInfo
    floor_score: float
    max_boxes: int
    points: OperatingPoints | None = None
    explainer: Explanations | None = field(default=None)

    @classmethod
    def open(cls, settings: Settings) -> Detector:
        started = time.perf_counter()
        class_names = model_labels(settings.model).ids
        chosen = settings.operating_points if settings.operating_point else None  # else only the page's presets
        thresholds = choose_thresholds(settings.min_score, class_names, None, chosen, settings.operating_point)
        points = read_operating_points(settings.operating_points) if settings.operating_points else None
        has_tflite = (settings.model / TFLITE_FILE).is_file()
        kind = choose_backend(settings.backend, settings.model, has_tflite and gpu_available(), settings.floor_score)
        explainer = Explanations(settings.model, kind) if settings.explain else None
        backend = open_backend(kind, settings.model, settings.max_batch, settings.interpreters)
        backend.load()
        record = read_export_record(settings.model)
        info = ModelInfo(settings.model.resolve().name, record.get("step"), model_version(settings.model), kind)
        log.info("model %s loaded in %.1f s (%s backend)", info.version, time.perf_counter() - started, kind)
        return cls(backend, class_names, thresholds, info, settings.floor_score, settings.max_boxes, points, explainer)

    @property
    def concurrency(self) -> int:
        return self.backend.concurrency

    def prepare(self, pixels: np.ndarray) -> np.ndarray:
        return self.backend.prepare(pixels)

    def infer(self, prepared: Sequence[np.ndarray]) -> list[ModelOutput]:
        """One micro-batch: same-shape inputs together, at most the backend's batch per call, in order."""
        results: list[ModelOutput | None] = [None] * len(prepared)
        groups: dict[tuple, list[int]] = {}
        for index, item in enumerate(prepared):
            groups.setdefault(item.shape, []).append(index)
        for indices in groups.values():
            for start in range(0, len(indices), self.backend.max_batch):
                chunk = indices[start:start + self.backend.max_batch]
                for index, output in zip(chunk, self.backend.infer([prepared[i] for i in chunk]), strict=True):
                    results[index] = output
        return results

    def detections(self, output: ModelOutput, width: int, height: int) -> list[Detection]:
        """Every box down to the floor score, best first, as detections.csv prints them."""
        return [d.as_printed() for d in to_pixels(output, width, height, self.floor_score)]

    def shown(self, detections: Sequence[Detection]) -> list[Detection]:
        return self.thresholds.shown(detections, self.max_boxes)

    def classes(self) -> list[dict]:
        """Each class with its colour (as drawn/ and the labeling config have it) and its operating points."""
        points = self.points.classes if self.points is not None else {}
        return [{"id": class_id, "name": name, "colour": "#{:02x}{:02x}{:02x}".format(*class_colour(class_id)),
                 "threshold": self.thresholds.for_class(class_id),
                 "operating_points": {point: _point_dict(value) for point, value in points.get(name, {}).items()}}
                for class_id, name in sorted(self.class_names.items())]


def _point_dict(point) -> dict:  # noqa: ANN001 - an OperatingPoint
    return {"threshold": point.threshold, "sensitivity": point.sensitivity, "fp_per_image": point.fp_per_image,
            "precision": point.precision, "interval": dict(point.interval) if point.interval else None}


class Explanations:
    """The Grad-CAM explainer of `chestdet.detection.explain`, built in a thread while the detector loads;
    `status` says whether it is loading, ready or unavailable (and why)."""

    def __init__(self, export_dir: Path, backend: str) -> None:
        from chestdet.detection.explain import one_thread_per_pass

        if backend == "tflite":
            one_thread_per_pass()  # TensorFlow runs only the explainer: its passes side by side, as detect does
        self._explainer = None
        self._error: str | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._open, args=(export_dir,), name="explainer", daemon=True).start()

    def _open(self, export_dir: Path) -> None:
        from chestdet.detection.explain import Explainer

        try:
            started = time.perf_counter()
            explainer = Explainer.open(export_dir)
            explainer.warm_up()
            self._explainer = explainer
            log.info("explanations ready in %.1f s", time.perf_counter() - started)
        except ChestdetError as error:
            self._error = str(error)
            log.warning("explanations unavailable: %s", error)
        except Exception as error:  # noqa: BLE001 - the server goes on without explanations, saying why
            self._error = f"{type(error).__name__}: {error}"
            log.warning("explanations unavailable: %s", self._error)
        finally:
            self._ready.set()

    @property
    def status(self) -> str:
        if not self._ready.is_set():
            return "loading"
        return "ready" if self._explainer is not None else "unavailable"

    @property
    def error(self) -> str | None:
        return self._error

    def get(self, timeout: float | None = None):  # noqa: ANN201 - a chestdet.detection.explain.Explainer or None
        """The explainer once built (waiting up to `timeout` s), or None: `error` then says why if it failed."""
        self._ready.wait(timeout)
        return self._explainer
