"""pipelines/*.config and the named overrides of chestdet.training.pipeline_config."""

from __future__ import annotations

from pathlib import Path

import pytest

from chestdet.core.labels import CLASS_NAMES
from chestdet.training import pipeline_config
from tests.conftest import LABEL_MAP, REPO

CONFIGS = sorted((REPO / "pipelines").glob("*.config"))
MAIN_CONFIG = REPO / "pipelines" / "ssd_mobilenet_v2_fpnlite_320x320.config"


@pytest.fixture(scope="module")
def base() -> dict:
    return pipeline_config.load_configs(MAIN_CONFIG)


def batch_norm_decays(configs: dict) -> list[float]:
    return [block.decay for block in pipeline_config._messages_named(configs["model"], "batch_norm")]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_fit_the_label_map_and_chest_films(path: Path):
    configs = pipeline_config.load_configs(path)
    train = configs["train_config"]
    assert configs["model"].ssd.num_classes == len(CLASS_NAMES)
    assert train.fine_tune_checkpoint_type == "detection"
    assert train.fine_tune_checkpoint.startswith("workspace/pretrained/")
    assert list(configs["eval_config"].metrics_set) == ["coco_detection_metrics"]
    augmentations = [option.WhichOneof("preprocessing_step") for option in train.data_augmentation_options]
    assert augmentations, "a training config without augmentation overfits 620 images"
    assert "random_vertical_flip" not in augmentations
    assert "random_horizontal_flip" not in augmentations  # the heart's side matters (Cardiomegaly)
    assert "random_rotation90" not in augmentations


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_hold_no_machine_specific_paths(path: Path):
    configs = pipeline_config.load_configs(path)
    paths = [configs["train_config"].fine_tune_checkpoint, configs["train_input_config"].label_map_path]
    paths += list(configs["train_input_config"].tf_record_input_reader.input_path)
    for reader in configs["eval_input_configs"]:
        paths += [reader.label_map_path, *reader.tf_record_input_reader.input_path]
    assert all(p and not Path(p).is_absolute() and ".." not in Path(p).parts for p in paths), paths


def test_load_configs_names_a_missing_file(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="pipeline config not found: .*nope.config"):
        pipeline_config.load_configs(tmp_path / "nope.config")


def test_overrides_set_what_they_name(base: dict):
    configs = pipeline_config.apply_overrides(
        base,
        train_records=["/data/a b/train-*", "/data/extra-*"],
        val_records="/data/a b/val-*",
        label_map="/data/a b/label_map.pbtxt",
        fine_tune_checkpoint="/ckpt/ckpt-0",
        fine_tune_checkpoint_type="full",
        batch_size=4,
        num_steps=800,
        warmup_steps=50,
        learning_rate=0.02,
        image_size=(128, 192),
        batch_norm_decay=0.9,
        augment=False,
        max_detections=20,
    )
    train = configs["train_config"]
    assert list(configs["train_input_config"].tf_record_input_reader.input_path) == [
        "/data/a b/train-*",
        "/data/extra-*",
    ]
    assert list(configs["eval_input_configs"][0].tf_record_input_reader.input_path) == ["/data/a b/val-*"]
    assert configs["train_input_config"].label_map_path == "/data/a b/label_map.pbtxt"
    assert configs["eval_input_configs"][0].label_map_path == "/data/a b/label_map.pbtxt"
    assert (train.fine_tune_checkpoint, train.fine_tune_checkpoint_type) == ("/ckpt/ckpt-0", "full")
    assert (train.batch_size, train.num_steps) == (4, 800)
    cosine = train.optimizer.momentum_optimizer.learning_rate.cosine_decay_learning_rate
    assert (cosine.total_steps, cosine.warmup_steps) == (800, 50)
    assert cosine.learning_rate_base == pytest.approx(0.02)
    assert cosine.warmup_learning_rate == pytest.approx(0.005)  # config_util keeps the 1:4 ratio
    assert pipeline_config.image_size(configs) == (128, 192)
    assert batch_norm_decays(configs) == pytest.approx([0.9, 0.9])  # feature extractor, box predictor
    assert len(train.data_augmentation_options) == 0
    nms = configs["model"].ssd.post_processing.batch_non_max_suppression
    assert (nms.max_total_detections, nms.max_detections_per_class) == (20, 20)


