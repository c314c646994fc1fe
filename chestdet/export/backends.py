"""Run an export directory's model on images: the SavedModel or the TFLite file, behind one interface.

A backend has two halves. `prepare` turns one decoded RGB image into the model's input and runs in
the reader threads, so resizing overlaps inference; `infer` runs a batch of prepared inputs and is
called from one thread only. Both return boxes normalised to the original image, so callers never
see the model's input size.
"""

from __future__ import annotations

import functools
import json
import logging
import queue
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from chestdet.core import compat
from chestdet.core.contracts import EXPORT_RECORD, PIPELINE_FILE, SAVED_MODEL_DIR, TFLITE_FILE
from chestdet.core.detections import Detection
from chestdet.core.errors import BackendError
from chestdet.core.imaging import to_rgb
from chestdet.core.system import available_cpus

log = logging.getLogger("chestdet.detection.detect")

BACKENDS = ("auto", "savedmodel", "tflite")

# How each SSD feature extractor family scales pixels before the network (its `preprocess`);
# the TFLite graph starts after that step, so the caller must do it. (scale, offset): x*scale+offset.
_TFLITE_NORMALISATION = {
    "mobilenet": (2.0 / 255.0, -1.0),
    "efficientnet": (1.0, 0.0),
}


@dataclass(frozen=True)
class ModelOutput:
    """One image's detections as the model gives them, best first."""

    boxes: np.ndarray  # (N, 4) float32, normalised ymin, xmin, ymax, xmax
    classes: np.ndarray  # (N,) int32, label-map ids from 1
    scores: np.ndarray  # (N,) float32


class Backend(Protocol):
    name: str
    max_batch: int  # the largest batch `infer` accepts
    concurrency: int  # how many `infer` calls may run at once, from as many threads

    def prepare(self, pixels: np.ndarray) -> np.ndarray:
        """(H, W) gray or (H, W, 3) RGB uint8 -> the model input for one image; thread-safe."""

    def load(self) -> None:
        """Do the slow part of opening the model; called once, while readers already decode."""

    def infer(self, batch: Sequence[np.ndarray]) -> list[ModelOutput]:
        """Run prepared inputs of one shape; one result per input, in order. Thread-safe."""


def to_pixels(output: ModelOutput, width: int, height: int, min_score: float = 0.0) -> list[Detection]:
    """Scale normalised boxes to the original image and keep those scoring at least `min_score`."""
    keep = output.scores >= min_score
    boxes = output.boxes[keep].astype(np.float64) * np.array([height, width, height, width])
    # tolist: the same Python numbers as int()/float() of each element, converted in one call
    return [
        Detection(c, s, b[1], b[0], b[3], b[2])
        for c, s, b in zip(output.classes[keep].astype(np.int64).tolist(), output.scores[keep].tolist(),
                           boxes.tolist(), strict=True)
    ]


def choose_backend(requested: str, export_dir: Path, has_gpu: bool, keep_score: float | None = None) -> str:
    """`auto` picks TFLite on a machine without a GPU when the export has a TFLite file (whose NMS keeps
    boxes down to `keep_score`, when given)."""
    if requested not in BACKENDS:
        raise BackendError(f"unknown backend {requested!r}; expected one of {', '.join(BACKENDS)}")
    has_tflite = (export_dir / TFLITE_FILE).is_file()
    if requested == "auto" and has_tflite and not has_gpu and keep_score is not None:
        floor = tflite_min_score(export_dir)
        if keep_score < floor:
            log.info("the SavedModel, since the TFLite model drops boxes scoring under %g", floor)
            return "savedmodel"
    if requested == "auto":
        return "tflite" if has_tflite and not has_gpu else "savedmodel"
    if requested == "tflite" and not has_tflite:
        raise BackendError(f"{export_dir}: no {TFLITE_FILE} in this export; use --backend savedmodel")
    if requested == "savedmodel" and not (export_dir / SAVED_MODEL_DIR).is_dir():
        raise BackendError(f"{export_dir}: no {SAVED_MODEL_DIR}/ in this export")
    return requested


# Device nodes through which TensorFlow reaches a GPU on Linux: NVIDIA's driver, WSL2's, ROCm's.
_GPU_DEVICE_NODES = ("nvidia[0-9]*", "dxg", "kfd")


