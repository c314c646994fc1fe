"""Explanations without a trained model: matching boxes to anchors, finishing maps, panels, the files written."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from chestdet.core.contracts import EXPLAIN_ARRAYS
from chestdet.core.labels import class_colour
from chestdet.detection.drawing import HEAT_OPACITY, group_panels, heatmap_size, render_explanation
from chestdet.detection.explain import HEATMAP_MAX_SIDE, Explanation, explain_paths, image_stem, write_explanation
from chestdet.detection.gradcam import MATCH_MIN_IOU, SAME_BOX_IOU, best_anchors, finish_heatmap, normalised_boxes
from chestdet.export.backends import Detection

CLASS_NAMES = {1: "Atelectasis", 2: "Cardiomegaly", 5: "Mass"}


def best_of(boxes, classes, decoded, scores) -> tuple[list[int], np.ndarray]:  # noqa: ANN001
    chosen, overlaps = best_anchors(np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int32),
                                    np.array(decoded, np.float32), np.array(scores, np.float32))
    return chosen.numpy().tolist(), overlaps.numpy()


# Anchors 0-3: 0 and 1 decode near the left box, 2 near the right box, 3 far from both.
DECODED = [[0.1, 0.1, 0.5, 0.5], [0.12, 0.1, 0.5, 0.52], [0.1, 0.6, 0.5, 0.9], [0.8, 0.8, 0.95, 0.95]]
SCORES = [[0.9, 0.2, 0.1, 0.0], [0.9, 0.1, 0.6, 0.0], [0.9, 0.3, 0.1, 0.0], [0.9, 0.9, 0.9, 0.0]]


def test_a_box_takes_the_overlapping_anchor_that_scores_its_class_highest_else_none():
    boxes = [[0.1, 0.12, 0.5, 0.48], [0.1, 0.12, 0.5, 0.48], [0.11, 0.6, 0.5, 0.9], [0.3, 0.3, 0.35, 0.35]]
    chosen, overlaps = best_of(boxes, [2, 1, 1, 2], DECODED, SCORES)
    # Anchors 0 and 1 both overlap the left box by 0.5-0.9; for class 2 anchor 1 scores 0.6 against
    # 0.1, for class 1 anchor 0 scores 0.2 against 0.1. Anchor 3 scores class 2 highest of all but
    # overlaps nothing.
    assert chosen == [1, 0, 2, -1]
    assert MATCH_MIN_IOU <= overlaps[0, :2].min() and overlaps[0, :2].max() < SAME_BOX_IOU
    assert overlaps.shape == (4, 4)
    assert overlaps[1, 0] == pytest.approx(0.144 / 0.16, rel=1e-5)
    assert overlaps[3].max() < MATCH_MIN_IOU  # a box no decoded box overlaps by MATCH_MIN_IOU
    assert best_of([], [], DECODED, SCORES)[0] == []


def test_the_anchor_decoding_to_the_same_box_wins_over_a_better_scoring_neighbour():
    """Two detections of one class overlapping by 0.6 both survive NMS (its threshold is 0.6): each box
    takes its own anchor, not the neighbour that scores higher."""
    decoded = [[0.1, 0.1, 0.5, 0.5], [0.1, 0.2, 0.5, 0.6], [0.1, 0.1, 0.5, 0.6]]
    scores = [[0.0, 0.5], [0.0, 0.9], [0.0, 0.95]]
    chosen, overlaps = best_of([[0.1, 0.1, 0.5, 0.5]], [1], decoded, scores)
    assert overlaps[0, 1] == pytest.approx(0.6) and overlaps[0, 2] < SAME_BOX_IOU
    assert chosen == [0]
    assert best_of([[0.1, 0.15, 0.5, 0.55]], [1], decoded, scores)[0] == [2]  # no same box: the best near one


def test_the_closest_anchor_wins_over_a_near_copy_that_scores_higher():
    """Seen on a trained model: anchor 1 decodes to nearly the detection's box (IoU 0.92) and scores its
    class higher than the detection's own anchor 0, but NMS suppressed it through box 2, which scores
    higher still and overlaps the detection by less than 0.6. The detection's anchor is 0."""
    decoded = [[0.24, 0.15, 0.94, 0.83], [0.26, 0.16, 0.92, 0.83], [0.40, 0.17, 0.83, 0.83]]
    scores = [[0.0, 0.427], [0.0, 0.442], [0.0, 0.453]]
    chosen, overlaps = best_of([[0.24, 0.15, 0.94, 0.83]], [1], decoded, scores)
    assert overlaps[0, 1] >= SAME_BOX_IOU and overlaps[0, 2] < 0.6
    assert chosen == [0]


