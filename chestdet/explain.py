"""Grad-CAM heatmaps (Selvaraju et al., ICCV 2017) for the boxes a detection run found.

The maps come from the export's checkpoint, built with the OD API's model builder from the export's
pipeline.config, whichever backend found the boxes. For one image:

1. the image is resized as the SavedModel graph resizes it and run through `preprocess`, then
   through `predict` under a `tf.GradientTape`; `postprocess` gives the model's own detections and
   their `detection_anchor_indices`;
2. each box to explain is matched to one of those detections (same class, highest IoU, at least
   `MATCH_MIN_IOU`), which names its anchor; a box without such a match takes the anchor, among all
   anchors whose decoded box overlaps it by `MATCH_MIN_IOU`, that scores its class highest; a box
   with neither is reported and left out;
3. the target is the class logit of `class_predictions_with_background` at that anchor; its gradient
   with respect to the feature map of the anchor's own pyramid level (one of predict's
   `feature_maps`, the tensors the box predictor reads) is averaged over space to weigh that map's
   channels; the weighted sum, through a ReLU, upsampled bilinearly and divided by its maximum, is
   the heatmap.

Why the anchor's own level and not all levels combined: the box predictor computes an anchor's logit
from its own level's feature map only. Coarser levels reach that logit solely through the FPN's
top-down path, whose output is that same feature map, so their evidence is already in it, and finer
levels do not reach it at all. Adding the coarser levels' maps would count the same context twice
at a coarser grid (two to sixteen times coarser), blurring the map of a small finding.

All the detections of an image are explained by one forward pass and, per pyramid level, one
`GradientTape.jacobian` of the stacked logits of its boxes with respect to that level's map (one
backward pass per box, through that level's head only); only boxes without a match among the
detections explained in that pass cost a second forward pass.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from chestdet import atomic
from chestdet.backends import legacy_bilinear_resize
from chestdet.contracts import CHECKPOINT_DIR, EXPLAIN_ARRAYS, EXPLAIN_DIR, LABEL_MAP_FILE, PIPELINE_FILE
from chestdet.detections import Detection
from chestdet.drawing import class_colour, draw_detections_bgr, encode_bgr
from chestdet.errors import ChestdetError
from chestdet.metrics import pairwise_iou

log = logging.getLogger(__name__)

# A box from detections.csv is the checkpoint model's detection of the same class overlapping it
# this much; the backends' boxes agree far closer than that (IoU >= 0.95, BENCHMARKS.md).
MATCH_MIN_IOU = 0.5
# The model's detections explained in the first pass: those scoring at least the lowest score asked
# for, less this margin, so that a TFLite score a little above the checkpoint's still finds its box,
# and at most this many more than were asked for (an untrained model scores everything alike).
SCORE_MARGIN = 0.05
SPARE_TARGETS = 4
HEATMAP_MAX_SIDE = 256  # heatmaps in the .npz: the image's aspect ratio, longest side at most this
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
    from chestdet.export import ExportError, load_pipeline_config

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


def build_model(configs: dict, checkpoint: Path | None = None):  # noqa: ANN201 - an OD API SSDMetaArch
    """The SSD of `configs` through model_builder, restored from `checkpoint` (tf.train.Checkpoint, as the
    exporter saved it); without one, its weights are the builder's fresh initial values.

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
        from chestdet.export import ExportError, build_restored_model

        try:
            return build_restored_model(configs, checkpoint)[0]
        except ExportError as error:
            raise ExplainError(str(error)) from error
    model = model_builder.build(model_config, is_training=False)
    height, width = input_size(configs)
    images, shapes = model.preprocess(tf.zeros([1, height, width, 3]))
    model.predict(images, shapes)
    return model


def input_size(configs: dict) -> tuple[int, int]:
    resizer = configs["model"].ssd.image_resizer.fixed_shape_resizer
    return resizer.height, resizer.width


