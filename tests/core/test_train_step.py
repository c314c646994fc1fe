"""chestdet.core.compat.patch_train_step: still needed (the OD API trains on through a NaN loss and
train_loop calls eager_train_step by name), and working (the patched step stops and reports).

The steps run on a one-variable stand-in for a DetectionModel, through the OD API's own
eager_train_step: no SSD is built and nothing is trained beyond that one variable.
"""

from __future__ import annotations

import inspect
import types

import numpy as np
import pytest

from chestdet.core import compat


class OneWeightModel:
    """What eager_train_step asks of a DetectionModel, with one weight: loss = sum(image) * weight."""

    def __init__(self) -> None:
        import tensorflow as tf

        self.weight = tf.Variable(1.0)
        self._is_training = False

    @property
    def trainable_variables(self) -> list:
        return [self.weight]

    def provide_groundtruth(self, **_groundtruth) -> None:
        pass

    def get_side_inputs(self, _features: dict) -> dict:
        return {}

    def predict(self, images, _shapes) -> dict:  # noqa: ANN001
        return {"scores": images * self.weight}

    def loss(self, predictions: dict, _shapes) -> dict:  # noqa: ANN001
        import tensorflow as tf

        return {"Loss/stand_in_loss": tf.reduce_sum(predictions["scores"])}

    def regularization_losses(self) -> list:
        return []


def step_inputs(pixel) -> tuple[dict, dict]:  # noqa: ANN001 - a float or a scalar tensor
    """features and labels of one 2x2 one-channel image filled with `pixel`, one box."""
    import tensorflow as tf
    from object_detection.core.standard_fields import InputDataFields as Fields

    features = {Fields.image: tf.fill([1, 2, 2, 1], pixel), Fields.true_image_shape: tf.constant([[2, 2, 1]])}
    labels = {Fields.groundtruth_boxes: tf.zeros([1, 1, 4]), Fields.groundtruth_classes: tf.zeros([1, 1, 2])}
    return features, labels


def one_step(train_step, pixel: float) -> dict:  # noqa: ANN001
    """One eager call of `train_step` as train_loop makes it; the loss and the weight after it."""
    import tensorflow as tf

    model = OneWeightModel()
    losses = train_step(model, *step_inputs(pixel), False, tf.keras.optimizers.SGD(0.1), training_step=tf.Variable(0),
                        add_regularization_loss=True, clip_gradients_value=None, num_replicas=1)
    return {"loss": float(losses["Loss/total_loss"]), "weight": float(model.weight.numpy())}


def test_train_loop_calls_eager_train_step_by_name_with_its_step():
    """The wrap reaches train_loop only while it looks eager_train_step up by name at each call. When this
    fails, the OD API changed how it trains: rework or drop compat.patch_train_step."""
    from object_detection import model_lib_v2

    source = inspect.getsource(model_lib_v2.train_loop)
    assert "losses_dict = eager_train_step(" in source
    assert "training_step=global_step," in source
    assert "global_step.assign_add(1)" in source
    assert list(inspect.signature(model_lib_v2.eager_train_step).parameters)[:6] == [
        "detection_model", "features", "labels", "unpad_groundtruth_tensors", "optimizer", "training_step"]


def test_the_od_api_itself_trains_on_through_a_non_finite_loss():
    """Still needed: the unpatched step returns the NaN loss and writes NaN into the weights. When this
    fails, the OD API stops on a non-finite loss itself: drop the check from compat.patch_train_step."""
    from object_detection import model_lib_v2

    assert not getattr(model_lib_v2.eager_train_step, "patched_by_chestdet", False)
    fine = one_step(model_lib_v2.eager_train_step, 1.0)
    assert (fine["loss"], fine["weight"]) == (4.0, pytest.approx(0.6))
    broken = one_step(model_lib_v2.eager_train_step, np.nan)
    assert np.isnan(broken["loss"]) and np.isnan(broken["weight"])


def test_the_patched_step_stops_on_a_non_finite_loss_and_reports_each_step(capfd):
    import tensorflow as tf
    from object_detection import model_lib_v2

    module = types.SimpleNamespace(eager_train_step=model_lib_v2.eager_train_step)
    compat.patch_train_step(module, report_steps=True)
    patched = module.eager_train_step
    compat.patch_train_step(module, report_steps=True)  # patching twice wraps once
    assert module.eager_train_step is patched
    model, optimizer, step = OneWeightModel(), tf.keras.optimizers.SGD(0.1), tf.Variable(41)

    @tf.function
    def in_a_graph(pixel: tf.Tensor) -> tf.Tensor:
        losses = patched(model, *step_inputs(pixel), False, optimizer, training_step=step, num_replicas=1)
        return losses["Loss/total_loss"]

    assert float(in_a_graph(tf.constant(1.0))) == 4.0
    assert f"{compat.STEP_REPORT} 42 4\n" in capfd.readouterr().err
    for bad in (np.nan, np.inf):
        with pytest.raises(tf.errors.InvalidArgumentError, match=compat.NON_FINITE_MESSAGE):
            in_a_graph(tf.constant(bad))
    assert compat.STEP_REPORT not in capfd.readouterr().err

