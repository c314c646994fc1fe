"""pipelines/*.config -> the OD API's configs dict, named overrides, and the as-run pipeline.config.

The config files stay declarative and machine-independent; everything a run changes (record
globs, label map, checkpoint, steps, batch, input size, learning rate, batch-norm decay,
augmentation) is applied here by name, through config_util's own mechanisms where it has one
(`merge_external_params_with_configs`), otherwise on the protos. Unknown names are rejected with a
close-match suggestion, unlike config_util, which logs them at INFO and carries on.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from google.protobuf.message import Message

from chestdet.core import atomic
from chestdet.core.contracts import PIPELINE_FILE

log = logging.getLogger(__name__)

# A warm-up longer than a tenth of the run leaves too little of the cosine schedule; a caller who
# wants more says so with warmup_steps.
MAX_WARMUP_FRACTION = 0.1


def load_configs(path: str | Path) -> dict:
    """Parse a pipeline.config with config_util; returns its dict of protos (model, train_config, ...)."""
    from object_detection.utils import config_util

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pipeline config not found: {path}")
    return config_util.get_configs_from_pipeline_file(str(path))


def config_text(configs: dict) -> str:
    """The text form of a configs dict, as pipeline.config holds it."""
    from google.protobuf import text_format
    from object_detection.utils import config_util

    return text_format.MessageToString(config_util.create_pipeline_proto_from_configs(configs))


def save_config(configs: dict, directory: str | Path) -> Path:
    """Write `directory`/pipeline.config atomically (config_util.save_pipeline_config, minus the half-file risk)."""
    path = Path(directory) / PIPELINE_FILE
    atomic.write_text(path, config_text(configs))
    return path


def copy_configs(configs: dict) -> dict:
    """A deep copy: the overrides work in place on protos."""
    from object_detection.utils import config_util

    return config_util.create_configs_from_pipeline_proto(
        config_util.create_pipeline_proto_from_configs(configs)
    )


# --- the overrides --------------------------------------------------------------------------------


def _records(value: str | Path | Sequence[str | Path]) -> list[str]:
    paths = [value] if isinstance(value, (str, Path)) else list(value)
    if not paths or any(not str(p) for p in paths):
        raise ValueError("record paths must be non-empty")
    return [str(p) for p in paths]


def _merge(configs: dict, key: str, value: Any) -> None:
    from object_detection.utils import config_util

    config_util.merge_external_params_with_configs(configs, kwargs_dict={key: value})


def _set_train_records(configs: dict, value: Any) -> None:
    _merge(configs, "train_input_path", _records(value))


def _set_val_records(configs: dict, value: Any) -> None:
    if len(configs["eval_input_configs"]) != 1:
        raise ValueError(f"val_records needs exactly one eval_input_reader, the config has "
                         f"{len(configs['eval_input_configs'])}")
    _merge(configs, "eval_input_path", _records(value))


def _set_label_map(configs: dict, value: Any) -> None:
    _merge(configs, "label_map_path", str(value))


def _set_fine_tune_checkpoint(configs: dict, value: Any) -> None:
    train_config = configs["train_config"]
    if value is None or str(value) == "":
        train_config.ClearField("fine_tune_checkpoint")
        train_config.ClearField("fine_tune_checkpoint_type")
    else:
        train_config.fine_tune_checkpoint = str(value)


def _set_fine_tune_checkpoint_type(configs: dict, value: Any) -> None:
    allowed = ("detection", "classification", "full")
    if value not in allowed:
        raise ValueError(f"fine_tune_checkpoint_type must be one of {', '.join(allowed)}, not {value!r}")
    configs["train_config"].fine_tune_checkpoint_type = value


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return value


def _set_batch_size(configs: dict, value: Any) -> None:
    _merge(configs, "batch_size", _positive_int("batch_size", value))


def _cosine_schedule(configs: dict):
    """The cosine_decay_learning_rate proto of the optimizer, or None for other schedules."""
    optimizer = configs["train_config"].optimizer
    kind = optimizer.WhichOneof("optimizer")
    if kind is None:
        return None
    learning_rate = getattr(optimizer, kind).learning_rate
    if learning_rate.WhichOneof("learning_rate") != "cosine_decay_learning_rate":
        return None
    return learning_rate.cosine_decay_learning_rate


def _set_num_steps(configs: dict, value: Any) -> None:
    steps = _positive_int("num_steps", value)
    _merge(configs, "train_steps", steps)
    cosine = _cosine_schedule(configs)
    if cosine is not None:
        cosine.total_steps = steps
        capped = min(cosine.warmup_steps, int(steps * MAX_WARMUP_FRACTION))
        if capped != cosine.warmup_steps:
            log.info("warm-up shortened from %d to %d steps for a %d-step run", cosine.warmup_steps, capped, steps)
            cosine.warmup_steps = capped


def _set_warmup_steps(configs: dict, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"warmup_steps must be a non-negative integer, not {value!r}")
    cosine = _cosine_schedule(configs)
    if cosine is None:
        raise ValueError("warmup_steps needs a cosine_decay_learning_rate schedule")
    if value > cosine.total_steps:
        raise ValueError(f"warmup_steps {value} exceeds the schedule's total_steps {cosine.total_steps}")
    cosine.warmup_steps = value


def _set_learning_rate(configs: dict, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"learning_rate must be a positive number, not {value!r}")
    _merge(configs, "learning_rate", float(value))


def _set_image_size(configs: dict, value: Any) -> None:
    height, width = (value, value) if isinstance(value, int) else tuple(value)
    for side in (height, width):
        _positive_int("image_size", side)
    resizer = configs["model"].ssd.image_resizer
    if resizer.WhichOneof("image_resizer_oneof") != "fixed_shape_resizer":
        raise ValueError("image_size needs a fixed_shape_resizer in the model config")
    resizer.fixed_shape_resizer.height = height
    resizer.fixed_shape_resizer.width = width


def _messages_named(message: Message, field_name: str) -> Iterator[Message]:
    """Every sub-message called `field_name` anywhere under `message` (depth first)."""
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        children = value if field.label == field.LABEL_REPEATED else [value]
        for child in children:
            if field.name == field_name:
                yield child
            yield from _messages_named(child, field_name)


def _set_batch_norm_decay(configs: dict, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError(f"batch_norm_decay must be between 0 and 1, not {value!r}")
    blocks = list(_messages_named(configs["model"], "batch_norm"))
    if not blocks:
        raise ValueError("batch_norm_decay: the model config has no batch_norm block")
    for block in blocks:
        block.decay = float(value)


def _set_augment(configs: dict, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"augment must be True or False, not {value!r}")
    if not value:
        configs["train_config"].ClearField("data_augmentation_options")


def _set_max_detections(configs: dict, value: Any) -> None:
    count = _positive_int("max_detections", value)
    nms = configs["model"].ssd.post_processing.batch_non_max_suppression
    nms.max_total_detections = count
    nms.max_detections_per_class = min(nms.max_detections_per_class or count, count)


def _set_num_classes(configs: dict, value: Any) -> None:
    _merge(configs, "num_classes", _positive_int("num_classes", value))


# Order matters: num_steps caps the warm-up, so an explicit warmup_steps is applied after it.
OVERRIDES: dict[str, Callable[[dict, Any], None]] = {
    "train_records": _set_train_records,
    "val_records": _set_val_records,
    "label_map": _set_label_map,
    "fine_tune_checkpoint": _set_fine_tune_checkpoint,
    "fine_tune_checkpoint_type": _set_fine_tune_checkpoint_type,
    "batch_size": _set_batch_size,
    "num_steps": _set_num_steps,
    "learning_rate": _set_learning_rate,
    "warmup_steps": _set_warmup_steps,
    "image_size": _set_image_size,
    "batch_norm_decay": _set_batch_norm_decay,
    "augment": _set_augment,
    "max_detections": _set_max_detections,
    "num_classes": _set_num_classes,
}


# Named sets of overrides for situations the config files do not describe; each value says why.
PRESETS: dict[str, dict[str, Any]] = {
    # Training from scratch on a CPU (benchmarks/bench_learning.py). 256x256: the findings that can be
    # learnt in minutes (heart, effusions, consolidations) span a fifth to a half of the film, and 256
    # costs 0.64x the time of 320 per image, so more steps fit the budget. Batch-norm decay 0.9: with
    # the configs' 0.997 the moving averages inference uses still lag far behind the batch statistics
    # after a few thousand steps from random weights (the demo measured mAP@0.5 0.025 against 0.967 on
    # its overfit images). The configs' cosine schedule, decaying to zero over the whole run, and their
    # augmentations (exposure, contrast, whole-finding crops; no flips) stay: a few hundred films seen
    # a hundred times over need them.
    "cpu-from-scratch": {"image_size": 256, "batch_norm_decay": 0.9, "augment": True},
}


def preset_overrides(name: str) -> dict[str, Any]:
    """The overrides of a named preset; an unknown name raises ValueError with the closest known one."""
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown preset {name!r}{hint}; known presets: {', '.join(PRESETS)}")
    return dict(PRESETS[name])


def check_override_names(names: Sequence[str]) -> None:
    """Raise ValueError naming every unknown override, each with its closest known name."""
    unknown = [name for name in names if name not in OVERRIDES]
    if not unknown:
        return
    lines = []
    for name in unknown:
        close = difflib.get_close_matches(name, OVERRIDES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        lines.append(f"unknown config override {name!r}{hint}")
    lines.append(f"known overrides: {', '.join(OVERRIDES)}")
    raise ValueError("\n".join(lines))


def apply_overrides(configs: dict, **overrides: Any) -> dict:
    """Return a copy of `configs` with the named overrides applied (see OVERRIDES for the names).

    A value of None leaves that setting alone, except fine_tune_checkpoint, where None or ""
    clears the checkpoint (training from scratch).
    """
    check_override_names(list(overrides))
    configs = copy_configs(configs)
    for name, setter in OVERRIDES.items():
        if name not in overrides:
            continue
        value = overrides[name]
        if value is None and name != "fine_tune_checkpoint":
            continue
        setter(configs, value)
    return configs


def image_size(configs: dict) -> tuple[int, int]:
    """(height, width) of the model's fixed_shape_resizer."""
    resizer = configs["model"].ssd.image_resizer.fixed_shape_resizer
    return resizer.height, resizer.width


def warmup_steps(configs: dict) -> int | None:
    """The cosine schedule's warm-up steps, or None for other learning-rate schedules."""
    cosine = _cosine_schedule(configs)
    return None if cosine is None else cosine.warmup_steps


def length_free_text(configs: dict) -> str:
    """The config text without the run's length (num_steps, the cosine total_steps and warm-up): equal for
    two configs that differ only in how long they train."""
    configs = copy_configs(configs)
    configs["train_config"].num_steps = 0
    cosine = _cosine_schedule(configs)
    if cosine is not None:
        cosine.total_steps = 0
        cosine.warmup_steps = 0
    return config_text(configs)
