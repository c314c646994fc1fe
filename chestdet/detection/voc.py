"""Pascal VOC XML of detections, as labelImg writes it, so a reader can correct them there."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from lxml import etree

from chestdet.core.detections import Detection


def voc_xml(
    image_path: Path, width: int, height: int, depth: int,
    detections: Sequence[Detection], class_names: Mapping[int, str],
) -> bytes:
    """A Pascal VOC annotation as labelImg writes it (integer pixel corners, not verified).

    `<path>` and `<folder>` are the image's path as given, made absolute but never resolved through
    a symlink: a per-file link (DVC, git-annex, DataLad) names the user's file, not its store.
    """
    written = Path(os.path.abspath(image_path))
    root = etree.Element("annotation")
    _sub(root, "folder", written.parent.name)
    _sub(root, "filename", written.name)
    _sub(root, "path", str(written))
    _sub(_sub(root, "source"), "database", "chestdet detections")
    size = _sub(root, "size")
    for tag, value in (("width", width), ("height", height), ("depth", depth)):
        _sub(size, tag, str(value))
    _sub(root, "segmented", "0")
    for det in detections:
        xmin, xmax = (int(np.clip(round(v), 0, width)) for v in (det.xmin, det.xmax))
        ymin, ymax = (int(np.clip(round(v), 0, height)) for v in (det.ymin, det.ymax))
        obj = _sub(root, "object")
        _sub(obj, "name", class_names.get(det.class_id, f"class {det.class_id}"))
        _sub(obj, "pose", "Unspecified")
        touches_edge = xmin <= 1 or ymin <= 1 or xmax >= width or ymax >= height
        _sub(obj, "truncated", "1" if touches_edge else "0")
        _sub(obj, "difficult", "0")
        box = _sub(obj, "bndbox")
        for tag, value in (("xmin", xmin), ("ymin", ymin), ("xmax", xmax), ("ymax", ymax)):
            _sub(box, tag, str(value))
    return etree.tostring(root, pretty_print=True, encoding="utf-8")


def _sub(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
    element = etree.SubElement(parent, tag)
    if text is not None:
        element.text = text
    return element
