"""Small real models for tests: the project's SSD at a small input size, with random weights or trained on
the 16 overfit sample images, exported.

Building, training and exporting cost minutes on a CPU, so tests share them per session through the
`tiny_export`, `overfit_run` and `trained_export` fixtures in tests/conftest.py.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tests.conftest import LABEL_MAP, REPO, SAMPLE_CSV, SAMPLE_IMAGES

PIPELINE = REPO / "pipelines" / "ssd_mobilenet_v2_fpnlite_320x320.config"
OVERFIT_CLASSES = ("Cardiomegaly", "Pneumonia", "Infiltrate", "Mass")


def write_tiny_config(out_dir: Path, image_size: int = 128, **overrides) -> Path:
    """The project's pipeline config at `image_size` x `image_size`, no fine-tune checkpoint, the
    repository's label map, plus any other pipeline_config overrides; written as out_dir/pipeline.config."""
    from chestdet.training.pipeline_config import apply_overrides, load_configs, save_config

    overrides.setdefault("label_map", str(LABEL_MAP))
    configs = apply_overrides(load_configs(PIPELINE), image_size=image_size, fine_tune_checkpoint=None, **overrides)
    return save_config(configs, out_dir)


def make_tiny_checkpoint(model_dir: Path, image_size: int = 128, checkpoints: int = 1) -> Path:
    """A model dir holding pipeline.config and ckpt-1..ckpt-N of random weights; returns the last prefix.

    One forward pass builds every variable first, so the checkpoints are complete (unlike the OD API's
    from-scratch ckpt-1). Each later checkpoint adds 1 to the first variable, so they differ.
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
    for index in range(checkpoints):
        if index:
            model.trainable_variables[0].assign_add(tf.ones_like(model.trainable_variables[0]))
        prefix = manager.save()
    return Path(prefix)


def make_tiny_export(out_dir: Path, image_size: int = 128) -> Path:
    """Export (SavedModel + TFLite) a randomly initialised project model into out_dir/export; returns it.

    out_dir/model holds the checkpoint and config it came from.
    """
    from chestdet.export.exporter import export_model

    model_dir = out_dir / "model"
    make_tiny_checkpoint(model_dir, image_size)
    # A random model scores every box about 0.0099: its TFLite NMS must keep them all to be compared.
    return export_model(model_dir, model_dir / "pipeline.config", out_dir / "export", tflite=True,
                        tflite_min_score=0.0)


def overfit_images(per_class: int = 4) -> dict[str, list]:
    """The single-box sample images with the largest boxes of four large-finding classes: {image: [Box]}."""
    from chestdet.data.annotations import read_nih_csv

    boxes, _ = read_nih_csv(SAMPLE_CSV)
    present = {path.name for path in SAMPLE_IMAGES.glob("*.png")}
    boxes = [box for box in boxes if box.image in present]
    per_image = Counter(box.image for box in boxes)
    chosen = {}
    for label in OVERFIT_CLASSES:
        single = [box for box in boxes if box.label == label and per_image[box.image] == 1]
        for box in sorted(single, key=lambda box: -(box.xmax - box.xmin) * (box.ymax - box.ymin))[:per_class]:
            chosen[box.image] = [box]
    return chosen


OVERFIT_STEPS = 400
# The overfit run's settings: no augmentation, a fast cosine from 0.04, batch-norm statistics that keep up.
OVERFIT_OVERRIDES = {"image_size": 256, "augment": False, "learning_rate": 0.04, "warmup_steps": 50,
                     "batch_norm_decay": 0.9}


def train_overfit_run(folder: Path, steps: int = OVERFIT_STEPS) -> Path:
    """The project's SSD trained from scratch on the 16 overfit images by the library's train() (what
    train.sh runs), at 256x256, batch 4, on records generate_tfrecords writes; returns the run folder.
    Its scores on those images are confident (an untrained model scores everything about 0.01)."""
    from chestdet.training.train import TrainOptions, train
    from tests.support.training_data import overfit_boxes, write_records

    records = write_records(folder / "records", overfit_boxes())
    options = TrainOptions(records=records, model_dir=folder / "run", from_scratch=True, steps=steps,
                           checkpoint_every=steps, batch_size=4, overrides=OVERFIT_OVERRIDES, progress=False)
    return train(options).model_dir
