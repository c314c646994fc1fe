"""Draw detections on an X-ray so a reader can review them, and encode the result; evaluation's error
gallery draws its dashed ground truth and encodes with the same functions.

OpenCV rather than the OD API's visualization_utils: its labels fall back to PIL's 11-pixel bitmap
font when arial.ttf is absent (it is, on Linux), unreadable on a 1024x1024 film, and it draws through
PIL at a fraction of OpenCV's speed. Line width and text size scale with the image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from chestdet.core.detections import Detection
from chestdet.core.labels import class_colour

FONT = cv2.FONT_HERSHEY_SIMPLEX
FORMATS = ("jpg", "png")
JPEG_QUALITY = 90


def render(
    pixels: np.ndarray, detections: Sequence[Detection], class_names: Mapping[int, str], fmt: str
) -> bytes:
    """Draw the detections on a copy of `pixels` and encode it as `fmt` (jpg or png), colour always."""
    return encode_bgr(draw_detections_bgr(pixels, detections, class_names), fmt)


def draw_detections_bgr(
    pixels: np.ndarray, detections: Sequence[Detection], class_names: Mapping[int, str]
) -> np.ndarray:
    """Return a BGR copy of `pixels` ((H, W) gray or (H, W, 3) RGB) with each detection's box and label.

    BGR because that is what OpenCV encodes: drawing in it saves converting the whole picture twice
    (the anti-aliased drawing is per channel, so the pixels equal an RGB drawing's, channels swapped).
    Lower-scoring boxes are drawn first so the best ones stay on top.
    """
    canvas = cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR if pixels.ndim == 2 else cv2.COLOR_RGB2BGR)
    height, width = canvas.shape[:2]
    line = max(2, round(min(height, width) / 350))
    font_scale = max(0.5, min(height, width) / 1400)
    text_thickness = max(1, line - 1)
    for det in sorted(detections, key=lambda d: d.score):
        colour = class_colour(det.class_id)[::-1]
        top_left = (int(round(det.xmin)), int(round(det.ymin)))
        bottom_right = (int(round(det.xmax)), int(round(det.ymax)))
        cv2.rectangle(canvas, top_left, bottom_right, colour, line, cv2.LINE_AA)
        label = f"{class_names.get(det.class_id, f'class {det.class_id}')} {det.score:.2f}"
        _draw_label(canvas, label, top_left, colour, font_scale, text_thickness)
    return canvas


def _draw_label(
    canvas: np.ndarray, text: str, corner: tuple[int, int], colour: tuple[int, int, int],
    scale: float, thickness: int,
) -> None:
    """A filled tag above the box's top-left corner (inside the box when there is no room above)."""
    (text_w, text_h), baseline = cv2.getTextSize(text, FONT, scale, thickness)
    pad = max(2, thickness)
    tag_h = text_h + baseline + 2 * pad
    x = min(max(corner[0], 0), max(canvas.shape[1] - text_w - 2 * pad, 0))
    y_top = corner[1] - tag_h if corner[1] - tag_h >= 0 else max(corner[1], 0)
    cv2.rectangle(canvas, (x, y_top), (x + text_w + 2 * pad, y_top + tag_h), colour, cv2.FILLED)
    ink = (0, 0, 0) if sum(colour) > 380 else (255, 255, 255)
    cv2.putText(canvas, text, (x + pad, y_top + pad + text_h), FONT, scale, ink, thickness, cv2.LINE_AA)


def encode_bgr(bgr: np.ndarray, fmt: str) -> bytes:
    """BGR array -> JPEG (quality 90) or PNG bytes."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown image format {fmt!r}; expected one of {', '.join(FORMATS)}")
    # PNG: OpenCV's own defaults, tuned for speed (the SUB filter, zlib level 1, RLE): on explanation
    # panels a third faster to encode than level 1 with every filter, for files a third larger.
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if fmt == "jpg" else []
    ok, data = cv2.imencode(f".{fmt}", bgr, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {bgr.shape} image as {fmt}")
    return data.tobytes()


# ---------------------------------------------------------------- explanations (detect --explain)


def heatmap_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(h, w) of the image scaled so that its longer side is at most `max_side`, never enlarged."""
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


PANEL_MAX_SIDE = 512  # each panel of an explanation's .png
HEAT_OPACITY = 0.6  # a pixel of heat 1 is this much its box's colour, the rest film


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


def render_explanation(pixels: np.ndarray, detections: Sequence[Detection], heatmaps: np.ndarray,
                       class_names: Mapping[int, str]) -> bytes:
    """PNG of one panel per group of non-overlapping boxes (up to 3 side by side, then more rows).

    In a panel each pixel takes the colour of the box whose heatmap is strongest there (the box's
    class colour, as in drawn/), as opaque as that heat; the boxes and their labels are drawn on top.
    """
    height, width = pixels.shape[:2]
    size = heatmap_size(height, width, PANEL_MAX_SIDE)
    film = cv2.resize(pixels, (size[1], size[0]), interpolation=cv2.INTER_AREA).astype(np.float32)
    heat = np.stack([cv2.resize(heatmap, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
                     for heatmap in heatmaps])
    scale_y, scale_x = size[0] / height, size[1] / width
    boxes = [_scaled(d, scale_x, scale_y) for d in detections]
    panels = [_panel(film, heat[members], [boxes[i] for i in members], class_names)
              for members in group_panels(detections)]
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


def dashed_rectangle(canvas: np.ndarray, box: Sequence[float], colour: tuple[int, int, int], thickness: int,
                     dash: int) -> None:
    """A rectangle of dashes `dash` pixels long with gaps as long, drawn in place."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    for (ax, ay), (bx, by) in (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))):
        length = max(abs(bx - ax), abs(by - ay))
        for start in range(0, length + 1, 2 * dash):
            end = min(start + dash, length)
            f0, f1 = start / max(length, 1), end / max(length, 1)
            p0 = (int(round(ax + (bx - ax) * f0)), int(round(ay + (by - ay) * f0)))
            p1 = (int(round(ax + (bx - ax) * f1)), int(round(ay + (by - ay) * f1)))
            cv2.line(canvas, p0, p1, colour, thickness, cv2.LINE_8)
