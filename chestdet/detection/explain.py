"""Grad-CAM heatmaps (Selvaraju et al., ICCV 2017) for the boxes a detection run found.

The maps come from the export's checkpoint, built with the OD API's model builder from the export's
pipeline.config, whichever backend found the boxes. For one image:

1. the image is resized as the SavedModel graph resizes it and run through `preprocess` and the
   model's feature extractor: the feature maps `predict` hands its box predictor;
2. the box predictor runs on N copies of those maps, one per box, under a `tf.GradientTape`: the
   class logits and box encodings `predict` would give, N times over;
3. each box takes the anchor whose decoded box (the config's box coder, clipped to the image) is
   closest to it, when that is the same box (IoU >= `SAME_BOX_IOU`): the checkpoint model's own
   detection of that box. A box without one (another model's box, or an edited one) takes the anchor
   scoring its class highest (the config's score converter) among those overlapping it by
   `MATCH_MIN_IOU`; a box no anchor fits is reported and left out;
4. the target of box i is the class logit at its anchor in copy i, so one backward pass of their
   sum gives each box's gradient on its own copy of the maps. Averaged over space it weighs the
   channels of the map of the anchor's own pyramid level; the weighted sum, through a ReLU,
   upsampled bilinearly and divided by its maximum, is the heatmap.

Why the anchor's own level and not all levels combined: the box predictor computes an anchor's logit
from its own level's feature map only, so whatever else reaches the logit reaches it through that
map: the coarser levels through the FPN's top-down path, and, for the extra coarse levels the SSD
builds by strided convolutions, the finer level each is built from. Their evidence is already in
it; adding their maps would count it twice at other grids, blurring the map of a small finding.

All the boxes of an image (up to `MAX_TARGETS`) cost one pass of the feature extractor, then N of the
box predictor, forward and back. The box predictor is a small part of the model: a pass with four
boxes takes about a quarter longer than one with one, where `predict` would run the whole model
once per box. Running the two halves apart needs two private attributes of the SSD, kept in
`chestdet.core.compat`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from chestdet.core import atomic, compat
from chestdet.core.contracts import CHECKPOINT_DIR, EXPLAIN_ARRAYS, EXPLAIN_DIR, LABEL_MAP_FILE, PIPELINE_FILE
from chestdet.core.detections import Detection
from chestdet.core.errors import ChestdetError
from chestdet.core.labels import class_colour
from chestdet.detection.drawing import draw_detections_bgr, encode_bgr
from chestdet.export.backends import legacy_bilinear_resize

log = logging.getLogger(__name__)

# A box from detections.csv is explained by an anchor whose decoded box overlaps it this much; the
# backends' boxes agree far closer than that (IoU >= 0.95, BENCHMARKS.md).
MATCH_MIN_IOU = 0.5
# An anchor whose decoded box overlaps a box this much decodes to the same box: the backends' boxes
# agree with the checkpoint's at IoU >= 0.95, and the NMS of the project's configs suppresses at 0.6.
SAME_BOX_IOU = 0.9
MAX_TARGETS = 16  # boxes explained per pass: their copies of the feature maps are held together
# Heatmaps in the .npz keep the image's aspect ratio, their longest side at most HEATMAP_MAX_SIDE and
# at most PIXELS_PER_CELL times the finest pyramid level's: a map has no detail finer than that level's
# cells, so more pixels would only store the bilinear upsampling (128 for a 256x256 model, 4x smaller).
HEATMAP_MAX_SIDE = 256
PIXELS_PER_CELL = 4
PANEL_MAX_SIDE = 512  # each panel of the .png
HEAT_OPACITY = 0.6  # a pixel of heat 1 is this much its box's colour, the rest film


class ExplainError(ChestdetError):
    """The export cannot give explanations; the message names the file and the reason."""


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


def heatmap_size(height: int, width: int, max_side: int = HEATMAP_MAX_SIDE) -> tuple[int, int]:
    """(h, w) of the image scaled so that its longer side is at most `max_side`, never enlarged."""
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


# ---------------------------------------------------------------- the model


def load_configs(export_dir: Path) -> dict:
    """config_util's configs of the export's pipeline.config (an SSD with a fixed-shape resizer)."""
    from chestdet.export.exporter import ExportError, load_pipeline_config

    try:
        return load_pipeline_config(Path(export_dir) / PIPELINE_FILE)
    except ExportError as error:
        raise ExplainError(str(error)) from error


def checkpoint_prefix(export_dir: Path) -> Path:
    """The checkpoint the exporter kept in export_dir/checkpoint/."""
    import tensorflow as tf

    folder = Path(export_dir) / CHECKPOINT_DIR
    latest = tf.train.latest_checkpoint(str(folder)) if folder.is_dir() else None
    if latest is None:
        raise ExplainError(f"{folder}: no checkpoint there; explanations need the export's checkpoint/ folder")
    return Path(latest)


def build_model(configs: dict, checkpoint: Path | None = None) -> tuple:
    """The SSD of `configs` through model_builder, restored from `checkpoint` (tf.train.Checkpoint, as the
    exporter saved it); without one, its weights are the builder's fresh initial values. Returns the
    model and its `predict` outputs on a blank image, the pass that made its variables.

    The model is built to return each anchor's pyramid level from `predict`
    (`return_raw_detections_during_predict`), which changes nothing else.
    """
    import tensorflow as tf
    from object_detection.builders import model_builder

    model_config = type(configs["model"])()
    model_config.CopyFrom(configs["model"])
    model_config.ssd.return_raw_detections_during_predict = True
    configs = {**configs, "model": model_config}
    if checkpoint is not None:
        from chestdet.export.exporter import ExportError, build_restored_model

        try:
            model, _, blank = build_restored_model(configs, checkpoint)
        except ExportError as error:
            raise ExplainError(str(error)) from error
        return model, blank
    model = model_builder.build(model_config, is_training=False)
    height, width = input_size(configs)
    images, shapes = model.preprocess(tf.zeros([1, height, width, 3]))
    return model, model.predict(images, shapes)


def input_size(configs: dict) -> tuple[int, int]:
    resizer = configs["model"].ssd.image_resizer.fixed_shape_resizer
    return resizer.height, resizer.width


class GradCam:
    """The traced Grad-CAM function over one model (see the module docstring), `maps(image, boxes,
    classes, anchors)`.

    For target i, the class logit `classes[i]` (a label-map id) at anchor `anchors[i]`, or, where
    that is -1, at the anchor `best_anchors` picks for `boxes[i]` (normalised ymin, xmin, ymax,
    xmax). Returns the anchors used (-1 where no anchor fits the box), the IoU of each one's decoded
    box with the box, and per pyramid level the maps [N, h_l, w_l] before upsampling; a target's map
    is on the level `levels[anchor]` (the other levels' maps are zero: they do not reach its logit).
    """

    def __init__(self, model, configs: dict, blank: dict) -> None:  # noqa: ANN001 - an SSDMetaArch
        """`model` and `blank`, as `build_model` returns them: the model's `predict` outputs on a blank
        image hold the anchors and their levels, the same for every image of the model's input size."""
        import tensorflow as tf
        from object_detection.builders import box_coder_builder, post_processing_builder
        from object_detection.core.standard_fields import PredictionFields

        self.model = model
        height, width = input_size(configs)
        self.anchor_boxes = blank["anchors"]
        self.levels = blank[PredictionFields.raw_detection_feature_map_indices][0].numpy()
        self.finest_side = max(blank["feature_maps"][0].shape[1:3])
        self.box_coder = box_coder_builder.build(configs["model"].ssd.box_coder)
        self.score_converter = post_processing_builder.build(configs["model"].ssd.post_processing)[1]
        targets = tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.int32)
        # No autograph: nothing here branches on tensors, and converting the model's code on the way
        # doubles the tracing for the same graph.
        self.maps = tf.function(self._maps, input_signature=[tf.TensorSpec([1, height, width, 3]), *targets],
                                autograph=False)

    def _maps(self, image, boxes, classes, anchors):  # noqa: ANN001, ANN202 - tensors
        import tensorflow as tf

        images, _ = self.model.preprocess(image)
        count = tf.shape(classes)[0]
        copies = [tf.tile(level, [count, 1, 1, 1]) for level in compat.ssd_feature_maps(self.model, images)]
        with tf.GradientTape() as tape:
            tape.watch(copies)
            predictions = compat.ssd_box_predictions(self.model, copies)
            logits = tf.concat(predictions["class_predictions_with_background"], axis=1)  # [N, anchors, 1 + classes]
            with tape.stop_recording():
                encodings = tf.reshape(tf.concat(predictions["box_encodings"], axis=1)[0], [-1, 4])
                decoded = self._decoded_boxes(encodings)
                scores = self.score_converter(logits[:1])[0]
                chosen, overlaps = best_anchors(boxes, classes, decoded, scores)
                anchors = tf.where(anchors >= 0, anchors, chosen)
            picked = tf.stack([tf.range(count), tf.maximum(anchors, 0), classes], axis=1)
            total = tf.reduce_sum(tf.gather_nd(logits, picked))  # copy i's logit depends on copy i only
        gradients = tape.gradient(total, copies)
        cams = tuple(tf.nn.relu(tf.einsum("nc,nhwc->nhw", tf.reduce_mean(gradient, axis=[1, 2]), activations))
                     for gradient, activations in zip(gradients, copies, strict=True))
        fit = tf.gather(overlaps, tf.maximum(anchors, 0), batch_dims=1)
        return {"anchors": anchors, "iou": tf.where(anchors >= 0, fit, 0.0), "cams": cams}

    def _decoded_boxes(self, encodings):  # noqa: ANN001, ANN202 - tensors
        """[anchors, 4] normalised boxes of one image's box encodings, clipped to the image."""
        import tensorflow as tf
        from object_detection.core import box_list

        decoded = self.box_coder.decode(encodings, box_list.BoxList(self.anchor_boxes)).get()
        return tf.clip_by_value(decoded, 0.0, 1.0)


