"""Read back the TFRecords generate_tfrecords writes, with the OD API's own decoder."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def read_records(paths: Iterable[Path]) -> dict[str, dict]:
    """{filename: {"boxes": [N, 4] normalised ymin, xmin, ymax, xmax, "classes": [ids], "shape": (h, w, c)}}."""
    import tensorflow as tf

    from chestdet.core import compat

    compat.apply()
    from object_detection.core.standard_fields import InputDataFields as Fields
    from object_detection.data_decoders.tf_example_decoder import TfExampleDecoder

    decoder = TfExampleDecoder()
    decoded = {}
    for raw in tf.data.TFRecordDataset([str(path) for path in paths]):
        tensors = decoder.decode(raw)
        decoded[tensors[Fields.filename].numpy().decode()] = {
            "boxes": tensors[Fields.groundtruth_boxes].numpy(),
            "classes": tensors[Fields.groundtruth_classes].numpy().tolist(),
            "shape": tuple(tensors[Fields.image].shape),
        }
    return decoded