def test_overrides_leave_the_input_configs_untouched(base: dict):
    before = pipeline_config.config_text(base)
    pipeline_config.apply_overrides(base, batch_size=2, augment=False, batch_norm_decay=0.5)
    assert pipeline_config.config_text(base) == before


def test_none_leaves_a_setting_alone_but_clears_the_checkpoint(base: dict):
    configs = pipeline_config.apply_overrides(base, batch_size=None, fine_tune_checkpoint=None)
    assert configs["train_config"].batch_size == base["train_config"].batch_size
    assert not configs["train_config"].HasField("fine_tune_checkpoint")
    assert not pipeline_config.apply_overrides(base, fine_tune_checkpoint="")[
        "train_config"
    ].fine_tune_checkpoint


def test_augment_true_keeps_the_augmentations(base: dict):
    configs = pipeline_config.apply_overrides(base, augment=True)
    assert len(configs["train_config"].data_augmentation_options) == len(
        base["train_config"].data_augmentation_options
    )


def test_short_runs_cap_the_warm_up(base: dict):
    cosine = pipeline_config._cosine_schedule(pipeline_config.apply_overrides(base, num_steps=200))
    assert (cosine.total_steps, cosine.warmup_steps) == (200, 20)
    long_run = pipeline_config._cosine_schedule(pipeline_config.apply_overrides(base, num_steps=20000))
    assert long_run.warmup_steps == pipeline_config._cosine_schedule(base).warmup_steps


def test_unknown_override_names_the_closest_known_one(base: dict):
    with pytest.raises(ValueError) as error:
        pipeline_config.apply_overrides(base, batchsize=4, image_szie=128, zzz=1)
    lines = str(error.value).splitlines()
    assert lines[0] == "unknown config override 'batchsize'; did you mean 'batch_size'?"
    assert lines[1] == "unknown config override 'image_szie'; did you mean 'image_size'?"
    assert lines[2] == "unknown config override 'zzz'"
    assert lines[3].startswith("known overrides: train_records, val_records, label_map")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("batch_size", 0, "batch_size must be a positive integer, not 0"),
        ("num_steps", 2.5, "num_steps must be a positive integer, not 2.5"),
        ("batch_norm_decay", 1.0, "batch_norm_decay must be between 0 and 1, not 1.0"),
        ("augment", "no", "augment must be True or False, not 'no'"),
        ("fine_tune_checkpoint_type", "coco", "fine_tune_checkpoint_type must be one of detection"),
        ("warmup_steps", 6000, "warmup_steps 6000 exceeds the schedule's total_steps 5000"),
        ("image_size", (128, 0), "image_size must be a positive integer, not 0"),
        ("train_records", [], "record paths must be non-empty"),
    ],
)
def test_bad_values_are_rejected_by_name(base: dict, name: str, value, message: str):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        pipeline_config.apply_overrides(base, **{name: value})


def test_save_config_round_trips_the_as_run_config(base: dict, tmp_path: Path):
    configs = pipeline_config.apply_overrides(base, num_steps=300, label_map=str(LABEL_MAP))
    directory = tmp_path / "run with spaces"
    path = pipeline_config.save_config(configs, directory)
    assert path == directory / "pipeline.config"
    assert [p.name for p in directory.iterdir()] == ["pipeline.config"]  # no temporary left behind
    again = pipeline_config.load_configs(path)
    assert pipeline_config.config_text(again) == pipeline_config.config_text(configs)
    assert again["train_config"].num_steps == 300