class GradCam:
    """Two traced functions over one model: the model's detections with the Grad-CAM maps of those
    scoring at least a floor, and the maps of given (anchor, class) targets.

    Maps are returned per pyramid level, [N, h_l, w_l] each, before upsampling; a target's own level
    is `levels[anchor]`.
    """

    def __init__(self, model) -> None:  # noqa: ANN001 - an OD API SSDMetaArch
        import tensorflow as tf

        self.model = model
        image = tf.TensorSpec([1, None, None, 3], tf.float32)
        floor_and_cap = tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.int32)
        # No autograph: nothing here branches on tensors, and converting the model's code on the way
        # doubled the tracing (50 s instead of 25 s on a busy 2-core CPU) for the same graph.
        self.detected = tf.function(self._detected, input_signature=[image, *floor_and_cap], autograph=False)
        ints = tf.TensorSpec([None], tf.int32)
        self.at = tf.function(self._at, input_signature=[image, ints, ints], autograph=False)

    def _detected(self, image, min_score, max_targets):  # noqa: ANN001, ANN202 - tensors
        import tensorflow as tf
        from object_detection.core.standard_fields import DetectionResultFields as fields

        images, shapes = self.model.preprocess(image)
        with tf.GradientTape(persistent=True) as tape:
            prediction = self.model.predict(images, shapes)
            with tape.stop_recording():
                found = self.model.postprocess(prediction, shapes)
            count = tf.reduce_sum(tf.cast(found[fields.detection_scores][0] >= min_score, tf.int32))
            count = tf.minimum(count, max_targets)
            anchors = found[fields.detection_anchor_indices][0, :count]
            classes = tf.cast(found[fields.detection_classes][0, :count], tf.int32) + 1
            logits = self._logits(prediction, anchors, classes)
        return {
            "boxes": found[fields.detection_boxes][0],
            "classes": tf.cast(found[fields.detection_classes][0], tf.int32) + 1,
            "scores": found[fields.detection_scores][0],
            "count": tf.cast(found[fields.num_detections][0], tf.int32),
            "anchors": found[fields.detection_anchor_indices][0],
            "raw_boxes": found[fields.raw_detection_boxes][0],
            "raw_scores": found[fields.raw_detection_scores][0],
            "levels": prediction["raw_detection_feature_map_indices"][0],
            "cams": self._cams(tape, logits, tf.gather(prediction["raw_detection_feature_map_indices"][0], anchors),
                               prediction["feature_maps"]),
        }

    def _at(self, image, anchors, classes):  # noqa: ANN001, ANN202 - tensors
        import tensorflow as tf

        images, shapes = self.model.preprocess(image)
        with tf.GradientTape(persistent=True) as tape:
            prediction = self.model.predict(images, shapes)
            logits = self._logits(prediction, anchors, classes)
        levels = tf.gather(prediction["raw_detection_feature_map_indices"][0], anchors)
        return self._cams(tape, logits, levels, prediction["feature_maps"])

    @staticmethod
    def _logits(prediction: dict, anchors, classes):  # noqa: ANN001, ANN205 - tensors
        """Class logits at (anchor, class) pairs; classes are label-map ids (0 is the background column)."""
        import tensorflow as tf

        return tf.gather_nd(prediction["class_predictions_with_background"][0], tf.stack([anchors, classes], 1))

    @staticmethod
    def _cams(tape, logits, levels, feature_maps) -> tuple:  # noqa: ANN001 - tensors
        """Per level, for the targets on it (in target order): ReLU(sum over channels of the
        space-averaged gradient times the activations).

        One jacobian per level, of that level's logits with respect to that level's map only, so the
        backward pass runs through that level's head alone (a jacobian with respect to every level
        also runs, once per target, through every other head and the top-down path: 3x slower at 3
        boxes). It loops over targets rather than vectorising with pfor: pfor has no rule for the
        depthwise convolutions' backward pass, so it loops anyway, slower, and fails on a level
        without targets.
        """
        import tensorflow as tf

        cams = []
        for level, activations in enumerate(feature_maps):
            with tape:  # the selection must be recorded, or the targets have no gradient
                targets = tf.boolean_mask(logits, tf.equal(levels, level))
            gradient = tape.jacobian(targets, activations, experimental_use_pfor=False)
            weights = tf.reduce_mean(gradient[:, 0], axis=[1, 2])  # [targets, channels]
            cams.append(tf.nn.relu(tf.einsum("nc,hwc->nhw", weights, activations[0])))
        return tuple(cams)


# ---------------------------------------------------------------- matching boxes to anchors


@dataclass(frozen=True)
class Match:
    """The anchor that explains one box: `detection` is the index of the model's own detection it
    matched, or None when the fallback anchor served (then `iou` is that anchor's decoded box's)."""

    anchor: int
    detection: int | None
    iou: float


@dataclass(frozen=True)
class ModelDetections:
    """The checkpoint model's view of one image, normalised (ymin, xmin, ymax, xmax) boxes."""

    boxes: np.ndarray  # [M, 4], after NMS, best first
    classes: np.ndarray  # [M], label-map ids
    anchors: np.ndarray  # [M]
    raw_boxes: np.ndarray  # [A, 4], every anchor's decoded box
    raw_scores: np.ndarray  # [A, classes + 1], with the background column first