# ---------------------------------------------------------------- matching boxes to anchors


def normalised_boxes(detections: Sequence[Detection], height: int, width: int) -> np.ndarray:
    """[N, 4] (ymin, xmin, ymax, xmax) in [0, 1] of the original image."""
    boxes = [(d.ymin / height, d.xmin / width, d.ymax / height, d.xmax / width) for d in detections]
    return np.array(boxes, dtype=np.float64).reshape(-1, 4)


def best_anchors(boxes, classes, decoded, scores, min_iou: float = MATCH_MIN_IOU):  # noqa: ANN001, ANN201
    """For each box (normalised) of a label-map class, the anchor that explains it, or -1; and the IoU
    [N, anchors] of every box with every decoded box. `scores` [anchors, 1 + classes] has the
    background first.

    The anchor is the one whose decoded box is closest to the box, when that is the same box (IoU >=
    SAME_BOX_IOU; of equally close ones, the best-scoring): the model's own detection of it. The score
    does not decide otherwise: a near copy that scores higher may have been suppressed in NMS by a
    third box that overlaps this one less. Without such an anchor (another model's box, or an edited
    one), it is the anchor scoring the box's class highest among those overlapping it by `min_iou`.
    """
    import tensorflow as tf
    from object_detection.core import box_list, box_list_ops

    boxes, decoded = tf.convert_to_tensor(boxes, tf.float32), tf.convert_to_tensor(decoded, tf.float32)
    overlaps = box_list_ops.iou(box_list.BoxList(boxes), box_list.BoxList(decoded))
    class_scores = tf.transpose(tf.gather(scores, classes, axis=1))  # [N, anchors]
    fits = overlaps >= min_iou
    near = tf.cast(tf.argmax(tf.where(fits, class_scores, -np.inf), axis=1), tf.int32)
    near = tf.where(tf.reduce_any(fits, axis=1), near, -1)
    closest_iou = tf.reduce_max(overlaps, axis=1, keepdims=True)
    tied_scores = tf.where(overlaps >= closest_iou, class_scores, -np.inf)  # anchors decoding to one box
    closest = tf.cast(tf.argmax(tied_scores, axis=1), tf.int32)
    same = closest_iou[:, 0] >= SAME_BOX_IOU
    return tf.where(same, closest, near), overlaps


