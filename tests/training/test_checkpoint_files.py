"""chestdet.training.checkpoints on small real TensorFlow checkpoints (no model, no training): a checkpoint's
files, hashes and step, the latest and kept ones, evaluation results read from event files, the copy in best/
and which evaluated checkpoint it is."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import tensorflow as tf

from chestdet.training import checkpoints


class Run:
    """A model folder saved into as the OD API's train_loop saves: a global `step` beside a `model`, through a
    CheckpointManager keeping the last `keep`. The weights at step s are [s, s / 2, 1]."""

    def __init__(self, folder: Path, keep: int = 2) -> None:
        self.folder = folder
        self.step = tf.Variable(0, dtype=tf.int64)
        self.kernel = tf.Variable([0.0, 0.0, 0.0])
        root = tf.train.Checkpoint(step=self.step, model=tf.train.Checkpoint(kernel=self.kernel))
        self.manager = tf.train.CheckpointManager(root, str(folder), max_to_keep=keep)

    def save(self, step: int) -> Path:
        self.step.assign(step)
        self.kernel.assign([float(step), step / 2, 1.0])
        return Path(self.manager.save())


def kernel(prefix: Path) -> list[float]:
    return tf.train.load_variable(str(prefix), "model/kernel/.ATTRIBUTES/VARIABLE_VALUE").tolist()


def write_events(folder: Path, scalars: dict[int, dict[str, float]], raw: bool = False) -> None:
    """Scalars per step in a TensorBoard event file: as TF2's tf.summary.scalar writes them (tensors), or
    with `raw` as TF1 summaries (simple_value)."""
    writer = tf.summary.create_file_writer(str(folder))
    with writer.as_default():
        for step, values in scalars.items():
            for tag, value in values.items():
                if raw:
                    summary = tf.compat.v1.Summary(value=[tf.compat.v1.Summary.Value(tag=tag, simple_value=value)])
                    tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=step)
                else:
                    tf.summary.scalar(tag, value, step=step)
    writer.close()


def evaluated(run: Path, map50: dict[int, float]) -> None:
    write_events(run / "eval", {step: {checkpoints.MAP50: value, "Loss/total_loss": 1 - value}
                                for step, value in map50.items()})


# ------------------------------------------------------------------ one checkpoint


def test_a_checkpoints_files_are_its_index_and_data_even_under_names_glob_would_misread(tmp_path: Path):
    folder = tmp_path / "run [a]*"
    prefix = Path(tf.train.Checkpoint(v=tf.Variable([1.0, 2.0])).write(str(folder / "weights[1]")))
    tf.train.Checkpoint(v=tf.Variable([3.0])).write(str(folder / "weights[1]-older"))
    files = checkpoints.checkpoint_files(prefix)
    assert [p.name for p in files] == ["weights[1].index", "weights[1].data-00000-of-00001"]
    assert all(p.is_file() for p in files) and checkpoints.checkpoint_exists(prefix)
    assert checkpoints.checkpoint_files(folder / "weights[2]") == []
    assert not checkpoints.checkpoint_exists(folder / "weights[2]")


def test_without_its_index_a_checkpoint_does_not_exist(tmp_path: Path):
    prefix = Run(tmp_path).save(10)
    (tmp_path / (prefix.name + ".index")).unlink()
    assert checkpoints.checkpoint_files(prefix) == [] and not checkpoints.checkpoint_exists(prefix)


def test_the_hashes_are_each_files_sha256_and_follow_its_bytes(tmp_path: Path):
    run = Run(tmp_path, keep=None)
    first, second = run.save(10), run.save(20)
    digests = checkpoints.checkpoint_sha256(first)
    assert digests == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in checkpoints.checkpoint_files(first)}
    assert checkpoints.sha256_file(checkpoints.checkpoint_files(first)[1], chunk=7) == digests[
        checkpoints.checkpoint_files(first)[1].name], "the digest does not depend on the chunk size"
    second_data = checkpoints.checkpoint_sha256(second)[f"{second.name}.data-00000-of-00001"]
    assert second_data != digests[f"{first.name}.data-00000-of-00001"]


def test_the_step_is_read_from_a_training_checkpoint_and_none_without_one(tmp_path: Path):
    prefix = Run(tmp_path / "run").save(1234)
    assert checkpoints.checkpoint_step(prefix) == 1234
    assert checkpoints.has_model_variables(prefix)

    bare = Path(tf.train.Checkpoint(model=tf.train.Checkpoint(w=tf.Variable(1.0))).write(str(tmp_path / "bare")))
    assert checkpoints.checkpoint_step(bare) is None
    bookkeeping = Path(tf.train.Checkpoint(step=tf.Variable(0, dtype=tf.int64)).write(str(tmp_path / "book")))
    assert checkpoints.checkpoint_step(bookkeeping) == 0 and not checkpoints.has_model_variables(bookkeeping)


# ------------------------------------------------------------------ a model folder


def test_an_empty_folder_has_no_checkpoint_and_starts_at_step_0(tmp_path: Path):
    assert checkpoints.latest_checkpoint(tmp_path) is None
    assert checkpoints.all_checkpoints(tmp_path) == []
    assert checkpoints.latest_step(tmp_path) == 0
    assert checkpoints.best_checkpoint(tmp_path) is None
    assert checkpoints.eval_metrics(tmp_path) == {}


def test_the_latest_and_the_kept_checkpoints_oldest_first(tmp_path: Path):
    folder = tmp_path / "run with spaces"
    run = Run(folder, keep=2)
    saved = [run.save(step) for step in (100, 200, 300)]
    assert checkpoints.all_checkpoints(folder) == saved[1:]
    assert checkpoints.latest_checkpoint(folder) == saved[2]
    assert checkpoints.latest_step(folder) == 300


def test_a_checkpoint_the_state_file_names_but_whose_files_are_gone_is_not_listed(tmp_path: Path):
    run = Run(tmp_path, keep=3)
    saved = [run.save(step) for step in (1, 2, 3)]
    for path in checkpoints.checkpoint_files(saved[0]):
        path.unlink()
    assert checkpoints.all_checkpoints(tmp_path) == saved[1:]


def test_a_copy_is_a_checkpoint_of_its_own_that_tensorflow_finds_and_replaces_the_earlier_copy(tmp_path: Path):
    run = Run(tmp_path / "run", keep=None)
    first, second = run.save(100), run.save(200)
    target = tmp_path / "run" / "best"
    copied = checkpoints.copy_checkpoint(first, target)
    assert copied == target / first.name
    assert tf.train.latest_checkpoint(str(target)) == str(copied)
    assert kernel(copied) == kernel(first) == [100.0, 50.0, 1.0]
    assert checkpoints.checkpoint_sha256(copied) == checkpoints.checkpoint_sha256(first)

    copied = checkpoints.copy_checkpoint(second, target)
    assert sorted(p.name for p in target.iterdir()) == sorted(
        ["checkpoint", *(p.name for p in checkpoints.checkpoint_files(second))]), "nothing of the earlier copy is left"
    assert tf.train.latest_checkpoint(str(target)) == str(copied) and kernel(copied) == [200.0, 100.0, 1.0]
    assert not [p.name for p in target.parent.iterdir() if p.name.startswith(".best")], "no staging folder is left"
    assert checkpoints.checkpoint_exists(first) and checkpoints.checkpoint_exists(second), "the sources stay"


# ------------------------------------------------------------------ evaluation results


@pytest.mark.parametrize("raw", [False, True], ids=["tf2 tensors", "tf1 simple values"])
def test_scalars_are_read_from_every_event_file_under_the_folder(tmp_path: Path, raw: bool):
    write_events(tmp_path / "eval", {10: {"a": 0.25, "b": 2.0}, 20: {"a": 0.5}}, raw=raw)
    write_events(tmp_path / "train", {20: {"c": 7.0}}, raw=raw)
    scalars = checkpoints.read_scalars(tmp_path)
    assert scalars == {"a": {10: pytest.approx(0.25), 20: pytest.approx(0.5)}, "b": {10: pytest.approx(2.0)},
                       "c": {20: pytest.approx(7.0)}}


def test_a_later_event_file_wins_for_the_same_step(tmp_path: Path):
    write_events(tmp_path / "first", {10: {"a": 0.1}})
    write_events(tmp_path / "second", {10: {"a": 0.9}})
    older, newer = next((tmp_path / "first").iterdir()), next((tmp_path / "second").iterdir())
    os.utime(older, (1_000_000, 1_000_000))
    os.utime(newer, (2_000_000, 2_000_000))
    assert checkpoints.read_scalars(tmp_path)["a"][10] == pytest.approx(0.9)
    os.utime(older, (3_000_000, 3_000_000))
    assert checkpoints.read_scalars(tmp_path)["a"][10] == pytest.approx(0.1)


def test_an_event_file_cut_short_by_a_running_writer_is_read_up_to_its_last_whole_record(tmp_path: Path):
    write_events(tmp_path, {step: {"a": step / 10} for step in range(1, 6)})
    events = next(tmp_path.iterdir())
    data = events.read_bytes()
    events.write_bytes(data[:-10])
    assert checkpoints.read_scalars(tmp_path)["a"] == {step: pytest.approx(step / 10) for step in range(1, 5)}


def test_eval_metrics_are_the_evaluated_steps_in_order_with_every_metric(tmp_path: Path):
    write_events(tmp_path / "eval", {300: {checkpoints.MAP50: 0.3, "mAP": 0.1}, 100: {checkpoints.MAP50: 0.2},
                                     200: {"Loss/total_loss": 0.7}})  # no mAP@0.5 at 200: not an evaluation
    metrics = checkpoints.eval_metrics(tmp_path)
    assert list(metrics) == [100, 300]
    assert metrics[300] == {checkpoints.MAP50: pytest.approx(0.3), "mAP": pytest.approx(0.1)}


# ------------------------------------------------------------------ the best checkpoint


def test_on_a_tie_the_later_checkpoint_is_the_best(tmp_path: Path):
    run = Run(tmp_path, keep=None)
    for step in (100, 200, 300):
        run.save(step)
    evaluated(tmp_path, {100: 0.4, 200: 0.4, 300: 0.1})
    best = checkpoints.update_best(tmp_path)
    assert best["step"] == 200 and kernel(checkpoints.best_checkpoint(tmp_path)) == [200.0, 100.0, 1.0]


def test_the_best_evaluation_whose_checkpoint_is_gone_gives_way_to_the_best_one_on_disk(tmp_path: Path):
    run = Run(tmp_path, keep=2)
    for step in (100, 200, 300):
        run.save(step)  # the manager has deleted step 100's checkpoint
    evaluated(tmp_path, {100: 0.9, 200: 0.5, 300: 0.3})
    best = checkpoints.update_best(tmp_path)
    assert (best["step"], best["value"]) == (200, pytest.approx(0.5))
    assert best["copied_from"] == "ckpt-2" and kernel(checkpoints.best_checkpoint(tmp_path)) == [200.0, 100.0, 1.0]


def test_new_evaluations_that_do_not_beat_the_best_update_its_record_not_its_copy(tmp_path: Path):
    run = Run(tmp_path, keep=None)
    run.save(100)
    evaluated(tmp_path, {100: 0.6})
    first = checkpoints.update_best(tmp_path)
    copied = checkpoints.checkpoint_files(checkpoints.best_checkpoint(tmp_path))
    stamps = {p.name: p.stat().st_mtime_ns for p in copied}

    run.save(200)
    evaluated(tmp_path, {200: 0.5})
    record = checkpoints.update_best(tmp_path)
    assert record["step"] == 100 and record["updated"] == first["updated"]
    assert [e["step"] for e in record["evaluated"]] == [100, 200]
    assert json.loads((tmp_path / "best.json").read_text()) == record
    assert {p.name: p.stat().st_mtime_ns for p in copied} == stamps, "the copy is not made again"


def test_evaluations_of_steps_without_a_checkpoint_choose_nothing(tmp_path: Path):
    Run(tmp_path).save(100)
    evaluated(tmp_path, {50: 0.9})
    assert checkpoints.update_best(tmp_path) is None
    assert not (tmp_path / "best.json").exists() and not (tmp_path / "best").exists()
