"""Every workaround this project needs to run the OD API on its pinned stack, in one place.

Quiet consoles (`quiet`): TensorFlow 2.15 logs "Unable to register cuDNN/cuFFT/cuBLAS factory" at
ERROR level on every import, GPU or not (tensorflow/tensorflow#62075), so its C++ log level is set
to 3 before TensorFlow is imported; and the known third-party warnings below are filtered here and
nowhere else. `-v` shows everything again (`quiet(verbose=True)`).

tf_slim's TfExampleDecoder (used by the OD API to parse records) calls
`control_flow_ops.case` and `control_flow_ops.cond`, which TensorFlow 2.15 removed from
`tensorflow.python.ops.control_flow_ops`: the first training step dies with AttributeError.
Upstream: https://github.com/google-research/tf-slim/issues (tf_slim/data/tfexample_decoder.py),
tensorflow/models#11165. Remove once tf-slim calls tf.case / tf.cond itself;
tests/core/test_compat.py fails when that day comes.

model_lib_v2.train_loop goes on training, and saving checkpoints of NaN weights, when the loss becomes
NaN or infinite; and it reports the loss only every 100 steps. `patch_train_step` wraps the
`eager_train_step` it calls by name: the step fails on a non-finite total loss, and can print each
step's number and total loss for the training supervisor's progress line. tests/core/test_train_step.py
fails when the OD API stops on a non-finite loss itself or no longer calls `eager_train_step`.

The two halves of an SSD's `predict` (`ssd_feature_maps`, `ssd_box_predictions`): Grad-CAM of N
boxes runs the box predictor on N copies of one image's feature maps, and `predict` runs only both
halves together. They are SSDMetaArch's private `_feature_extractor` and `_box_predictor`;
tests/core/test_compat.py checks that the two composed still give what `predict` gives.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

_applied = False

TF_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL"
# 3: errors too, which hides the import-time factory lines; a real failure still raises in Python.
QUIET_TF_LOG_LEVEL = "3"
# (category, start of the message, module that warns): what the pinned stack says on every command.
KNOWN_WARNINGS: tuple[tuple[type[Warning], str, str], ...] = (
    # google-api-core (pulled in by tensorflow-datasets and apache-beam) about Python 3.11's end of life.
    (FutureWarning, "You are using a Python version", r"google\.api_core\..*"),
)


def quiet(verbose: bool = False) -> None:
    """Set TensorFlow's C++ log level (before its import) and filter KNOWN_WARNINGS; verbose undoes both.

    An explicit TF_CPP_MIN_LOG_LEVEL in the environment is left as it is unless verbose.
    """
    if verbose:
        os.environ[TF_LOG_LEVEL] = "0"
        for category, message, module in KNOWN_WARNINGS:
            warnings.filterwarnings("default", message=message, category=category, module=module)
        return
    os.environ.setdefault(TF_LOG_LEVEL, QUIET_TF_LOG_LEVEL)
    for category, message, module in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


def tf_slim_needs_control_flow_shim() -> bool:
    """True while TF lacks the names tf_slim's decoder uses."""
    from tensorflow.python.ops import control_flow_ops

    return not (hasattr(control_flow_ops, "case") and hasattr(control_flow_ops, "cond"))


def apply() -> None:
    """Install the shim; idempotent. Call before the OD API builds an input pipeline."""
    global _applied
    if _applied:
        return
    import tensorflow as tf
    from tensorflow.python.ops import control_flow_ops

    if not hasattr(control_flow_ops, "case"):
        control_flow_ops.case = tf.case
    if not hasattr(control_flow_ops, "cond"):
        control_flow_ops.cond = tf.cond
    _applied = True


NON_FINITE_MESSAGE = "the training loss became NaN or infinite"
# A training child prints "<STEP_REPORT> <step> <total loss>" on stderr after each step (patch_train_step).
STEP_REPORT = "chestdet-step"


def patch_train_step(model_lib_v2: Any, report_steps: bool = False) -> None:
    """Wrap model_lib_v2.eager_train_step: fail on a NaN or infinite total loss; with `report_steps`,
    print each step's number and total loss (STEP_REPORT) on stderr. Idempotent.

    The failure (tf.errors.InvalidArgumentError naming NON_FINITE_MESSAGE) ends train_loop's chunk
    before its next save, so the last checkpoint on disk stays the last good one. The report is one
    small op per step inside train_loop's tf.function, printed by the first replica only.
    """
    import tensorflow as tf

    original = model_lib_v2.eager_train_step
    if getattr(original, "patched_by_chestdet", False):
        return

    def train_step(*args: Any, **kwargs: Any) -> dict:
        losses = original(*args, **kwargs)
        total = tf.debugging.check_numerics(losses["Loss/total_loss"], NON_FINITE_MESSAGE)
        losses["Loss/total_loss"] = total
        step = kwargs.get("training_step")  # train_loop's global step, which it counts up after this returns
        if report_steps and step is not None and _first_replica():
            tf.print(STEP_REPORT, step + 1, total, output_stream=sys.stderr)
        return losses

    train_step.patched_by_chestdet = True
    model_lib_v2.eager_train_step = train_step


def _first_replica() -> bool:
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    replica = tf.get_static_value(context.replica_id_in_sync_group) if context is not None else 0
    return replica in (0, None)


def ssd_feature_maps(model, images):  # noqa: ANN001, ANN201 - an OD API SSDMetaArch (Keras), tensors
    """The feature maps an SSD's `predict` hands its box predictor, for preprocessed `images`."""
    return model._feature_extractor(images)


def ssd_box_predictions(model, feature_maps):  # noqa: ANN001, ANN201 - an OD API SSDMetaArch (Keras), tensors
    """The SSD's box predictor on `feature_maps`: per output, one tensor per level, which `predict`
    concatenates along the anchors (class_predictions_with_background, box_encodings)."""
    return model._box_predictor(feature_maps)