def gpu_available(dev: Path = Path("/dev")) -> bool:
    """Whether TensorFlow sees a GPU. On Linux without a GPU device node it cannot, and the answer comes
    without importing TensorFlow (3 s that the TFLite backend does not otherwise need)."""
    if sys.platform == "linux" and not any(any(dev.glob(node)) for node in _GPU_DEVICE_NODES):
        return False
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def open_backend(kind: str, export_dir: Path, batch_size: int = 1, interpreters: int | None = None) -> Backend:
    """`interpreters`: TFLite's, run side by side, one thread each (default: one per CPU)."""
    if kind == "savedmodel":
        return SavedModelBackend(export_dir / SAVED_MODEL_DIR, batch_size)
    if kind == "tflite":
        return TFLiteBackend(export_dir / TFLITE_FILE, tflite_normalisation(export_dir), interpreters)
    raise BackendError(f"unknown backend {kind!r}")


def _parallel_calls_on_cpu() -> int:
    """CPU count, with TF's intra-op threads set to 1, when there is no GPU; else 1."""
    import tensorflow as tf

    if available_cpus() == 1 or gpu_available():
        return 1
    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
    except RuntimeError:  # TF's runtime already started in this process: its threading stays
        return 1
    return available_cpus()


class SavedModelBackend:
    """The `serving_default` signature; it takes the original uint8 image and resizes inside the graph.

    Without a GPU it takes one call per CPU side by side, each op on one thread, for the reason the
    TFLite backend does: one call spread over every core waits at each op for the core that decoding
    or drawing holds (1,000 images: 52.7 s against 38.9 s). With a GPU, one call at a time.
    """

    name = "savedmodel"

    def __init__(self, path: Path, batch_size: int = 1, calls: int | None = None) -> None:
        """`calls`: 1 for one call at a time on TF's default threading; by default, as described above."""
        self.path = path
        self.max_batch = max(1, batch_size)
        self._signature = None
        self.concurrency = calls or _parallel_calls_on_cpu()

    def prepare(self, pixels: np.ndarray) -> np.ndarray:
        return to_rgb(pixels)

    def load(self) -> None:
        import tensorflow as tf

        started = time.perf_counter()
        try:
            model = tf.saved_model.load(str(self.path))
        except (OSError, ValueError) as error:
            raise BackendError(f"{self.path}: cannot load the SavedModel ({error})") from error
        if "serving_default" not in model.signatures:
            raise BackendError(f"{self.path}: the SavedModel has no serving_default signature")
        self._model = model  # the signature needs its owner alive
        self._signature = model.signatures["serving_default"]
        batch_dim = self._signature.structured_input_signature[1]["input_tensor"].shape[0]
        if batch_dim is not None:
            self.max_batch = min(self.max_batch, int(batch_dim))
        log.info("loaded the SavedModel in %.1f s; %d call(s) at once", time.perf_counter() - started, self.concurrency)

    def infer(self, batch: Sequence[np.ndarray]) -> list[ModelOutput]:
        import tensorflow as tf

        if self._signature is None:
            self.load()
        result = self._signature(input_tensor=tf.constant(np.stack(batch)))
        boxes = result["detection_boxes"].numpy()
        classes = result["detection_classes"].numpy()
        scores = result["detection_scores"].numpy()
        counts = result["num_detections"].numpy().astype(int)
        return [
            ModelOutput(boxes[i, : counts[i]], classes[i, : counts[i]].astype(np.int32), scores[i, : counts[i]])
            for i in range(len(batch))
        ]


