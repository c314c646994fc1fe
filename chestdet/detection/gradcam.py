"""Grad-CAM (Selvaraju et al., ICCV 2017) on the project's SSD, built from an export's checkpoint.

For one image:

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

import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from chestdet.core import compat
from chestdet.core.contracts import CHECKPOINT_DIR, PIPELINE_FILE
from chestdet.core.detections import Detection
from chestdet.core.errors import ChestdetError

log = logging.getLogger(__name__)


class ExplainError(ChestdetError):
    """The export cannot give explanations; the message names the file and the reason."""


# A box from detections.csv is explained by an anchor whose decoded box overlaps it this much; the
# backends' boxes agree far closer than that (IoU >= 0.95, BENCHMARKS.md).
MATCH_MIN_IOU = 0.5
# An anchor whose decoded box overlaps a box this much decodes to the same box: the backends' boxes
# agree with the checkpoint's at IoU >= 0.95, and the NMS of the project's configs suppresses at 0.6.
SAME_BOX_IOU = 0.9


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
