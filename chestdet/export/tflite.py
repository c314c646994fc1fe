"""The TFLite model of an export: the OD API's TFLite SSD graph of the restored model, converted float32
or, with calibration inputs, full-integer INT8; and how to run it (export.json's `tflite` record).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from chestdet.core import compat
from chestdet.core.contracts import SAVED_MODEL_DIR
from chestdet.export.modules import tflite_module
from chestdet.training.pipeline_config import image_size

log = logging.getLogger("chestdet.export.exporter")

# The TFLite graph's NMS. The OD API's default for TFLite is "fast": class-agnostic, each anchor keeps
# only its best class, so a Pneumonia box over an Infiltrate box suppresses it; chest findings often
# overlap (Effusion with Atelectasis, Infiltrate with Pneumonia), and on the NIH sample fast NMS
# reproduced 76% of the SavedModel's boxes against 100% for regular (per-class) NMS, which costs
# about 10 ms more per 320x320 image on a 2-core CPU (20 ms against 10 ms; BENCHMARKS.md).
TFLITE_NMS = ("regular", "fast")

# The TFLite graph's NMS considers only boxes scoring at least this (the config's score_threshold,
# 1e-8, reaches the TFLite op as 0, so every anchor of every class went through NMS: 10% of its CPU
# time). Greedy NMS never lets a lower-scoring box suppress a higher one, so every box at or above the
# floor is unchanged; it equals detect's default --keep-score, below which nothing is kept anyway.
TFLITE_MIN_SCORE = 0.01

# Calibration inputs of one image each: the TFLite model's float input, [height, width, 3].
Calibration = Callable[[], Iterable[np.ndarray]]


def write_tflite(
    configs: dict, model, tflite_path: Path, regular_nms: bool = False,  # noqa: ANN001 - a DetectionModel
    min_score: float = TFLITE_MIN_SCORE, calibration: Calibration | None = None,
) -> None:
    """export_tflite_graph_tf2's SSD graph of `model`, converted; its NMS keeps boxes scoring at least
    `min_score`. Float32, or full-integer INT8 calibrated on `calibration`'s inputs when given (the
    TFLite_Detection_PostProcess op stays float: the converter dequantises its inputs)."""
    import tensorflow as tf
    from object_detection.utils import config_util

    pipeline = config_util.create_pipeline_proto_from_configs(configs)
    nms = pipeline.model.ssd.post_processing.batch_non_max_suppression
    nms.score_threshold = tflite_nms_floor(configs, min_score)
    module = tflite_module(pipeline, model, nms.max_total_detections, regular_nms)
    work = Path(tempfile.mkdtemp(prefix=".tflite-graph-", dir=tflite_path.parent))
    try:
        started = time.perf_counter()
        signature = module.inference_fn.get_concrete_function(
            tf.TensorSpec(module.input_shape(), tf.float32, name="input"))
        tf.saved_model.save(module, str(work / SAVED_MODEL_DIR), signatures=signature)
        log.info("  TFLite graph traced and saved in %.1f s; converting%s", time.perf_counter() - started,
                 " to INT8 (calibrating)" if calibration is not None else "")
        started = time.perf_counter()
        converter = tf.lite.TFLiteConverter.from_saved_model(str(work / SAVED_MODEL_DIR))
        if calibration is not None:
            full_integer(converter, calibration)
        with compat.native_output_filtered():  # the converter prints its op summary on file descriptor 2
            converted = converter.convert()
        tflite_path.write_bytes(converted)
        log.info("  converted in %.1f s", time.perf_counter() - started)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def full_integer(converter, calibration: Calibration) -> None:  # noqa: ANN001 - a tf.lite.TFLiteConverter
    """Post-training full-integer quantisation: int8 weights and activations, calibrated on the inputs,
    uint8 input; ops without an int8 kernel (the postprocess op) keep float."""
    import tensorflow as tf

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([sample[np.newaxis].astype(np.float32)] for sample in calibration())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.inference_input_type = tf.uint8
    converter.allow_custom_ops = True


def tflite_input_scaling(model, configs: dict) -> dict:  # noqa: ANN001 - an OD API DetectionModel
    """The TFLite graph skips model.preprocess: its float input is pixel * scale + offset, resized."""
    import tensorflow as tf

    height, width = image_size(configs)
    pixels = tf.constant([[[[0.0, 0.0, 0.0]] * width] * height, [[[255.0, 255.0, 255.0]] * width] * height])
    preprocessed, _ = model.preprocess(pixels)
    low, high = float(preprocessed[0, 0, 0, 0]), float(preprocessed[1, 0, 0, 0])
    return {"scale": (high - low) / 255.0, "offset": low}


def tflite_record(model, configs: dict, nms: str, min_score: float,  # noqa: ANN001 - a DetectionModel
                  quantization: dict | None = None) -> dict:
    """How to run the TFLite model: its input and its scaling, its outputs, its NMS and, for an INT8
    model, its quantisation (the input is round(scaled / input_scale + input_zero_point), uint8)."""
    height, width = image_size(configs)
    record = {
        "input": {"dtype": "uint8" if quantization else "float32", "shape": [1, height, width, 3],
                  **tflite_input_scaling(model, configs)},
        "outputs": ["detection_boxes", "detection_classes", "detection_scores", "num_detections"],
        "class_id_offset": 1,
        "nms": nms,
        "min_score": tflite_nms_floor(configs, min_score),
    }
    if quantization:
        record["quantization"] = quantization
    return record


def input_quantization(tflite_path: Path) -> dict:
    """An INT8 model's input quantisation, read back from the file."""
    import tensorflow as tf

    details = tf.lite.Interpreter(model_path=str(tflite_path)).get_input_details()[0]
    scale, zero_point = details["quantization"]
    return {"kind": "int8", "input_scale": float(scale), "input_zero_point": int(zero_point)}


def tflite_nms_floor(configs: dict, min_score: float) -> float:
    """The score below which the TFLite NMS drops boxes: the config's threshold, or `min_score` if higher,
    as export_tflite_graph_lib_tf2 writes it into the graph (with "%f": 1e-8 becomes 0)."""
    threshold = max(configs["model"].ssd.post_processing.batch_non_max_suppression.score_threshold, min_score)
    return float(f"{threshold:f}")