def normalised_boxes(detections: Sequence[Detection], height: int, width: int) -> np.ndarray:
    """[N, 4] (ymin, xmin, ymax, xmax) in [0, 1] of the original image."""
    boxes = [(d.ymin / height, d.xmin / width, d.ymax / height, d.xmax / width) for d in detections]
    return np.array(boxes, dtype=np.float64).reshape(-1, 4)


def match_detections(
    boxes: np.ndarray, classes: Sequence[int], model: ModelDetections, min_iou: float = MATCH_MIN_IOU
) -> list[Match | None]:
    """For each box (normalised, with its label-map class), the anchor to explain it by.

    First the model's detection of the same class with the highest IoU, if at least `min_iou`
    (several boxes may match one detection); else, among the anchors whose decoded box (clipped to
    the image) overlaps the box by `min_iou`, the one scoring the class highest; else None.
    """
    classes = np.asarray(classes, dtype=np.int64)
    if not len(classes):
        return []
    same_class = classes[:, np.newaxis] == model.classes[np.newaxis, :]
    ious = np.where(same_class, pairwise_iou(boxes, model.boxes), -1.0) if len(model.boxes) else None
    raw_ious = pairwise_iou(boxes, np.clip(model.raw_boxes, 0.0, 1.0))
    matches: list[Match | None] = []
    for index, class_id in enumerate(classes):
        best = int(np.argmax(ious[index])) if ious is not None else 0
        if ious is not None and ious[index, best] >= min_iou:
            matches.append(Match(int(model.anchors[best]), best, float(ious[index, best])))
            continue
        candidates = np.flatnonzero(raw_ious[index] >= min_iou)
        if not len(candidates):
            matches.append(None)
            continue
        anchor = int(candidates[np.argmax(model.raw_scores[candidates, class_id])])
        matches.append(Match(anchor, None, float(raw_ious[index, anchor])))
    return matches


