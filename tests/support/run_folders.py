"""Run folders without training: configs, checkpoints of two variables with the OD API's step, evaluation
events, and record files that only need to exist."""

from __future__ import annotations

from pathlib import Path

from chestdet.training import checkpoints, pipeline_config
from chestdet.training.train import DEFAULT_CONFIG


def make_configs(**overrides) -> dict:
    """The default pipeline config with named overrides applied."""
    return pipeline_config.apply_overrides(pipeline_config.load_configs(DEFAULT_CONFIG), **overrides)


class CheckpointWriter:
    """Saves checkpoints into a folder as train_loop does (a `step` variable, a `model`, a manager keeping 2)."""

    def __init__(self, model_dir: Path, keep: int = 2) -> None:
        import tensorflow as tf

        self.step = tf.Variable(0, dtype=tf.int64)
        self.weights = tf.Variable([0.0, 0.0])
        checkpoint = tf.train.Checkpoint(step=self.step, model=tf.train.Checkpoint(w=self.weights))
        self.manager = tf.train.CheckpointManager(checkpoint, str(model_dir), max_to_keep=keep)

    def save(self, step: int) -> Path:
        """A checkpoint at `step` whose weights are [step, 1]."""
        self.step.assign(step)
        self.weights.assign([float(step), 1.0])
        return Path(self.manager.save())


def save_checkpoint(model_dir: Path, step: int) -> Path:
    """One checkpoint at `step` in `model_dir`."""
    return CheckpointWriter(model_dir).save(step)


def write_eval(model_dir: Path, values: dict[int, float]) -> None:
    """The OD API's evaluation events: val mAP@0.5 (and half of it as mAP) per step, under <model_dir>/eval."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(model_dir / "eval"))
    with writer.as_default():
        for step, value in values.items():
            tf.summary.scalar(checkpoints.MAP50, value, step=step)
            tf.summary.scalar("DetectionBoxes_Precision/mAP", value / 2, step=step)
    writer.flush()
    writer.close()


def empty_records(folder: Path) -> Path:
    """A records folder with one empty train and one empty val shard, named as generate_tfrecords names them."""
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        (folder / f"{split}-00000-of-00001.tfrecord").write_bytes(b"")
    return folder