class TFLiteBackend:
    """The OD API's TFLite SSD graph: fixed-size float input, TFLite_Detection_PostProcess outputs.

    It runs `interpreters` single-threaded interpreters side by side (default: one per CPU), one image
    each. One interpreter over several threads would be as fast alone, but its threads meet at a
    barrier after every layer, so a core taken by decoding or drawing stalls them all; in batch
    detection that left a third of the CPU idle.

    Its boxes are not clipped to the image as the SavedModel's are; clipping them here keeps the
    two backends' outputs alike.

    The interpreter is LiteRT's (ai-edge-litert), not TensorFlow's: it opens without importing
    TensorFlow, gives the float model's outputs bit for bit, and runs the INT8 model's integer kernels
    faster.
    """

    name = "tflite"
    max_batch = 1

    def __init__(
        self, path: Path, normalisation: tuple[float, float], interpreters: int | None = None, threads: int = 1
    ) -> None:
        self.path = path
        self.scale, self.offset = normalisation
        self.concurrency = interpreters or available_cpus()
        self.threads = threads
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        first = self._open_interpreter()
        self._idle.put(first)
        for _ in range(self.concurrency - 1):
            self._idle.put(self._open_interpreter())
        details = first.get_input_details()[0]
        self._input_index = details["index"]
        self._input_dtype = details["dtype"]
        self._quantization = tuple(details["quantization"])  # (scale, zero point) of an INT8 model's input
        _, self.height, self.width, _ = (int(v) for v in details["shape"])
        self._outputs = _tflite_output_indices(first)

    def _open_interpreter(self):  # noqa: ANN202 - a LiteRT Interpreter
        from ai_edge_litert.interpreter import Interpreter

        try:
            with compat.native_output_filtered():  # "Created TensorFlow Lite XNNPACK delegate for CPU."
                interpreter = Interpreter(model_path=str(self.path), num_threads=self.threads)
                interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            raise BackendError(f"{self.path}: cannot load the TFLite model ({error})") from error
        return interpreter

    def load(self) -> None:
        """Nothing left to do: an interpreter opens in 0.01 s."""

    def prepare(self, pixels: np.ndarray) -> np.ndarray:
        resized = legacy_bilinear_resize(pixels, self.height, self.width)  # gray first: a third of the work
        if self._input_dtype == np.float32:
            prepared = resized * np.float32(self.scale) + np.float32(self.offset)
        else:
            prepared = quantise(resized * np.float32(self.scale) + np.float32(self.offset), self._quantization,
                                self._input_dtype)
        return cv2.merge([prepared] * 3) if prepared.ndim == 2 else prepared

    def infer(self, batch: Sequence[np.ndarray]) -> list[ModelOutput]:
        interpreter = self._idle.get()
        try:
            return [self._infer_one(interpreter, prepared) for prepared in batch]
        finally:
            self._idle.put(interpreter)

    def _infer_one(self, interpreter, prepared: np.ndarray) -> ModelOutput:  # noqa: ANN001
        interpreter.set_tensor(self._input_index, prepared[np.newaxis])
        interpreter.invoke()
        get = interpreter.get_tensor
        count = int(get(self._outputs["count"]).reshape(-1)[0])
        return ModelOutput(
            np.clip(get(self._outputs["boxes"])[0, :count], 0.0, 1.0),
            get(self._outputs["classes"])[0, :count].astype(np.int32) + 1,
            get(self._outputs["scores"])[0, :count].copy(),
        )


def quantise(values: np.ndarray, quantization: tuple[float, int], dtype: type) -> np.ndarray:
    """Float model input -> an integer input of (scale, zero point) `quantization`, rounded as TFLite's
    Quantize op rounds (half away from zero), clipped to the type's range."""
    scale, zero_point = quantization
    scaled = values / np.float32(scale)
    limits = np.iinfo(dtype)
    return np.clip(np.trunc(scaled + np.copysign(np.float32(0.5), scaled)) + zero_point, limits.min,
                   limits.max).astype(dtype)


def _tflite_output_indices(interpreter) -> dict[str, int]:  # noqa: ANN001
    """Find boxes, classes, scores and count among TFLite_Detection_PostProcess's outputs.

    The OD API's TFLite module returns (count, scores, classes, boxes) and the converter names them
    StatefulPartitionedCall:0..3 in that order (the signature's output_0..3 likewise); the shapes
    check the order instead of trusting it blindly.
    """
    details = sorted(interpreter.get_output_details(), key=lambda d: _output_position(d["name"]))
    if len(details) != 4:
        raise BackendError(f"expected the 4 outputs of TFLite_Detection_PostProcess, found {len(details)}")
    named = dict(zip(("count", "scores", "classes", "boxes"), details, strict=True))
    if len(named["boxes"]["shape"]) != 3 or named["boxes"]["shape"][-1] != 4 or len(named["count"]["shape"]) != 1:
        shapes = [list(d["shape"]) for d in details]
        raise BackendError(f"unexpected TFLite output shapes {shapes}; not an OD API SSD export?")
    return {key: value["index"] for key, value in named.items()}


