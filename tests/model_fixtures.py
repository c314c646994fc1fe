"""Small real models for tests: the project's SSD at a small input size, random weights, exported.

Building and exporting costs minutes on a CPU, so tests share one export per session through the
`tiny_export` fixture in tests/conftest.py.
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import LABEL_MAP, REPO

PIPELINE = REPO / "pipelines" / "ssd_mobilenet_v2_fpnlite_320x320.config"


def write_tiny_config(out_dir: Path, image_size: int = 128) -> Path:
    """The project's pipeline config at `image_size` x `image_size`, with no machine-specific paths."""
    from object_detection.utils import config_util

    configs = config_util.get_configs_from_pipeline_file(str(PIPELINE))
    resizer = configs["model"].ssd.image_resizer.fixed_shape_resizer
    resizer.height = image_size
    resizer.width = image_size
    configs["train_config"].ClearField("fine_tune_checkpoint")
    configs["train_input_config"].label_map_path = str(LABEL_MAP)
    configs["eval_input_configs"][0].label_map_path = str(LABEL_MAP)
    pipeline = config_util.create_pipeline_proto_from_configs(configs)
    out_dir.mkdir(parents=True, exist_ok=True)
    config_util.save_pipeline_config(pipeline, str(out_dir))
    return out_dir / "pipeline.config"


def make_tiny_checkpoint(model_dir: Path, image_size: int = 128) -> Path:
    """A model dir holding pipeline.config and ckpt-1 of randomly initialised weights; returns ckpt-1's prefix.

    One forward pass builds every variable first, so the checkpoint is complete (unlike the OD API's
    from-scratch ckpt-1).
    """
    import tensorflow as tf
    from object_detection.builders import model_builder
    from object_detection.utils import config_util

    config_path = write_tiny_config(model_dir, image_size)
    configs = config_util.get_configs_from_pipeline_file(str(config_path))
    tf.random.set_seed(0)
    model = model_builder.build(configs["model"], is_training=False)
    images, shapes = model.preprocess(tf.zeros([1, image_size, image_size, 3]))
    model.predict(images, shapes)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model), str(model_dir), max_to_keep=None)
    return Path(manager.save())


def make_tiny_export(out_dir: Path, image_size: int = 128) -> Path:
    """Export (SavedModel + TFLite) a randomly initialised project model into out_dir/export; returns it.

    out_dir/model holds the checkpoint and config it came from.
    """
    from chestdet.export import export_model

    model_dir = out_dir / "model"
    make_tiny_checkpoint(model_dir, image_size)
    return export_model(model_dir, model_dir / "pipeline.config", out_dir / "export", tflite=True)