def test_the_background_column_comes_first_so_a_class_is_its_label_map_id():
    scores = [[0.0, 0.9, 0.1], [0.0, 0.1, 0.9]]
    decoded = [[0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.5, 0.5]]
    assert best_of([[0.1, 0.1, 0.5, 0.5]] * 2, [1, 2], decoded, scores)[0] == [0, 1]


def test_the_model_decodes_and_scores_the_anchors_as_its_postprocess_does(tiny_ssd):  # noqa: ANN001
    """GradCam decodes with the config's box coder and scores with its score converter, outside
    `predict`: the same raw boxes (clipped) and raw scores as the model's own postprocess."""
    import tensorflow as tf

    from chestdet.core import compat
    from chestdet.detection.gradcam import GradCam

    model, configs, blank = tiny_ssd
    grad_cam = GradCam(model, configs, blank)
    images, shapes = model.preprocess(tf.random.stateless_uniform([1, 128, 128, 3], [3, 4], maxval=255.0))
    found = model.postprocess(model.predict(images, shapes), shapes)
    predictions = compat.ssd_box_predictions(model, compat.ssd_feature_maps(model, images))
    encodings = tf.reshape(tf.concat(predictions["box_encodings"], axis=1)[0], [-1, 4])
    np.testing.assert_allclose(grad_cam._decoded_boxes(encodings).numpy(),
                               np.clip(found["raw_detection_boxes"][0].numpy(), 0.0, 1.0), atol=1e-5)
    logits = tf.concat(predictions["class_predictions_with_background"], axis=1)
    np.testing.assert_allclose(grad_cam.score_converter(logits)[0].numpy(), found["raw_detection_scores"][0].numpy(),
                               atol=1e-5)
    assert grad_cam.levels.shape == (int(grad_cam.anchor_boxes.shape[0]),)
    assert sorted(set(grad_cam.levels.tolist())) == [0, 1, 2, 3, 4]


def test_boxes_are_normalised_as_ymin_xmin_ymax_xmax():
    boxes = normalised_boxes([Detection(1, 0.9, 10, 20, 30, 60)], height=100, width=50)
    np.testing.assert_allclose(boxes, [[0.2, 0.2, 0.6, 0.6]])
    assert normalised_boxes([], 10, 10).shape == (0, 4)


def test_a_finished_heatmap_is_upsampled_in_place_and_scaled_to_0_1():
    cam = np.zeros((4, 4), np.float32)
    cam[0, 3] = 5.0  # top right cell
    heat = finish_heatmap(cam, (64, 32))
    assert heat.shape == (64, 32) and heat.dtype == np.float32
    assert heat.min() >= 0.0 and heat.max() == pytest.approx(1.0)
    y, x = np.unravel_index(heat.argmax(), heat.shape)
    assert y < 16 and x >= 24  # still the top right quarter
    assert not finish_heatmap(np.zeros((4, 4)), (8, 8)).any()  # nothing left by the ReLU stays nothing


def test_heatmaps_keep_the_aspect_ratio_and_are_never_enlarged():
    assert heatmap_size(1024, 1024, HEATMAP_MAX_SIDE) == (256, 256)
    assert heatmap_size(2000, 1000, HEATMAP_MAX_SIDE) == (256, 128)
    assert heatmap_size(100, 60, HEATMAP_MAX_SIDE) == (100, 60)


def test_overlapping_boxes_get_their_own_panels_and_the_others_share_the_best_ones():
    detections = [
        Detection(1, 0.5, 0, 0, 10, 10),
        Detection(2, 0.9, 5, 5, 15, 15),  # overlaps the first
        Detection(5, 0.7, 20, 20, 30, 30),  # overlaps nothing
        Detection(5, 0.6, 10, 0, 20, 4),  # touches the first's edge only: no overlap
    ]
    assert group_panels(detections) == [[1, 2, 3], [0]]
    assert group_panels([]) == []


def test_paths_mirror_the_input_folders_without_the_suffix(tmp_path: Path):
    assert image_stem("sub dir/00001.png") == "sub dir/00001"
    assert image_stem("/abs/x.dcm") == "abs/x"
    png, npz = explain_paths(tmp_path, "sub dir/00001")
    assert png == tmp_path / "explain" / "sub dir" / "00001.png"
    assert npz == tmp_path / "explain" / "sub dir" / "00001.npz"
    png, _ = explain_paths(tmp_path, "a.b")  # a stem with a dot keeps it
    assert png.name == "a.b.png"


