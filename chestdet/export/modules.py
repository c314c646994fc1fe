"""The tf.Modules an export saves: the OD API's batch inference module and its TFLite SSD module, both
around one restored model, each holding the model's variables but not the model itself.

The OD API's modules keep the model as an attribute, so `tf.saved_model.save` serialises it as a
Keras object: it traces every layer's call functions for Keras's own loader, and
`tf.saved_model.load` restores them all. Neither the serving signature nor the TFLite converter
uses them. Holding the variables only (the functions capture them; the save checks that every
captured variable is reachable) saves the same functions and signature, with the same weights.
"""

from __future__ import annotations

# Both classes are built lazily, so that importing chestdet.export stays light (no TensorFlow).


def hold_variables_only(module, model) -> None:  # noqa: ANN001 - a tf.Module and an OD API DetectionModel
    """Replace `module._model`, a tracked dependency, by an untracked reference and the model's variables."""
    del module._model  # AutoTrackable.__delattr__ drops the dependency with the attribute
    object.__setattr__(module, "_model", model)  # past AutoTrackable.__setattr__: not tracked
    module.model_variables = list(model.variables)


def batch_module_class():  # noqa: ANN201 - a tf.Module subclass
    import tensorflow as tf
    from object_detection import exporter_lib_v2

    class BatchImageModule(exporter_lib_v2.DetectionInferenceModule):
        """exporter_lib_v2's image_tensor module with a batch of any size instead of exactly 1."""

        def __init__(self, detection_model) -> None:  # noqa: ANN001
            super().__init__(detection_model)
            hold_variables_only(self, detection_model)

        # No autograph: the body has no Python control flow, and autograph would re-read this file's
        # source while tracing (an edit to it during a long export then traces the wrong lines).
        @tf.function(
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="input_tensor")], autograph=False
        )
        def __call__(self, input_tensor: tf.Tensor):
            images, true_shapes = self._preprocess_input(input_tensor, lambda image: image)
            return self._run_inference_on_images(images, true_shapes)

    return BatchImageModule


def tflite_module(pipeline, model, max_detections: int, regular_nms: bool):  # noqa: ANN001, ANN201
    """export_tflite_graph_lib_tf2's SSDModule around `model`, holding its variables only."""
    from object_detection import export_tflite_graph_lib_tf2

    module = export_tflite_graph_lib_tf2.SSDModule(pipeline, model, max_detections, regular_nms)
    hold_variables_only(module, model)
    return module
