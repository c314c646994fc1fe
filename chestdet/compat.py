"""Every workaround this project needs to run the OD API on its pinned stack, in one place.

tf_slim's TfExampleDecoder (used by the OD API to parse records) calls
`control_flow_ops.case` and `control_flow_ops.cond`, which TensorFlow 2.15 removed from
`tensorflow.python.ops.control_flow_ops`: the first training step dies with AttributeError.
Upstream: https://github.com/google-research/tf-slim/issues (tf_slim/data/tfexample_decoder.py),
tensorflow/models#11165. Remove once tf-slim calls tf.case / tf.cond itself;
tests/unit/test_compat.py fails when that day comes.
"""

from __future__ import annotations

_applied = False


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