def finish_heatmap(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Upsample one level's map bilinearly to (h, w) and divide by its maximum: float32 in [0, 1]
    (all zero when the ReLU left nothing)."""
    height, width = size
    upsampled = cv2.resize(np.asarray(cam, dtype=np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    upsampled = np.maximum(upsampled, 0.0)
    peak = float(upsampled.max())
    return upsampled / peak if peak > 0 else np.zeros_like(upsampled)


# ---------------------------------------------------------------- explaining an image


class Explainer:
    """Grad-CAM maps of an export's detections: `Explainer.open(export_dir)`, then `write` per image."""

    def __init__(self, model, class_names: Mapping[int, str], size: tuple[int, int]) -> None:  # noqa: ANN001
        """`model`: an OD API SSD built by `build_model`; `size`: its input (height, width)."""
        self.grad_cam = GradCam(model)
        self.class_names = dict(class_names)
        self.size = size

    @classmethod
    def open(cls, export_dir: str | Path, restore: bool = True) -> Explainer:
        """Build the export's model from pipeline.config and restore checkpoint/ into it.

        `restore=False` keeps the builder's initial weights (the model-randomisation check).
        """
        from chestdet.labels import load_label_map

        export_dir = Path(export_dir)
        configs = load_configs(export_dir)
        prefix = checkpoint_prefix(export_dir) if restore else None
        label_map = export_dir / LABEL_MAP_FILE
        if not label_map.is_file():
            raise ExplainError(f"{label_map}: label map not found")
        return cls(build_model(configs, prefix), load_label_map(label_map), input_size(configs))

    def warm_up(self) -> None:
        """Trace the detections' function on a blank image (a first call otherwise spends tens of seconds
        tracing); a caller can run it in a thread while the detection backend loads. The function for
        boxes without a match is traced at its first use."""
        self.grad_cam.detected(np.zeros((1, *self.size, 3), np.float32), np.float32(0.0), np.int32(1))

    def model_input(self, pixels: np.ndarray) -> np.ndarray:
        """[1, h, w, 3] float32 of 0..255: resized as the SavedModel graph resizes (gray first)."""
        resized = legacy_bilinear_resize(pixels, *self.size)
        if resized.ndim == 2:
            resized = np.repeat(resized[:, :, np.newaxis], 3, axis=2)
        return resized[np.newaxis]

    def explain(self, pixels: np.ndarray, detections: Sequence[Detection], name: str = "") -> Explanation:
        """Heatmaps of `detections` (pixels of this image, from any backend) on (H, W) gray or RGB uint8;
        `name` names the image in the warning about a box no anchor fits."""
        height, width = pixels.shape[:2]
        size = heatmap_size(height, width)
        if not detections:
            empty = np.zeros(0, np.int32)
            return Explanation((), np.zeros((0, *size), np.float32), empty, empty, np.zeros(0, np.float32),
                               (height, width))
        image = self.model_input(pixels)
        floor = min((d.score for d in detections), default=1.0) - SCORE_MARGIN
        found = self.grad_cam.detected(image, np.float32(floor), np.int32(len(detections) + SPARE_TARGETS))
        model = _model_detections(found)
        levels = found["levels"].numpy()
        matches = match_detections(normalised_boxes(detections, height, width), [d.class_id for d in detections],
                                   model)
        explained = sum(int(cams.shape[0]) for cams in found["cams"])  # the model's first detections
        kept = [i for i, m in enumerate(matches) if m is not None]
        again = [i for i in kept if matches[i].detection is None or matches[i].detection >= explained]
        extra = self._cams_at(image, [matches[i].anchor for i in again], [detections[i].class_id for i in again])
        heatmaps = []
        for i in kept:
            if i in again:
                cam = level_cam(extra, levels[[matches[j].anchor for j in again]], again.index(i))
            else:
                cam = level_cam(found["cams"], levels[model.anchors[:explained]], matches[i].detection)
            heatmaps.append(finish_heatmap(cam, size))
        unexplained = tuple(d for d, m in zip(detections, matches, strict=True) if m is None)
        self._report(name, unexplained)
        anchors = np.array([matches[i].anchor for i in kept], dtype=np.int32)
        return Explanation(
            detections=tuple(detections[i] for i in kept),
            heatmaps=np.stack(heatmaps) if heatmaps else np.zeros((0, *size), np.float32),
            anchor_indices=anchors,
            levels=levels[anchors].astype(np.int32),
            match_iou=np.array([0.0 if matches[i].detection is None else matches[i].iou for i in kept],
                               dtype=np.float32),
            image_size=(height, width),
            unexplained=unexplained,
        )

    def _report(self, name: str, unexplained: Sequence[Detection]) -> None:
        for d in unexplained:
            log.warning("%s: no anchor of the checkpoint model fits the %s box %.0f,%.0f,%.0f,%.0f (IoU < %.2f); "
                        "not explained", name or "image", self.class_names.get(d.class_id, d.class_id), d.xmin,
                        d.ymin, d.xmax, d.ymax, MATCH_MIN_IOU)

    def _cams_at(self, image: np.ndarray, anchors: Sequence[int], class_ids: Sequence[int]) -> tuple:
        if not len(anchors):
            return ()
        return self.grad_cam.at(image, np.asarray(anchors, np.int32), np.asarray(class_ids, np.int32))

    def explain_anchors(self, pixels: np.ndarray, anchors: Sequence[int], class_ids: Sequence[int]) -> np.ndarray:
        """Heatmaps [N, h, w] of given targets, the class logit `class_ids[i]` at anchor `anchors[i]` (the
        same boxes explained by another model's weights: the anchors are the same for the same config)."""
        height, width = pixels.shape[:2]
        image = self.model_input(pixels)
        cams = self._cams_at(image, anchors, class_ids)
        levels = self.anchor_levels(image)[np.asarray(anchors)]
        size = heatmap_size(height, width)
        return np.stack([finish_heatmap(level_cam(cams, levels, i), size) for i in range(len(anchors))])

    def anchor_levels(self, image: np.ndarray) -> np.ndarray:
        """[anchors] pyramid level of every anchor of the model's input."""
        return self.grad_cam.detected(image, np.float32(2.0), np.int32(0))["levels"].numpy()

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


def level_cam(cams: Sequence, target_levels: np.ndarray, target: int) -> np.ndarray:
    """The map of target `target` from per-level maps that hold, in target order, the targets on them."""
    level = int(target_levels[target])
    return np.asarray(cams[level][int(np.sum(target_levels[:target] == level))])


def _model_detections(found: Mapping) -> ModelDetections:
    count = int(found["count"])
    return ModelDetections(
        boxes=found["boxes"].numpy()[:count],
        classes=found["classes"].numpy()[:count],
        anchors=found["anchors"].numpy()[:count],
        raw_boxes=found["raw_boxes"].numpy(),
        raw_scores=found["raw_scores"].numpy(),
    )


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
    """An `Explainer` opened and warmed up in a thread, so that its tens of seconds of building and
    tracing overlap the detection backend's start; `write` waits for it, then explains one image at a
    time (TensorFlow spreads each image over the cores itself)."""

    def __init__(self, export_dir: str | Path) -> None:
        self._explainer: Explainer | None = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._open, args=(Path(export_dir),), name="explainer", daemon=True)
        self._thread.start()

    def _open(self, export_dir: Path) -> None:
        try:
            explainer = Explainer.open(export_dir)
            explainer.warm_up()
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
        explainer = self.ready()
        with self._lock:
            return explainer.write(output_dir, name, pixels, detections, stem)
