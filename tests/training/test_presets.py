"""Named presets of config overrides: what cpu-from-scratch sets and keeps, and unknown names."""

from __future__ import annotations

import pytest

from chestdet.core.resources import DEFAULT_PIPELINE
from chestdet.training import pipeline_config


def test_cpu_from_scratch_sets_size_and_batch_norm_decay_and_keeps_the_augmentations():
    configs = pipeline_config.load_configs(DEFAULT_PIPELINE)
    changed = pipeline_config.apply_overrides(configs, **pipeline_config.preset_overrides("cpu-from-scratch"))
    assert pipeline_config.image_size(changed) == (256, 256)
    decays = [block.decay for block in pipeline_config._messages_named(changed["model"], "batch_norm")]
    assert decays and decays == pytest.approx([0.9] * len(decays))
    kept = [option.WhichOneof("preprocessing_step") for option in changed["train_config"].data_augmentation_options]
    assert kept == [option.WhichOneof("preprocessing_step")
                    for option in configs["train_config"].data_augmentation_options] and len(kept) == 3
    schedule = changed["train_config"].optimizer.momentum_optimizer.learning_rate.cosine_decay_learning_rate
    assert schedule.learning_rate_base == configs["train_config"].optimizer.momentum_optimizer.learning_rate.\
        cosine_decay_learning_rate.learning_rate_base


def test_a_preset_is_a_copy_and_an_unknown_name_suggests_the_closest():
    pipeline_config.preset_overrides("cpu-from-scratch")["image_size"] = 1
    assert pipeline_config.PRESETS["cpu-from-scratch"]["image_size"] == 256
    with pytest.raises(ValueError, match="unknown preset 'cpu-from-scrach'; did you mean 'cpu-from-scratch'"):
        pipeline_config.preset_overrides("cpu-from-scrach")
