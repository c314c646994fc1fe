"""Reading records back as the OD API reads them, for tests."""

from __future__ import annotations


def decode_records(paths) -> dict[str, dict]:
    """Every example in `paths`, decoded by the OD API's TfExampleDecoder, by file name."""
    import tensorflow as tf

    from chestdet.core import compat

    compat.apply()
    from object_detection.core.standard_fields import InputDataFields as Fields
    from object_detection.data_decoders.tf_example_decoder import TfExampleDecoder

    decoder = TfExampleDecoder()
    decoded = {}
    for raw in tf.data.TFRecordDataset([str(path) for path in paths]):
        tensors = decoder.decode(raw)
        name = tensors[Fields.filename].numpy().decode()
        decoded[name] = {
            "source_id": tensors[Fields.source_id].numpy().decode(),
            "key": tensors[Fields.key].numpy().decode(),
            "image_shape": tuple(tensors[Fields.image].shape),
            "boxes": tensors[Fields.groundtruth_boxes].numpy(),
            "classes": tensors[Fields.groundtruth_classes].numpy().tolist(),
            "difficult": tensors[Fields.groundtruth_difficult].numpy().tolist(),
            "raw": raw.numpy(),
        }
    return decoded
