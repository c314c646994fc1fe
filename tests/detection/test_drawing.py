"""Boxes drawn on an X-ray for a reader: class colours at the box's pixels, labels with names and scores, the
picture encoded as JPEG or PNG, from gray or RGB pixels."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from chestdet.core.detections import Detection
from chestdet.core.labels import class_colour
from chestdet.detection.drawing import FORMATS, HEAT_OPACITY, draw_detections_bgr, render, render_explanation
from tests.support.results import CLASS_NAMES

GRAY = 60
RGB = (200, 40, 90)


def film(kind: str, height: int = 300, width: int = 400) -> np.ndarray:
    if kind == "gray":
        return np.full((height, width), GRAY, np.uint8)
    return np.broadcast_to(np.array(RGB, np.uint8), (height, width, 3)).copy()


def background(kind: str) -> tuple[int, int, int]:
    return (GRAY,) * 3 if kind == "gray" else RGB


def decode_rgb(data: bytes) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def drawn_rgb(pixels: np.ndarray, detections: list[Detection], class_names=CLASS_NAMES) -> np.ndarray:
    return cv2.cvtColor(draw_detections_bgr(pixels, detections, class_names), cv2.COLOR_BGR2RGB)


def tag_columns(picture: np.ndarray, box: Detection, kind: str) -> np.ndarray:
    """Columns of the band just above the box that differ from the film: where its label is."""
    band = picture[max(0, int(box.ymin) - 30): int(box.ymin) - 3]
    return np.nonzero(np.any(band != np.array(background(kind)), axis=(0, 2)))[0]


@pytest.mark.parametrize("kind", ["gray", "rgb"])
def test_each_box_is_drawn_on_its_edges_in_its_class_colour_and_the_film_is_kept_elsewhere(kind: str):
    pixels = film(kind)
    before = pixels.copy()
    boxes = [Detection(2, 0.9, 40, 80, 170, 250), Detection(5, 0.6, 220, 120, 380, 280)]
    picture = decode_rgb(render(pixels, boxes, CLASS_NAMES, "png"))
    assert picture.shape == (300, 400, 3)
    for box in boxes:
        colour = class_colour(box.class_id)
        mid_x, mid_y = int((box.xmin + box.xmax) / 2), int((box.ymin + box.ymax) / 2)
        for y, x in ((mid_y, box.xmin), (mid_y, box.xmax), (box.ymax, mid_x), (box.ymin + 20, box.xmin)):
            assert tuple(picture[int(y), int(x)]) == colour, (box.class_id, y, x)
        assert tuple(picture[mid_y, mid_x]) == background(kind), "the inside of a box is left as it was"
    assert tuple(picture[5, 395]) == tuple(picture[295, 5]) == background(kind)
    np.testing.assert_array_equal(pixels, before)  # drawn on a copy


def test_boxes_at_fractional_pixels_are_drawn_at_the_nearest_pixel():
    picture = drawn_rgb(film("gray"), [Detection(1, 0.9, 59.6, 100.4, 200.5, 240.49)])
    colour = class_colour(1)
    assert tuple(picture[170, 60]) == colour and tuple(picture[170, 200]) == colour
    assert tuple(picture[240, 130]) == colour


@pytest.mark.parametrize("kind", ["gray", "rgb"])
def test_a_label_in_the_class_colour_sits_on_the_boxs_top_left_corner(kind: str):
    box = Detection(6, 0.9, 100, 120, 300, 260)
    picture = drawn_rgb(film(kind), [box])
    colour = np.array(class_colour(6))
    rows, columns = np.nonzero(np.all(picture[: int(box.ymin) - 2] == colour, axis=2))
    assert rows.size and columns.min() == box.xmin, "the tag starts at the box's left edge"
    assert rows.max() >= box.ymin - 4 and rows.min() >= box.ymin - 40, "and sits right above it"
    tag = picture[rows.min(): rows.max() + 1, columns.min(): columns.max() + 1]
    assert tag.shape[1] > 40
    filled = np.all(tag == colour, axis=2).mean()
    ink = (np.abs(tag.astype(int) - colour).sum(axis=2) > 150).mean()
    assert filled > 0.5 and ink > 0.05, "a filled tag in the class colour, with text in a contrasting ink"


def test_the_label_names_the_class_and_shows_the_score():
    box = Detection(8, 0.87, 40, 100, 360, 250)
    short = drawn_rgb(film("gray"), [box], {8: "Mass"})
    long = drawn_rgb(film("gray"), [box], {8: "Pneumothorax, large"})
    assert tag_columns(long, box, "gray").size > tag_columns(short, box, "gray").size + 40

    other_score = drawn_rgb(film("gray"), [Detection(8, 0.12, 40, 100, 360, 250)], {8: "Mass"})
    changed = np.nonzero(np.any(other_score != short, axis=(1, 2)))[0]
    assert changed.size and changed.max() < box.ymin, "only the label differs between scores 0.87 and 0.12"

    unknown = drawn_rgb(film("gray"), [box], {})
    np.testing.assert_array_equal(unknown, drawn_rgb(film("gray"), [box], {8: "class 8"}))


def test_a_label_at_the_images_edges_is_moved_inside_whole():
    name = {3: "Effusion, right side"}
    free = Detection(3, 0.5, 50, 150, 150, 250)
    width = tag_columns(drawn_rgb(film("gray"), [free], name), free, "gray").size

    right = Detection(3, 0.5, 340, 150, 399, 250)
    columns = tag_columns(drawn_rgb(film("gray"), [right], name), right, "gray")
    assert abs(columns.size - width) <= 1 and columns.max() <= 399 and columns.min() < right.xmin  # less a pad pixel

    top = Detection(3, 0.5, 50, 0, 150, 100)  # no room above: the tag goes inside the box
    picture = drawn_rgb(film("gray"), [top], name)
    inside = picture[3:12, 55:55 + width // 2]
    assert np.all(inside == np.array(class_colour(3)), axis=2).mean() > 0.5


def test_the_best_scoring_box_is_drawn_on_top_whatever_the_order():
    weak, strong = Detection(1, 0.35, 100, 100, 250, 250), Detection(4, 0.95, 100, 130, 220, 280)
    for order in ([weak, strong], [strong, weak]):
        picture = drawn_rgb(film("gray"), order)
        assert tuple(picture[180, 100]) == class_colour(4)  # the shared left edge


def test_lines_grow_with_the_image_so_they_stay_visible_on_a_full_size_film():
    def line_width(size: int) -> int:
        box = Detection(2, 0.9, size // 4, size // 4, size // 2, size // 2)
        picture = drawn_rgb(np.zeros((size, size), np.uint8), [box])
        return int(np.all(picture[size * 3 // 8] == np.array(class_colour(2)), axis=1).sum())

    assert line_width(2048) >= 2 * line_width(256) > 0


def test_png_is_the_drawing_exactly_and_jpeg_close_to_it():
    pixels = np.tile(np.arange(400, dtype=np.uint16) % 256, (300, 1)).astype(np.uint8)
    boxes = [Detection(7, 0.8, 30, 40, 200, 220)]
    drawing = drawn_rgb(pixels, boxes)
    png, jpg = render(pixels, boxes, CLASS_NAMES, "png"), render(pixels, boxes, CLASS_NAMES, "jpg")
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and jpg.startswith(b"\xff\xd8\xff")
    np.testing.assert_array_equal(decode_rgb(png), drawing)
    assert np.abs(decode_rgb(jpg).astype(int) - drawing).mean() < 3
    assert set(FORMATS) == {"jpg", "png"}


def test_an_unknown_format_is_refused_naming_the_known_ones():
    with pytest.raises(ValueError, match="unknown image format 'gif'; expected one of jpg, png"):
        render(film("gray"), [], CLASS_NAMES, "gif")


def test_an_image_without_detections_is_the_film_in_colour():
    picture = decode_rgb(render(film("rgb"), [], CLASS_NAMES, "png"))
    assert np.all(picture == np.array(RGB))


def test_an_explanation_of_an_rgb_film_keeps_its_colours_and_tints_by_the_boxs_heat():
    pixels = film("rgb")
    box = Detection(2, 0.9, 100, 100, 200, 200)
    heat = np.zeros((1, 300, 400), np.float32)
    heat[0, 140:160, 140:160] = 1.0
    picture = decode_rgb(render_explanation(pixels, [box], heat, CLASS_NAMES))
    assert picture.shape == (300, 400, 3)
    assert tuple(picture[20, 380]) == RGB, "no heat: the film as it was, channels in their order"
    expected = (1 - HEAT_OPACITY) * np.array(RGB) + HEAT_OPACITY * np.array(class_colour(2))
    np.testing.assert_allclose(picture[150, 150], expected, atol=1)
    assert tuple(picture[150, 100]) == class_colour(2)