def finish_heatmap(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Upsample one level's map bilinearly to (h, w) and divide by its maximum: float32 in [0, 1]
    (all zero when the ReLU left nothing)."""
    height, width = size
    upsampled = cv2.resize(np.asarray(cam, dtype=np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    upsampled = np.maximum(upsampled, 0.0)
    peak = float(upsampled.max())
    return upsampled / peak if peak > 0 else np.zeros_like(upsampled)


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
    atomic.write_bytes(png_path, render_explanation(pixels, explanation, class_names))
    with atomic.atomic_open(npz_path, "wb") as handle:
        np.savez_compressed(handle, **explanation.arrays())
    return png_path, npz_path


# ---------------------------------------------------------------- the picture


def overlaps(a: Detection, b: Detection) -> bool:
    return min(a.xmax, b.xmax) > max(a.xmin, b.xmin) and min(a.ymax, b.ymax) > max(a.ymin, b.ymin)


def group_panels(detections: Sequence[Detection]) -> list[list[int]]:
    """Indices of the detections per panel, best score first: a box joins the first panel none of whose
    boxes it overlaps, so overlapping boxes never share a panel."""
    panels: list[list[int]] = []
    for index in sorted(range(len(detections)), key=lambda i: -detections[i].score):
        for panel in panels:
            if not any(overlaps(detections[index], detections[other]) for other in panel):
                panel.append(index)
                break
        else:
            panels.append([index])
    return panels


def render_explanation(pixels: np.ndarray, explanation: Explanation, class_names: Mapping[int, str]) -> bytes:
    """PNG of one panel per group of non-overlapping boxes (up to 3 side by side, then more rows).

    In a panel each pixel takes the colour of the box whose heatmap is strongest there (the box's
    class colour, as in drawn/), as opaque as that heat; the boxes and their labels are drawn on top.
    """
    height, width = pixels.shape[:2]
    size = heatmap_size(height, width, PANEL_MAX_SIDE)
    film = cv2.resize(pixels, (size[1], size[0]), interpolation=cv2.INTER_AREA).astype(np.float32)
    heat = np.stack([cv2.resize(heatmap, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
                     for heatmap in explanation.heatmaps])
    scale_y, scale_x = size[0] / height, size[1] / width
    boxes = [_scaled(d, scale_x, scale_y) for d in explanation.detections]
    panels = [_panel(film, heat[members], [boxes[i] for i in members], class_names)
              for members in group_panels(explanation.detections)]
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    gap = 8
    canvas = np.full((rows * size[0] + (rows - 1) * gap, columns * size[1] + (columns - 1) * gap, 3), 255, np.uint8)
    for index, panel in enumerate(panels):
        top, left = (index // columns) * (size[0] + gap), (index % columns) * (size[1] + gap)
        canvas[top:top + size[0], left:left + size[1]] = panel
    return encode_bgr(canvas, "png")


def _panel(
    film: np.ndarray, heat: np.ndarray, boxes: Sequence[Detection], class_names: Mapping[int, str]
) -> np.ndarray:
    """BGR panel: `film` (float32 gray or RGB, panel-sized) tinted by the boxes' heatmaps `heat` [n, h, w]."""
    colours = np.array([class_colour(box.class_id) for box in boxes], dtype=np.float32)  # [n, 3] RGB
    strongest = heat.argmax(axis=0) if len(boxes) > 1 else None
    opacity = HEAT_OPACITY * (heat.max(axis=0) if strongest is not None else heat[0])
    tinted = np.empty((*film.shape[:2], 3), np.uint8)
    for channel in range(3):
        base = film if film.ndim == 2 else film[:, :, channel]
        colour = colours[strongest, channel] if strongest is not None else colours[0, channel]
        tinted[:, :, channel] = base + opacity * (colour - base) + 0.5  # in [0, 255]; + 0.5 rounds
    return draw_detections_bgr(tinted, boxes, class_names)


def _scaled(detection: Detection, scale_x: float, scale_y: float) -> Detection:
    return Detection(detection.class_id, detection.score, detection.xmin * scale_x, detection.ymin * scale_y,
                     detection.xmax * scale_x, detection.ymax * scale_y)


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
