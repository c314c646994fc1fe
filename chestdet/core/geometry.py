"""Box overlap measures shared by the stages: (ymin, xmin, ymax, xmax) arrays, through the OD API's
np_box_ops."""

from __future__ import annotations

import numpy as np
from object_detection.utils import np_box_ops


def pairwise_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """[N, M] IoU of (ymin, xmin, ymax, xmax) boxes; 0 where a union is empty."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.nan_to_num(np_box_ops.iou(boxes_a, boxes_b), nan=0.0, posinf=0.0)


def pairwise_iobb(ground_truth: np.ndarray, detected: np.ndarray) -> np.ndarray:
    """[N_gt, M_det] intersection over the detected box's area (Wang et al. 2017); 0 for empty boxes."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.nan_to_num(np_box_ops.ioa(ground_truth, detected), nan=0.0, posinf=0.0)
