"""export: checkpoint resolution, refusals with their reasons, the CLI's defaults and errors.

Nothing here exports a model (tests/e2e/test_export.py does); a few tests build the project's SSD
without tracing it, which takes seconds.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import pytest

from chestdet.commands.cli import ExitStatus, run_main
from chestdet.commands.export import build_parser, main
from chestdet.export import exporter as export
from chestdet.training.pipeline_config import image_size
from tests.conftest import LABEL_MAP, REPO

PIPELINE = REPO / "pipelines" / "ssd_mobilenet_v2_fpnlite_320x320.config"


def fake_checkpoint(folder: Path, step: int) -> Path:
    """The files a checkpoint prefix has, with placeholder contents (enough for path resolution)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"ckpt-{step}.index").write_bytes(b"index")
    (folder / f"ckpt-{step}.data-00000-of-00001").write_bytes(b"data")
    return folder / f"ckpt-{step}"


def write_state(folder: Path, latest: str, all_names: list[str]) -> None:
    """The `checkpoint` state file tf.train.CheckpointManager writes."""
    lines = [f'model_checkpoint_path: "{latest}"'] + [f'all_model_checkpoint_paths: "{n}"' for n in all_names]
    (folder / "checkpoint").write_text("\n".join(lines) + "\n")


def save_real_checkpoint(prefix: Path, **objects) -> Path:
    import tensorflow as tf

    return Path(tf.train.Checkpoint(**objects).write(str(prefix)))