def explanation_of(detections: list[Detection], size: tuple[int, int]) -> Explanation:
    """Heatmaps hot at each box's centre, as a model that looked at the box would give."""
    height, width = heatmap_size(*size, HEATMAP_MAX_SIDE)
    heatmaps = np.zeros((len(detections), height, width), np.float32)
    for i, d in enumerate(detections):
        cx, cy = (d.xmin + d.xmax) / 2 * width / size[1], (d.ymin + d.ymax) / 2 * height / size[0]
        yy, xx = np.mgrid[:height, :width]
        heatmaps[i] = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 50.0)
    n = len(detections)
    return Explanation(tuple(detections), heatmaps, np.arange(n, dtype=np.int32), np.zeros(n, np.int32),
                       np.ones(n, np.float32), size)


def test_the_files_hold_the_arrays_and_a_picture_in_the_boxes_colours(tmp_path: Path):
    pixels = np.full((300, 400), 100, np.uint8)
    detections = [Detection(2, 0.9, 20, 30, 120, 130), Detection(5, 0.6, 60, 60, 200, 200),
                  Detection(1, 0.4, 250, 150, 380, 280)]
    explanation = explanation_of(detections, (300, 400))
    png, npz = write_explanation(tmp_path, "sub/image one", pixels, explanation, CLASS_NAMES)
    assert png == tmp_path / "explain" / "sub" / "image one.png" and npz.with_suffix(".png") == png
    assert sorted(p.name for p in png.parent.iterdir()) == ["image one.npz", "image one.png"]  # no temporaries

    with np.load(npz) as arrays:
        assert sorted(arrays.files) == sorted(EXPLAIN_ARRAYS)
        assert arrays["heatmaps"].shape == (3, 192, 256) and arrays["heatmaps"].dtype == np.float32
        assert 0.0 <= arrays["heatmaps"].min() and arrays["heatmaps"].max() <= 1.0
        np.testing.assert_allclose(arrays["boxes"], [[20, 30, 120, 130], [60, 60, 200, 200], [250, 150, 380, 280]])
        np.testing.assert_allclose(arrays["scores"], [0.9, 0.6, 0.4])
        assert arrays["classes"].tolist() == [2, 5, 1] and arrays["image_size"].tolist() == [300, 400]

    picture = cv2.imread(str(png), cv2.IMREAD_COLOR)
    # Two panels (the first two boxes overlap), side by side, each the image's size (under 512).
    assert picture.shape == (300, 2 * 400 + 8, 3)
    for panel_left, detection in ((0, detections[0]), (408, detections[1]), (0, detections[2])):
        cx, cy = int((detection.xmin + detection.xmax) / 2), int((detection.ymin + detection.ymax) / 2)
        expected = (1 - HEAT_OPACITY) * 100 + HEAT_OPACITY * np.array(class_colour(detection.class_id))
        np.testing.assert_allclose(picture[cy, panel_left + cx][::-1], expected, atol=3)
    assert (picture[5, 5] == 100).all()  # no heat far from every box: the film as it was


def test_a_large_image_is_drawn_in_smaller_panels_in_rows_of_three(tmp_path: Path):
    pixels = np.zeros((1024, 2048, 3), np.uint8)
    detections = [Detection(1, 0.9 - i / 10, 100, 100, 600, 600) for i in range(4)]  # all overlap
    explanation = explanation_of(detections, (1024, 2048))
    png = render_explanation(pixels, explanation.detections, explanation.heatmaps, CLASS_NAMES)
    picture = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert picture.shape == (2 * 256 + 8, 3 * 512 + 2 * 8, 3)


THREADS_PROBE = """
import contextlib, sys
import tensorflow as tf
from chestdet.detection import explain
if sys.argv[1] == "late":
    tf.constant(1.0) + 1.0  # TensorFlow has run an op: its thread pools exist
print(explain.one_thread_per_pass(), tf.config.threading.get_intra_op_parallelism_threads(),
      isinstance(explain._pass_guard(), contextlib.nullcontext))
"""


@pytest.mark.parametrize(("when", "expected"), [("early", "True 1 True"), ("late", "False 0 False")])
def test_passes_run_one_thread_each_side_by_side_only_if_set_before_tensorflow_starts(when: str, expected: str):
    """Single-threaded passes need no lock; passes over every core take turns."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    result = subprocess.run([sys.executable, "-c", THREADS_PROBE, when], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    assert result.stdout.split("\n")[-2] == expected, result.stdout + result.stderr
