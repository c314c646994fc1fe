"""Calibration inputs for an INT8 TFLite model: training images from the records, prepared as detect
prepares an image for the float TFLite model (TF's legacy bilinear resize, then pixel * scale + offset)."""

from __future__ import annotations

import glob
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from chestdet.core.errors import ExportError
from chestdet.export.backends import legacy_bilinear_resize

DEFAULT_CALIBRATION_IMAGES = 300


def train_records(configs: dict) -> list[str]:
    """The record patterns of the config's train_input_reader."""
    return list(configs["train_input_config"].tf_record_input_reader.input_path)


def record_files(patterns: Sequence[str | Path]) -> list[Path]:
    """The files the patterns name (globs allowed), sorted; ExportError when there are none."""
    files = sorted({Path(match) for pattern in patterns for match in glob.glob(str(pattern))})
    if not files:
        shown = ", ".join(str(p) for p in patterns) or "(none in the config)"
        raise ExportError(f"INT8 calibration needs training records; none found at {shown} "
                          "(pass --calibration-records)")
    return files


def calibration_images(files: Sequence[Path], count: int) -> Iterator[np.ndarray]:
    """The first `count` images of the records, in file order, as RGB uint8."""
    import tensorflow as tf

    for raw in tf.data.TFRecordDataset([str(f) for f in files]).take(count):
        example = tf.train.Example.FromString(raw.numpy())
        encoded = example.features.feature["image/encoded"].bytes_list.value[0]
        bgr = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR)
        if bgr is not None:
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class CalibrationInputs:
    """Called, the TFLite model's float input, [height, width, 3], for each of the first `count` images
    of the records; `used` counts those given, and `record()` is what export.json says of them."""

    def __init__(self, files: Sequence[Path], count: int, height: int, width: int, scale: float,
                 offset: float) -> None:
        self.files, self.count, self.used = list(files), count, 0
        self._size, self._scaling = (height, width), (np.float32(scale), np.float32(offset))

    def __call__(self) -> Iterator[np.ndarray]:
        self.used = 0
        for rgb in calibration_images(self.files, self.count):
            self.used += 1
            yield legacy_bilinear_resize(rgb, *self._size) * self._scaling[0] + self._scaling[1]

    def record(self) -> dict:
        return {"records": [str(f) for f in self.files], "images": self.used}