def errors(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


# --- resolving what to export --------------------------------------------------------------------------


def test_resolve_prefix_and_its_files(tmp_path):
    prefix = fake_checkpoint(tmp_path, 7)
    assert export.resolve_checkpoint(prefix) == prefix
    assert export.resolve_checkpoint(f"{prefix}.index") == prefix
    assert export.resolve_checkpoint(f"{prefix}.data-00000-of-00001") == prefix


def test_resolve_run_folder_takes_the_latest_checkpoint(tmp_path):
    run = tmp_path / "run with spaces"
    for step in (2, 10, 3):
        fake_checkpoint(run, step)
    write_state(run, "ckpt-3", ["ckpt-2", "ckpt-10", "ckpt-3"])  # latest by the manager, not by number
    assert export.resolve_checkpoint(run) == run / "ckpt-3"


def test_resolve_best_record_relative_to_its_folder(tmp_path):
    run = tmp_path / "run"
    fake_checkpoint(run, 9)
    write_state(run, "ckpt-9", ["ckpt-9"])
    best = fake_checkpoint(run / "best", 4)
    (run / "best.json").write_text(json.dumps({"checkpoint": "best/ckpt-4", "step": 4, "value": 0.5}))
    assert export.resolve_checkpoint(run / "best.json") == best
    assert export.resolve_checkpoint(run) == run / "ckpt-9"  # a run folder still means its latest


def test_resolve_refuses_missing_things_with_the_reason(tmp_path):
    with pytest.raises(export.ExportError) as missing:
        export.resolve_checkpoint(tmp_path / "nope" / "ckpt-1")
    assert str(missing.value) == (
        f"{tmp_path / 'nope' / 'ckpt-1'}: no checkpoint there (expected a model dir, a prefix such as "
        "run/ckpt-5 with a ckpt-5.index beside it, or a best.json)"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(export.ExportError, match="folder holds no checkpoint"):
        export.resolve_checkpoint(empty)
    (tmp_path / "best.json").write_text(json.dumps({"checkpoint": "best/ckpt-4"}))
    with pytest.raises(export.ExportError, match=r"names checkpoint best/ckpt-4, whose \.index file is missing"):
        export.resolve_checkpoint(tmp_path / "best.json")
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(export.ExportError, match="not a best-checkpoint record with a 'checkpoint' key"):
        export.resolve_checkpoint(tmp_path / "other.json")


def test_checkpoint_step_is_the_training_step_when_there_is_one(tmp_path):
    import tensorflow as tf

    trained = save_real_checkpoint(tmp_path / "ckpt-3", step=tf.Variable(300, dtype=tf.int64))
    assert export.checkpoint_step(trained) == 300
    assert export.checkpoint_step(save_real_checkpoint(tmp_path / "other", v=tf.Variable(1.0))) is None


# --- refusing checkpoints, configs and label maps ----------------------------------------------------


def test_checkpoint_saved_before_the_model_was_built_is_refused_with_the_reason(tmp_path):
    """A from-scratch run's ckpt-1 holds only step, save counter and optimizer state;
    exporting it would otherwise die with 'Found N Python objects that were not bound'."""
    import tensorflow as tf
    from object_detection.builders import model_builder
    from object_detection.utils import config_util

    configs = config_util.get_configs_from_pipeline_file(str(PIPELINE))
    model = model_builder.build(configs["model"], is_training=True)  # no forward pass: no variables yet
    optimizer = tf.keras.optimizers.SGD(0.01)
    prefix = save_real_checkpoint(
        tmp_path / "ckpt-1", step=tf.Variable(0, dtype=tf.int64), model=model, optimizer=optimizer
    )
    with pytest.raises(export.ExportError) as refused:
        export.check_checkpoint_has_model(prefix)
    assert str(refused.value).startswith(f"{prefix}: holds 0 model variables (")
    assert "saved before the model was built" in str(refused.value)
    assert "export a later checkpoint" in str(refused.value)


def test_unreadable_checkpoint_is_refused(tmp_path):
    prefix = fake_checkpoint(tmp_path, 1)
    with pytest.raises(export.ExportError, match=rf"^{tmp_path}/ckpt-1: cannot read checkpoint \("):
        export.check_checkpoint_has_model(prefix)


def test_config_must_exist_and_parse(tmp_path):
    with pytest.raises(export.ExportError, match="pipeline config not found"):
        export.load_pipeline_config(tmp_path / "pipeline.config")
    bad = tmp_path / "bad.config"
    bad.write_text("model { ssd { num_classes: eight } }\n")
    with pytest.raises(export.ExportError, match=r"bad\.config: not a valid pipeline config"):
        export.load_pipeline_config(bad)
    assert image_size(export.load_pipeline_config(PIPELINE)) == (320, 320)


def test_label_map_must_name_the_models_classes(tmp_path):
    export.check_label_map(LABEL_MAP, 8)
    with pytest.raises(export.ExportError) as wrong:
        export.check_label_map(LABEL_MAP, 6)
    assert str(wrong.value) == (
        f"{LABEL_MAP}: label map ids are [1, 2, 3, 4, 5, 6, 7, 8], but the model predicts 6 classes (ids 1..6)"
    )


def test_label_map_defaults_to_the_configs_then_the_projects(tmp_path):
    configs = export.load_pipeline_config(PIPELINE)
    assert export.resolve_label_map(None, configs, PIPELINE) == LABEL_MAP
    own = tmp_path / "mine.pbtxt"
    shutil.copyfile(LABEL_MAP, own)
    assert export.resolve_label_map(own, configs, PIPELINE) == own
    with pytest.raises(export.ExportError, match="label map not found"):
        export.resolve_label_map(tmp_path / "missing.pbtxt", configs, PIPELINE)


def test_nothing_is_created_when_the_checkpoint_is_bad(tmp_path):
    output = tmp_path / "exports" / "x"
    with pytest.raises(export.ExportError):
        export.export_model(tmp_path / "missing", PIPELINE, output)
    assert not (tmp_path / "exports").exists()


def test_existing_output_is_not_overwritten_without_the_flag(tmp_path):
    import tensorflow as tf

    variables = {f"v{i}": tf.Variable(float(i)) for i in range(12)}
    prefix = save_real_checkpoint(tmp_path / "run" / "ckpt-1", model=tf.train.Checkpoint(**variables))
    output = tmp_path / "export"
    output.mkdir()
    with pytest.raises(export.ExportError) as refused:
        export.export_model(prefix, PIPELINE, output)
    assert str(refused.value) == f"{output}: already exists; choose another --output-dir or pass --overwrite"


# --- the command -----------------------------------------------------------------------------------------


def test_help_lists_every_flag():
    text = build_parser().format_help()
    for flag in ("--checkpoint", "--config", "--output-dir", "--label-map", "--no-tflite", "--overwrite",
                 "--agreement-images", "--tflite-nms", "--no-saved-model", "--int8", "--calibration-records",
                 "--calibration-images"):
        assert flag in text


def test_cli_missing_checkpoint_exits_2_with_one_line(tmp_path, caplog):
    missing = tmp_path / "runs with spaces" / "ckpt-3"
    out = tmp_path / "out dir"
    status = run_main(main, ["--checkpoint", str(missing), "--output-dir", str(out)])
    assert status == ExitStatus.ERROR
    assert errors(caplog) == [
        f"error: {missing}: no checkpoint there (expected a model dir, a prefix such as run/ckpt-5 with a "
        "ckpt-5.index beside it, or a best.json)"
    ]
    assert not out.exists()


def test_cli_needs_a_config_when_the_run_folder_has_none(tmp_path, caplog):
    prefix = fake_checkpoint(tmp_path / "my run", 5)
    status = run_main(main, ["--checkpoint", str(prefix)])
    assert status == ExitStatus.ERROR
    assert errors(caplog) == [f"error: {prefix}: no pipeline.config in its run folder {prefix.parent}; pass --config"]


def test_cli_agreement_needs_the_tflite_model(tmp_path, caplog):
    prefix = fake_checkpoint(tmp_path / "run", 5)
    shutil.copyfile(PIPELINE, tmp_path / "run" / "pipeline.config")
    status = run_main(main, ["--checkpoint", str(prefix), "--no-tflite", "--agreement-images", str(tmp_path)])
    assert status == ExitStatus.ERROR
    assert errors(caplog) == [
        "error: --agreement-images compares the TFLite model with the SavedModel; export both"
    ]


@pytest.mark.parametrize(("flags", "message"), [
    (["--no-tflite", "--no-saved-model"], "--no-tflite and --no-saved-model leave nothing to export"),
    (["--int8", "--no-tflite"], "--int8 makes the TFLite model INT8; drop --no-tflite"),
    (["--calibration-images", "50"], "--calibration-records and --calibration-images go with --int8"),
    (["--calibration-records", "x.record"], "--calibration-records and --calibration-images go with --int8"),
    (["--int8", "--calibration-images", "0"], "--calibration-images 0: must be at least 1"),
    (["--no-saved-model", "--agreement-images", "."],
     "--agreement-images compares the TFLite model with the SavedModel; export both"),
])
def test_cli_refuses_flags_that_do_not_go_together(tmp_path, caplog, flags, message):
    prefix = fake_checkpoint(tmp_path / "run", 5)
    shutil.copyfile(PIPELINE, tmp_path / "run" / "pipeline.config")
    out = tmp_path / "out"
    status = run_main(main, ["--checkpoint", str(prefix), "--output-dir", str(out), *flags])
    assert status == ExitStatus.ERROR
    assert errors(caplog) == [f"error: {message}"]
    assert not out.exists()


def test_export_model_refuses_to_export_nothing(tmp_path):
    prefix = fake_checkpoint(tmp_path / "run", 5)
    with pytest.raises(export.ExportError, match="nothing to export"):
        export.export_model(prefix, PIPELINE, tmp_path / "out", tflite=False, saved_model=False)
    with pytest.raises(export.ExportError, match="INT8 applies to the TFLite model"):
        export.export_model(prefix, PIPELINE, tmp_path / "out", tflite=False, int8=True)


def test_int8_without_records_names_where_it_looked(tmp_path):
    from chestdet.export import calibration

    pattern = str(tmp_path / "nowhere" / "train-*.record")
    with pytest.raises(export.ExportError, match=re.escape(f"none found at {pattern} (pass --calibration-records)")):
        calibration.record_files([pattern])


def test_cli_refuses_the_from_scratch_ckpt_1(tmp_path, caplog):
    import tensorflow as tf

    run = tmp_path / "run dir"
    run.mkdir()
    shutil.copyfile(PIPELINE, run / "pipeline.config")
    prefix = save_real_checkpoint(run / "ckpt-1", step=tf.Variable(0, dtype=tf.int64))
    write_state(run, "ckpt-1", ["ckpt-1"])
    out = tmp_path / "exported"
    status = run_main(main, ["--checkpoint", str(run), "--output-dir", str(out)])
    assert status == ExitStatus.ERROR
    [message] = errors(caplog)
    assert message.startswith(f"error: {prefix}: holds 0 model variables (")
    assert not out.exists()


# --- INT8 calibration ------------------------------------------------------------------------------------


def test_calibration_takes_record_images_in_file_order_prepared_as_detect_prepares_them(tmp_path):
    """The first N images of the records, resized and scaled as the TFLite backend prepares the float input."""
    import cv2
    import numpy as np
    import tensorflow as tf

    from chestdet.core.imaging import read_image
    from chestdet.export import calibration
    from chestdet.export.backends import TFLiteBackend
    from tests.conftest import SAMPLE_IMAGES

    images = sorted(SAMPLE_IMAGES.glob("*.png"))[:3]
    for index, shard in enumerate(("b", "a")):  # a glob's files are taken sorted: a before b
        with tf.io.TFRecordWriter(str(tmp_path / f"train-{shard}.record")) as writer:
            for path in images[index::2]:
                feature = {"image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[path.read_bytes()]))}
                writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    files = calibration.record_files([str(tmp_path / "train-*.record")])
    calibrated = calibration.CalibrationInputs(files, 2, 64, 48, 2 / 255, -1.0)
    inputs = list(calibrated())
    assert len(inputs) == 2
    assert calibrated.record() == {"records": [str(f) for f in files], "images": 2}
    assert len(list(calibration.CalibrationInputs(files, 50, 64, 48, 2 / 255, -1.0)())) == 3  # all there are
    prepare = TFLiteBackend.prepare.__get__(type("Fake", (), {"height": 64, "width": 48, "scale": 2 / 255,
                                                               "offset": -1.0, "_input_dtype": np.float32})())
    for got, path in zip(inputs, [images[1], images[0]], strict=True):
        assert got.shape == (64, 48, 3) and got.dtype == np.float32
        np.testing.assert_allclose(got, prepare(read_image(path)), atol=1e-6)
        assert cv2.minMaxLoc(got[:, :, 0])[1] <= 1.0


def test_quantise_rounds_half_away_from_zero_and_clips():
    import numpy as np

    from chestdet.export.backends import quantise

    values = np.array([-1.0, -0.5 / 127.5, 0.0, 0.5 / 127.5, 1.0, 3.0], np.float32)
    got = quantise(values, (1 / 127.5, 128), np.uint8)
    assert got.dtype == np.uint8
    assert got.tolist() == [1, 127, 128, 129, 255, 255]
