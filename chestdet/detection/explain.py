"""Grad-CAM heatmaps for the boxes a detection run found (`detect --explain`): explain/*.png and *.npz.

The maps come from the export's checkpoint, built with the OD API's model builder from the export's
pipeline.config, whichever backend found the boxes; the maths is in `chestdet.detection.gradcam`, the
picture in `chestdet.detection.drawing`. `Explainer` serialises the passes (one at a time, so that
detection's own threads keep the cores) and `BackgroundExplainer` builds it while the backend loads.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from chestdet.core import atomic
from chestdet.core.contracts import EXPLAIN_ARRAYS, EXPLAIN_DIR, LABEL_MAP_FILE
from chestdet.core.detections import Detection
from chestdet.detection.drawing import heatmap_size, render_explanation
from chestdet.detection.gradcam import (
    MATCH_MIN_IOU,
    ExplainError,
    GradCam,
    build_model,
    checkpoint_prefix,
    finish_heatmap,
    input_size,
    load_configs,
    normalised_boxes,
)
from chestdet.export.backends import legacy_bilinear_resize

log = logging.getLogger(__name__)

MAX_TARGETS = 16  # boxes explained per pass: their copies of the feature maps are held together
# Heatmaps in the .npz keep the image's aspect ratio, their longest side at most HEATMAP_MAX_SIDE and
# at most PIXELS_PER_CELL times the finest pyramid level's: a map has no detail finer than that level's
# cells, so more pixels would only store the bilinear upsampling (128 for a 256x256 model, 4x smaller).
HEATMAP_MAX_SIDE = 256
PIXELS_PER_CELL = 4


@dataclass(frozen=True)
class Explanation:
    """Heatmaps of one image's detections, in the order of `detections`."""

    detections: tuple[Detection, ...]
    heatmaps: np.ndarray  # float32 [N, h, w] in [0, 1], the image's aspect ratio
    anchor_indices: np.ndarray  # int32 [N], the anchor whose class logit was explained
    levels: np.ndarray  # int32 [N], its pyramid level (0 = the finest the predictor reads)
    match_iou: np.ndarray  # float32 [N], IoU with the model's detection; 0 where the fallback anchor served
    image_size: tuple[int, int]  # height, width of the original
    unexplained: tuple[Detection, ...] = field(default=())  # boxes no anchor of the model fits

    def arrays(self) -> dict[str, np.ndarray]:
        """The .npz arrays: heatmaps, boxes (xmin, ymin, xmax, ymax pixels), scores, classes, image_size,
        and how each box was explained (anchor_indices, levels, match_iou)."""
        boxes = [(d.xmin, d.ymin, d.xmax, d.ymax) for d in self.detections]
        values = (
            self.heatmaps.astype(np.float32),
            np.array(boxes, dtype=np.float32).reshape(-1, 4),
            np.array([d.score for d in self.detections], dtype=np.float32),
            np.array([d.class_id for d in self.detections], dtype=np.int32),
            np.array(self.image_size, dtype=np.int32),
            self.anchor_indices.astype(np.int32),
            self.levels.astype(np.int32),
            self.match_iou.astype(np.float32),
        )
        return dict(zip(EXPLAIN_ARRAYS, values, strict=True))


def explain_paths(output_dir: Path, stem: str) -> tuple[Path, Path]:
    """explain/<stem>.png and explain/<stem>.npz under `output_dir`."""
    base = Path(output_dir) / EXPLAIN_DIR / stem
    return base.with_name(f"{base.name}.png"), base.with_name(f"{base.name}.npz")


def image_stem(name: str) -> str:
    """An image's relative name without its suffix (`sub/x.png` -> `sub/x`), never absolute."""
    return PurePosixPath(name).with_suffix("").as_posix().lstrip("/")


# ---------------------------------------------------------------- explaining an image


