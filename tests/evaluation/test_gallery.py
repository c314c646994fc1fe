"""The error gallery: which cases it picks, and pictures that show both boxes."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

from chestdet.evaluation import gallery
from chestdet.evaluation.boxes import BOX_COLUMNS, DETECTION_TABLE_COLUMNS, DIFFICULT, GROUND_TRUTH_COLUMNS
from chestdet.evaluation.metrics import EvaluationSettings


def truth_table(*rows) -> pd.DataFrame:
    """rows: (image, label, xmin, ymin, xmax, ymax, difficult)"""
    frame = pd.DataFrame(rows, columns=[*GROUND_TRUTH_COLUMNS, DIFFICULT])
    return frame.astype({**{c: float for c in BOX_COLUMNS}, DIFFICULT: bool})


def detection_table(*rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=DETECTION_TABLE_COLUMNS).astype({c: float for c in ["score", *BOX_COLUMNS]})


# a.png: a Mass box hit by the 0.9 detection; a 0.7 detection beside it overlaps it a little (FP,
# IoU 1/7); a difficult Mass box under a 0.95 detection (ignored, not a FP).
# b.png: a Mass box missed (only a 0.2 detection, below the threshold, overlaps it); a large Nodule
# box missed with no detection at all.
TRUTH = truth_table(
    ("a.png", "Mass", 40, 40, 120, 120, False),
    ("a.png", "Mass", 300, 300, 360, 360, True),
    ("b.png", "Mass", 100, 100, 200, 200, False),
    ("b.png", "Nodule", 20, 20, 220, 220, False),
)
DETECTIONS = detection_table(
    ("a.png", "Mass", 0.9, 40, 40, 120, 120),
    ("a.png", "Mass", 0.7, 80, 80, 160, 160),
    ("a.png", "Mass", 0.95, 300, 300, 360, 360),
    ("b.png", "Mass", 0.2, 100, 100, 200, 200),
)
SETTINGS = EvaluationSettings(score_threshold=0.3)


def test_false_positives_are_the_unmatched_detections_highest_score_first():
    cases = gallery.false_positive_cases(TRUTH, DETECTIONS, "Mass", 0.5, count=8)
    assert [(c.image, c.score) for c in cases] == [("a.png", 0.7)]
    assert abs(cases[0].iou - 1600 / (2 * 6400 - 1600)) < 1e-9
    assert cases[0].truth == ((40, 40, 120, 120), (300, 300, 360, 360)) and cases[0].detection == (80, 80, 160, 160)
    assert cases[0].truth_labels == ("Mass", "Mass (difficult)")
    # A Nodule detection exactly on b's Mass box (IoU 0.25 with the Nodule box): a class confusion,
    # drawn with both boxes of the image named.
    confused = gallery.false_positive_cases(TRUTH, detection_table(("b.png", "Nodule", 0.6, 100, 100, 200, 200)),
                                            "Nodule", 0.5, count=8)
    assert [(c.iou, c.truth_labels) for c in confused] == [(0.25, ("Mass", "Nodule"))]



def test_missed_boxes_count_only_detections_above_the_threshold():
    mass = gallery.missed_cases(TRUTH, DETECTIONS, "Mass", SETTINGS, count=8)
    # shown with the detection overlapping it most, though it scores below the threshold
    assert [(c.image, c.score, c.iou) for c in mass] == [("b.png", 0.2, 1.0)]
    nodule = gallery.missed_cases(TRUTH, DETECTIONS, "Nodule", SETTINGS, count=8)
    assert nodule[0].detection is None and nodule[0].caption().startswith("missed Nodule | no detection")
    low = EvaluationSettings(score_threshold=0.1)
    assert gallery.missed_cases(TRUTH, DETECTIONS, "Mass", low, count=8) == []


def write_image(path, size=(512, 512)) -> None:
    cv2.imwrite(str(path), np.full(size, 128, dtype=np.uint8))


def colour_mask(picture: np.ndarray, rgb: tuple[int, int, int]) -> np.ndarray:
    return np.all(picture == np.array(rgb, dtype=np.uint8), axis=2)


def test_gallery_files_show_the_dashed_truth_and_the_solid_detection(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    write_image(images / "a.png")
    write_image(images / "b.png")
    written, notes = gallery.write_gallery(TRUTH, DETECTIONS, SETTINGS, tmp_path / "out",
                                           lambda key: images / key, per_class=8)
    assert notes == []
    assert [p.name for p in written["Mass"]["false-positive"]] == ["false-positive-01.png"]
    assert [p.name for p in written["Mass"]["missed"]] == ["missed-01.png"]
    assert written["Nodule"]["missed"] == [tmp_path / "out" / "gallery" / "Nodule" / "missed-01.png"]
    assert written["Effusion"] == {"false-positive": [], "missed": []}
    picture = cv2.cvtColor(cv2.imread(str(written["Mass"]["false-positive"][0])), cv2.COLOR_BGR2RGB)
    band = picture.shape[0] - 512  # the caption band above the 512x512 image
    assert band > 0 and picture.shape[1] == 512
    body = picture[band:]
    truth, found = colour_mask(body, gallery.TRUTH_RGB), colour_mask(body, gallery.DETECTION_RGB)
    # the detection's solid outline: every pixel of its top edge (x 80..160 at y 80) is red
    assert found[80, 80:161].all()
    # the truth box's top edge (y 40) is dashed: green runs with gaps of film between them
    top = truth[40, 40:121]
    assert 0.3 < top.mean() < 0.8 and (np.diff(top.astype(int)) != 0).sum() >= 4
    assert truth[300, 300:361].any()  # the difficult box of the image is drawn too
    assert (picture[:band] > 200).all(axis=2).any()  # white caption text on the black band


def test_gallery_says_when_images_are_not_found_and_clears_old_pictures(tmp_path):
    out = tmp_path / "out"
    old = out / "gallery" / "Mass" / "missed-07.png"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"old")
    keep = out / "gallery" / "notes.txt"
    keep.write_text("mine")
    gallery.clear_gallery(out)
    assert not old.exists() and keep.exists()
    written, notes = gallery.write_gallery(TRUTH, DETECTIONS, SETTINGS, out, lambda key: None)
    assert all(paths == [] for kinds in written.values() for paths in kinds.values())
    assert notes == ["error gallery: 2 images not found (e.g. a.png); pass --image-dir"]


def test_large_images_are_drawn_smaller_with_boxes_scaled(tmp_path):
    write_image(tmp_path / "b.png", size=(1536, 1536))
    case = gallery.missed_cases(TRUTH, DETECTIONS, "Nodule", SETTINGS, count=1)[0]
    picture = gallery.draw_case(np.full((1536, 1536), 128, dtype=np.uint8), case)
    body = picture[picture.shape[0] - gallery.MAX_SIDE:]
    assert body.shape[:2] == (gallery.MAX_SIDE, gallery.MAX_SIDE)
    truth = colour_mask(body, gallery.TRUTH_RGB)
    rows = np.flatnonzero(truth.any(axis=1))
    assert 7 <= rows.min() <= 10 and 110 <= rows.max() <= 113  # the 20..220 box at half scale, 3-pixel lines
