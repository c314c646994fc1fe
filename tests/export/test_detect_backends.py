"""Backend pieces that need no exported model: choosing, resizing like the graph, agreement, pixels."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from chestdet.core.detections import Detection
from chestdet.core.errors import BackendError
from chestdet.export.agreement import backend_agreement
from chestdet.export.backends import (
    ModelOutput,
    choose_backend,
    legacy_bilinear_resize,
    tflite_min_score,
    tflite_normalisation,
    to_pixels,
)
from tests.conftest import REPO, SAMPLE_IMAGES

PIPELINE = REPO / "pipelines" / "ssd_mobilenet_v2_fpnlite_320x320.config"


def test_resize_matches_the_graphs_legacy_bilinear_resize_on_a_real_xray():
    import tensorflow as tf

    gray = cv2.imread(str(next(SAMPLE_IMAGES.glob("*.png"))), cv2.IMREAD_GRAYSCALE)
    rgb = np.dstack([gray, 255 - gray, gray // 2])
    for size in ((320, 320), (128, 96), (320, 320), (1100, 1500)):  # twice: the second 320 uses the cached taps
        ours = legacy_bilinear_resize(rgb, *size)
        theirs = tf.compat.v1.image.resize_bilinear(rgb[np.newaxis].astype(np.float32), size)[0].numpy()
        assert ours.shape == theirs.shape and ours.dtype == np.float32
        np.testing.assert_allclose(ours, theirs, atol=1e-5)
        np.testing.assert_allclose(legacy_bilinear_resize(gray, *size), theirs[:, :, 0], atol=1e-5)
    strided = rgb[::2, ::3]  # a view, as a crop would be
    theirs = tf.compat.v1.image.resize_bilinear(strided[np.newaxis].astype(np.float32), (320, 320))[0].numpy()
    np.testing.assert_allclose(legacy_bilinear_resize(strided, 320, 320), theirs, atol=1e-5)


def test_auto_takes_tflite_only_without_a_gpu(tmp_path: Path):
    (tmp_path / "saved_model").mkdir()
    assert choose_backend("auto", tmp_path, has_gpu=False) == "savedmodel"
    (tmp_path / "model.tflite").write_bytes(b"x")
    assert choose_backend("auto", tmp_path, has_gpu=False) == "tflite"
    assert choose_backend("auto", tmp_path, has_gpu=True) == "savedmodel"
    shutil.rmtree(tmp_path / "saved_model")
    with pytest.raises(BackendError, match=r": no saved_model/ in this export$"):
        choose_backend("savedmodel", tmp_path, has_gpu=False)


@pytest.mark.skipif(sys.platform != "linux", reason="the device nodes looked for are Linux's")
def test_gpu_check_imports_tensorflow_only_where_a_gpu_device_node_exists(tmp_path: Path):
    def ask() -> list[str]:
        code = ("import sys; from pathlib import Path; from chestdet.export.backends import gpu_available; "
                f"print(gpu_available(Path({str(tmp_path)!r})), 'tensorflow' in sys.modules)")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.split()

    assert ask() == ["False", "False"]
    (tmp_path / "nvidia0").touch()
    assert ask()[1] == "True"  # TensorFlow, not the node, says whether the GPU is usable


def test_auto_takes_the_savedmodel_when_tflite_drops_scores_the_user_keeps(tmp_path: Path):
    (tmp_path / "saved_model").mkdir()
    (tmp_path / "model.tflite").write_bytes(b"x")
    assert tflite_min_score(tmp_path) == 0.0  # an export.json-less (older) export: no floor stated
    (tmp_path / "export.json").write_text(json.dumps({"tflite": {"min_score": 0.01}}))
    assert tflite_min_score(tmp_path) == 0.01
    assert choose_backend("auto", tmp_path, has_gpu=False, keep_score=0.01) == "tflite"
    assert choose_backend("auto", tmp_path, has_gpu=False, keep_score=0.0) == "savedmodel"
    assert choose_backend("tflite", tmp_path, has_gpu=False, keep_score=0.0) == "tflite"


def test_tflite_input_scaling_from_export_json_or_the_feature_extractor(tmp_path: Path):
    shutil.copy(PIPELINE, tmp_path / "pipeline.config")
    assert tflite_normalisation(tmp_path) == (2.0 / 255.0, -1.0)
    (tmp_path / "export.json").write_text(json.dumps({"tflite": {"input": {"scale": 0.5, "offset": -3}}}))
    assert tflite_normalisation(tmp_path) == (0.5, -3.0)
    (tmp_path / "export.json").unlink()
    text = PIPELINE.read_text().replace("ssd_mobilenet_v2_fpn_keras", "ssd_resnet50_v1_fpn_keras")
    (tmp_path / "pipeline.config").write_text(text)
    with pytest.raises(BackendError, match=r"'ssd_resnet50_v1_fpn_keras' feature extractor scales its input"):
        tflite_normalisation(tmp_path)


def test_to_pixels_scales_normalised_boxes_and_filters_scores():
    output = ModelOutput(
        np.array([[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0]], np.float32),
        np.array([3, 1], np.int32),
        np.array([0.8, 0.001], np.float32),
    )
    (kept,) = to_pixels(output, width=1000, height=500, min_score=0.01)
    assert kept.class_id == 3
    assert (kept.xmin, kept.ymin, kept.xmax, kept.ymax) == pytest.approx((200, 50, 600, 250), abs=1e-3)
    assert len(to_pixels(output, 1000, 500)) == 2


def box(class_id, score, x0, y0=0.0, size=100.0):
    return Detection(class_id, score, x0, y0, x0 + size, y0 + size)


def test_agreement_needs_same_class_high_iou_and_close_score():
    reference = [[box(1, 0.9, 0), box(2, 0.8, 300), box(3, 0.7, 600), box(4, 0.2, 900)], [box(5, 0.5, 0)]]
    candidate = [
        [box(1, 0.91, 1), box(2, 0.8, 300, size=80), box(4, 0.7, 600), box(4, 0.2, 900)],
        [box(5, 0.515, 0.5)],
    ]
    agreement = backend_agreement(reference, candidate)
    # box 1 (IoU 0.98, score +0.01) and image 2's box match; box 2 (IoU 0.64), box 3 (class) do not;
    # the 0.2 box is below the 0.3 threshold and not counted.
    assert (agreement.reference_boxes, agreement.matched) == (4, 2)
    assert agreement.share == 0.5
    assert backend_agreement([[box(1, 0.9, 0)]], [[box(1, 0.95, 0)]]).matched == 0
    assert backend_agreement(reference, candidate, same_class=False).matched == 3


def test_a_candidate_box_matches_only_once():
    agreement = backend_agreement([[box(1, 0.9, 0), box(1, 0.9, 1)]], [[box(1, 0.9, 0)]])
    assert (agreement.reference_boxes, agreement.matched) == (2, 1)
    assert backend_agreement([[]], [[box(1, 0.9, 0)]]).share == 1.0