def one_thread_per_pass() -> bool:
    """Make TensorFlow run each op on one thread, so that the explainer's passes run side by side, one
    per calling thread, as the TFLite backend's interpreters do; for a run where TensorFlow does
    nothing else. Small passes keep one core busier than two (BENCHMARKS.md). Call it before
    TensorFlow runs anything: False, and nothing changed, if it already has."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
    except RuntimeError:
        return False
    return True


def _pass_guard() -> contextlib.AbstractContextManager:
    """A lock for passes TensorFlow spreads over every core (one at a time: each has them all); none
    for single-threaded ones. Drawing and compressing an image's files never hold it."""
    import tensorflow as tf

    return contextlib.nullcontext() if tf.config.threading.get_intra_op_parallelism_threads() == 1 else threading.Lock()


class Explainer:
    """Grad-CAM maps of an export's detections: `Explainer.open(export_dir)`, then `write` per image."""

    def __init__(self, model, configs: dict, class_names: Mapping[int, str], blank: dict) -> None:  # noqa: ANN001
        """`model` and `blank`: an OD API SSD built by `build_model` from `configs`, and its blank pass."""
        self.grad_cam = GradCam(model, configs, blank)
        self.class_names = dict(class_names)
        self.size = input_size(configs)
        self.heatmap_max_side = min(HEATMAP_MAX_SIDE, PIXELS_PER_CELL * self.grad_cam.finest_side)
        self._pass = _pass_guard()

    @classmethod
    def open(cls, export_dir: str | Path, restore: bool = True) -> Explainer:
        """Build the export's model from pipeline.config and restore checkpoint/ into it.

        `restore=False` keeps the builder's initial weights (the model-randomisation check).
        """
        from chestdet.core.labels import load_label_map

        export_dir = Path(export_dir)
        configs = load_configs(export_dir)
        prefix = checkpoint_prefix(export_dir) if restore else None
        label_map = export_dir / LABEL_MAP_FILE
        if not label_map.is_file():
            raise ExplainError(f"{label_map}: label map not found")
        model, blank = build_model(configs, prefix)
        return cls(model, configs, load_label_map(label_map), blank)

    def warm_up(self) -> None:
        """Trace the maps' function with one box on a blank image (a first call otherwise spends seconds
        tracing); a caller can run it in a thread while the detection backend loads."""
        self.grad_cam.maps(np.zeros((1, *self.size, 3), np.float32), np.zeros((1, 4), np.float32),
                           np.ones(1, np.int32), np.zeros(1, np.int32))

    def model_input(self, pixels: np.ndarray) -> np.ndarray:
        """[1, h, w, 3] float32 of 0..255: resized as the SavedModel graph resizes (gray first)."""
        resized = legacy_bilinear_resize(pixels, *self.size)
        if resized.ndim == 2:
            resized = np.repeat(resized[:, :, np.newaxis], 3, axis=2)
        return resized[np.newaxis].astype(np.float32)

    def explain(self, pixels: np.ndarray, detections: Sequence[Detection], name: str = "") -> Explanation:
        """Heatmaps of `detections` (pixels of this image, from any backend) on (H, W) gray or RGB uint8;
        `name` names the image in the warning about a box no anchor fits."""
        height, width = pixels.shape[:2]
        boxes = normalised_boxes(detections, height, width)
        anchors = np.full(len(detections), -1, np.int32)
        heatmaps, anchors, fit = self._heatmaps(pixels, boxes, [d.class_id for d in detections], anchors)
        kept = np.flatnonzero(anchors >= 0)
        unexplained = tuple(detections[i] for i in np.flatnonzero(anchors < 0))
        self._report(name, unexplained)
        return Explanation(
            detections=tuple(detections[i] for i in kept),
            heatmaps=heatmaps[kept],
            anchor_indices=anchors[kept],
            levels=self.grad_cam.levels[anchors[kept]].astype(np.int32),
            match_iou=fit[kept],
            image_size=(height, width),
            unexplained=unexplained,
        )

    def explain_anchors(self, pixels: np.ndarray, anchors: Sequence[int], class_ids: Sequence[int]) -> np.ndarray:
        """Heatmaps [N, h, w] of given targets, the class logit `class_ids[i]` at anchor `anchors[i]` (the
        same boxes explained by another model's weights: the anchors are the same for the same config)."""
        boxes = np.zeros((len(anchors), 4))
        return self._heatmaps(pixels, boxes, class_ids, np.asarray(anchors, np.int32))[0]

    def _heatmaps(
        self, pixels: np.ndarray, boxes: np.ndarray, class_ids: Sequence[int], anchors: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Finished heatmaps [N, h, w] (zero where no anchor fits), the anchors used and their IoU with
        the boxes, MAX_TARGETS boxes per pass."""
        size = self.heatmap_size(*pixels.shape[:2])
        image = self.model_input(pixels)
        classes = np.asarray(class_ids, np.int32)
        heatmaps, used, fit = [np.zeros((0, *size), np.float32)], [np.zeros(0, np.int32)], [np.zeros(0, np.float32)]
        for start in range(0, len(classes), MAX_TARGETS):
            part = slice(start, start + MAX_TARGETS)
            with self._pass:
                found = self.grad_cam.maps(image, boxes[part].astype(np.float32), classes[part], anchors[part])
            chosen = found["anchors"].numpy()
            cams = [cams.numpy() for cams in found["cams"]]
            heatmaps.append(np.stack([finish_heatmap(cams[self.grad_cam.levels[a]][i], size) if a >= 0
                                      else np.zeros(size, np.float32) for i, a in enumerate(chosen)]))
            used.append(chosen.astype(np.int32))
            fit.append(found["iou"].numpy().astype(np.float32))
        return np.concatenate(heatmaps), np.concatenate(used), np.concatenate(fit)

    def heatmap_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the heatmaps of an image of this size."""
        return heatmap_size(height, width, self.heatmap_max_side)

    def _report(self, name: str, unexplained: Sequence[Detection]) -> None:
        for d in unexplained:
            log.warning("%s: no anchor of the checkpoint model fits the %s box %.0f,%.0f,%.0f,%.0f (IoU < %.2f); "
                        "not explained", name or "image", self.class_names.get(d.class_id, d.class_id), d.xmin,
                        d.ymin, d.xmax, d.ymax, MATCH_MIN_IOU)

    def write(
        self, output_dir: str | Path, name: str, pixels: np.ndarray, detections: Sequence[Detection],
        stem: str | None = None,
    ) -> Explanation | None:
        """Explain the detections (those at or above the drawing threshold) of the image `name` (its path
        relative to the input folder) and write explain/<stem>.png and .npz; `stem` defaults to `name`
        without its suffix. Writes nothing, and returns None, for an image without a detection."""
        if not detections:
            return None
        explanation = self.explain(pixels, detections, name)
        if explanation.detections:
            write_explanation(Path(output_dir), stem or image_stem(name), pixels, explanation, self.class_names)
        return explanation


def write_explanation(
    output_dir: Path, stem: str, pixels: np.ndarray, explanation: Explanation, class_names: Mapping[int, str]
) -> tuple[Path, Path]:
    """Write explain/<stem>.png and explain/<stem>.npz atomically; returns their paths."""
    png_path, npz_path = explain_paths(output_dir, stem)
    atomic.write_bytes(png_path, render_explanation(pixels, explanation.detections, explanation.heatmaps,
                                                     class_names))
    with atomic.atomic_open(npz_path, "wb") as handle:
        np.savez_compressed(handle, **explanation.arrays())
    return png_path, npz_path


# ---------------------------------------------------------------- the picture


class BackgroundExplainer:
    """An `Explainer` opened and warmed up in a thread, so that its seconds of building and tracing
    overlap the detection backend's start; `write` waits for it (from any thread)."""

    def __init__(self, export_dir: str | Path) -> None:
        self._explainer: Explainer | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._open, args=(Path(export_dir),), name="explainer", daemon=True)
        self._thread.start()

    def _open(self, export_dir: Path) -> None:
        try:
            started = time.perf_counter()
            explainer = Explainer.open(export_dir)
            built = time.perf_counter()
            explainer.warm_up()
            log.info("explanations: model built in %.1f s, traced in %.1f s", built - started,
                     time.perf_counter() - built)
            self._explainer = explainer
        except BaseException as error:  # noqa: BLE001 - re-raised in the thread that asks for the explainer
            self._error = error

    def ready(self) -> Explainer:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._explainer

    def write(self, output_dir: str | Path, name: str, pixels: np.ndarray, detections: Sequence[Detection],
              stem: str | None = None) -> Explanation | None:
        return self.ready().write(output_dir, name, pixels, detections, stem)