def _output_position(name: str) -> int:
    tail = name.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def tflite_min_score(export_dir: Path) -> float:
    """The lowest score the export's TFLite NMS keeps (export.json `tflite.min_score`; 0 when unstated)."""
    try:
        record = json.loads((export_dir / EXPORT_RECORD).read_text(encoding="utf-8"))
        return float(record["tflite"].get("min_score", 0.0))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return 0.0


def tflite_normalisation(export_dir: Path) -> tuple[float, float]:
    """(scale, offset) applied to 0..255 pixels before the TFLite graph.

    export.json states it (`tflite.input.scale` and `.offset`, measured by the export through the
    model's own preprocess); older exports fall back on the feature extractor in pipeline.config.
    """
    meta_path = export_dir / EXPORT_RECORD
    if meta_path.is_file():
        try:
            stated = json.loads(meta_path.read_text(encoding="utf-8"))["tflite"]["input"]
            return float(stated["scale"]), float(stated["offset"])
        except (ValueError, KeyError, TypeError):
            log.debug("%s states no TFLite input scaling", meta_path)
    extractor = _feature_extractor_type(export_dir / PIPELINE_FILE)
    for family, normalisation in _TFLITE_NORMALISATION.items():
        if family in extractor:
            return normalisation
    raise BackendError(
        f"{export_dir}: cannot tell how the TFLite model's {extractor!r} feature extractor scales its "
        "input; use --backend savedmodel"
    )


def _feature_extractor_type(config_path: Path) -> str:
    from google.protobuf import text_format
    from object_detection.protos import pipeline_pb2

    if not config_path.is_file():
        raise BackendError(f"{config_path}: missing; the TFLite backend needs the export's pipeline.config")
    config = pipeline_pb2.TrainEvalPipelineConfig()
    text_format.Merge(config_path.read_text(encoding="utf-8"), config)
    model_kind = config.model.WhichOneof("model")
    if model_kind != "ssd":
        raise BackendError(f"{config_path}: a {model_kind} model; the TFLite backend runs SSD models only")
    return config.model.ssd.feature_extractor.type


def legacy_bilinear_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """float32 bilinear resize exactly as `tf.compat.v1.image.resize_bilinear` (no half-pixel centres).

    The OD API's fixed_shape_resizer resizes that way inside the SavedModel; resizing the TFLite
    input the same way keeps the two backends' boxes together (cv2.resize shifts by half a pixel, and
    cv2.remap/warpAffine round the weights to 1/32, up to 0.7 gray levels off). The four neighbours
    of every output pixel are gathered by precomputed flat indices (cached per size), then blended
    in TF's order: horizontally, then vertically.
    """
    indices, col_weights, row_weights = _legacy_taps(image.shape[0], image.shape[1], height, width)
    channels = image.shape[2:]
    flat = np.ascontiguousarray(image).reshape((-1, *channels))
    top_left, top_right, bottom_left, bottom_right = flat.take(indices, axis=0).astype(np.float32)
    if channels:
        col_weights, row_weights = col_weights[..., np.newaxis], row_weights[..., np.newaxis]
    top = top_left + (top_right - top_left) * col_weights
    bottom = bottom_left + (bottom_right - bottom_left) * col_weights
    return top + (bottom - top) * row_weights


@functools.lru_cache(maxsize=16)
def _legacy_taps(rows_in: int, cols_in: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat indices (4, height, width) of each output pixel's neighbours, and the column and row weights."""
    top, bottom, row_weights = _legacy_axis(rows_in, height)
    left, right, col_weights = _legacy_axis(cols_in, width)
    indices = np.stack([row[:, np.newaxis] * cols_in + col for row in (top, bottom) for col in (left, right)])
    for array in (indices, col_weights, row_weights):
        array.flags.writeable = False
    return indices, col_weights[np.newaxis, :], row_weights[:, np.newaxis]


def _legacy_axis(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    position = np.arange(size_out, dtype=np.float32) * np.float32(size_in / size_out)
    low = np.floor(position).astype(np.intp)
    high = np.minimum(low + 1, size_in - 1)
    return low, high, (position - low).astype(np.float32)
