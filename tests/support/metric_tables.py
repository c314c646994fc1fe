"""The metrics' ground-truth and detection tables built from rows, and random cases of them, for the
evaluation tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from chestdet.core.labels import CLASS_NAMES
from chestdet.evaluation.boxes import BOX_COLUMNS, DETECTION_TABLE_COLUMNS, GROUND_TRUTH_COLUMNS


def gt(*rows) -> pd.DataFrame:
    """rows: (image, label, xmin, ymin, xmax, ymax)"""
    return pd.DataFrame(rows, columns=GROUND_TRUTH_COLUMNS).astype({c: float for c in BOX_COLUMNS})


def det(*rows) -> pd.DataFrame:
    """rows: (image, label, score, xmin, ymin, xmax, ymax)"""
    return pd.DataFrame(rows, columns=DETECTION_TABLE_COLUMNS).astype({c: float for c in ["score", *BOX_COLUMNS]})


def random_case(seed: int, images: int = 12) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Random boxes of 4 classes on `images` images, jittered detections of them (some of another
    class) and stray detections."""
    rng = np.random.default_rng(seed)
    names = [f"img{k:03d}.png" for k in range(images)]
    truth_rows, det_rows = [], []
    for name in names:
        for _ in range(rng.integers(0, 4)):
            label = CLASS_NAMES[rng.integers(0, 4)]
            x, y = rng.uniform(0, 800, 2)
            w, h = rng.uniform(20, 200, 2)
            truth_rows.append((name, label, x, y, x + w, y + h))
            for _ in range(rng.integers(0, 3)):  # perturbed detections, sometimes of another class
                jitter = rng.normal(0, 0.15 * min(w, h), 4)
                other = CLASS_NAMES[rng.integers(0, 4)] if rng.random() < 0.2 else label
                det_rows.append((name, other, rng.random(), x + jitter[0], y + jitter[1],
                                 x + w + jitter[2], y + h + jitter[3]))
        for _ in range(rng.integers(0, 3)):  # stray detections
            x, y = rng.uniform(0, 900, 2)
            det_rows.append((name, CLASS_NAMES[rng.integers(0, 4)], rng.random(), x, y, x + 60, y + 60))
    return gt(*truth_rows), det(*det_rows), names
