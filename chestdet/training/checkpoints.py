"""A model folder's checkpoints: their files, steps and hashes, the evaluation results written beside them,
and the best one so far."""

from __future__ import annotations

import datetime as dt
import glob
import hashlib
import json
import logging
import shutil
from pathlib import Path

from chestdet.core import atomic
from chestdet.core.contracts import (
    BEST_DIR,
    BEST_RECORD,
    CHECKPOINT_STATE,
    EXPORT_RECORD,
    PIPELINE_FILE,
    RUN_EXPORT_DIR,
    SAVED_MODEL_DIR,
)

log = logging.getLogger(__name__)

STEP_VARIABLE = "step/.ATTRIBUTES/VARIABLE_VALUE"  # model_lib_v2.train_loop's global step
MAP50 = "DetectionBoxes_Precision/mAP@.50IOU"


# --- checkpoints ------------------------------------------------------------------------------------


def checkpoint_files(prefix: str | Path) -> list[Path]:
    """The files of a TF checkpoint given its prefix (ckpt-3 -> ckpt-3.index, ckpt-3.data-*)."""
    prefix = Path(prefix)
    index = prefix.with_name(prefix.name + ".index")
    if not index.is_file():
        return []
    data = sorted(prefix.parent.glob(glob.escape(prefix.name) + ".data-*"))
    return [index, *data]


def checkpoint_exists(prefix: str | Path) -> bool:
    return bool(checkpoint_files(prefix))


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """The SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_sha256(prefix: str | Path) -> dict[str, str]:
    """{file name: SHA-256} for every file of the checkpoint."""
    return {path.name: sha256_file(path) for path in checkpoint_files(prefix)}


def checkpoint_step(prefix: str | Path) -> int | None:
    """The training step an OD API checkpoint was saved at; None for one saved outside training."""
    import tensorflow as tf

    names = {name for name, _ in tf.train.list_variables(str(prefix))}
    if STEP_VARIABLE not in names:
        return None
    return int(tf.train.load_variable(str(prefix), STEP_VARIABLE))


def has_model_variables(prefix: str | Path) -> bool:
    """False for a checkpoint saved before the model was built (the OD API's ckpt-1 of a from-scratch
    run holds only the step and the save counter): it can be neither the best one nor exported."""
    import tensorflow as tf

    names = (name for name, _ in tf.train.list_variables(str(prefix)))
    return any(name.startswith("model/") and name.endswith("VARIABLE_VALUE") for name in names)


def run_folder_hint(path: str | Path) -> str | None:
    """When `path` is a training run folder (or its best/ copy) rather than an export, what to run instead."""
    from chestdet.core.shell import command, shown

    path = Path(path)
    run = path.parent if path.name == BEST_DIR and (path.parent / BEST_RECORD).is_file() else path
    is_run = (run / PIPELINE_FILE).is_file() and (run / CHECKPOINT_STATE).is_file()
    if not is_run or (run / SAVED_MODEL_DIR).is_dir():
        return None
    exported = run / RUN_EXPORT_DIR
    if (exported / EXPORT_RECORD).is_file():
        return f"{path} is a training run folder, not an export; its export is {shown(exported)}: pass that"
    source = run / BEST_RECORD if (run / BEST_RECORD).is_file() else run
    return (f"{path} is a training run folder, not an export: export it first with "
            f"{command('export')} --checkpoint {shown(source)}, then pass the export folder "
            f"({shown(exported)} by default) to --model")


def latest_checkpoint(model_dir: str | Path) -> Path | None:
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(str(model_dir))
    return Path(latest) if latest else None


def all_checkpoints(model_dir: str | Path) -> list[Path]:
    """The checkpoints the OD API's CheckpointManager still keeps, oldest first."""
    import tensorflow as tf

    state = tf.train.get_checkpoint_state(str(model_dir))
    if state is None:
        return []
    paths = [Path(p) if Path(p).is_absolute() else Path(model_dir) / p for p in state.all_model_checkpoint_paths]
    return [p for p in paths if checkpoint_exists(p)]


def latest_step(model_dir: str | Path) -> int:
    latest = latest_checkpoint(model_dir)
    return (checkpoint_step(latest) or 0) if latest else 0


# --- evaluation results and the best checkpoint ---------------------------------------------------------


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def read_scalars(directory: str | Path) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} from every TensorBoard event file under `directory` (later files win)."""
    import tensorflow as tf

    scalars: dict[str, dict[int, float]] = {}
    for path in sorted(Path(directory).rglob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime):
        try:
            for raw in tf.data.TFRecordDataset(str(path)):
                event = tf.compat.v1.Event.FromString(raw.numpy())
                for value in event.summary.value:
                    if value.HasField("simple_value"):
                        number = value.simple_value
                    elif value.HasField("tensor") and not value.tensor.tensor_shape.dim:
                        number = float(tf.make_ndarray(value.tensor))
                    else:
                        continue
                    scalars.setdefault(value.tag, {})[int(event.step)] = float(number)
        except tf.errors.DataLossError:
            log.debug("%s ends in a partly written record; reading what is complete", path)
    return scalars


def eval_metrics(model_dir: str | Path) -> dict[int, dict[str, float]]:
    """{step: {metric: value}} from the OD API's evaluation events in <model_dir>/eval."""
    by_step: dict[int, dict[str, float]] = {}
    eval_dir = Path(model_dir) / "eval"
    if not eval_dir.is_dir():
        return by_step
    for tag, values in read_scalars(eval_dir).items():
        for step, value in values.items():
            by_step.setdefault(step, {})[tag] = value
    return {step: metrics for step, metrics in sorted(by_step.items()) if MAP50 in metrics}


def update_best(model_dir: str | Path) -> dict | None:
    """Record (best.json) and copy (best/) the evaluated checkpoint with the highest val mAP@0.5.

    Returns the best record, or None while no evaluated checkpoint can be matched. A checkpoint the
    CheckpointManager has already deleted cannot be copied; the next best one still on disk is taken.
    A checkpoint without model variables (from-scratch ckpt-1) is never taken, whatever it scored.
    """
    model_dir = Path(model_dir)
    metrics = eval_metrics(model_dir)
    if not metrics:
        return None
    current = read_json(model_dir / BEST_RECORD) if (model_dir / BEST_RECORD).is_file() else None
    if current is not None and not _usable(model_dir / current["checkpoint"]):
        current = None  # recorded before checkpoints without model variables were excluded
    on_disk = {step: p for p in all_checkpoints(model_dir)
               if has_model_variables(p) and (step := checkpoint_step(p)) is not None}
    candidates = [(m[MAP50], step) for step, m in metrics.items() if step in on_disk]
    if current is not None:
        candidates.append((current["value"], current["step"]))
    if not candidates:
        return current
    value, step = max(candidates, key=lambda item: (item[0], item[1]))
    history = [{"step": s, MAP50: m[MAP50]} for s, m in metrics.items()]
    if current is not None and current["step"] == step:
        if current.get("evaluated") != history:
            current["evaluated"] = history
            atomic.write_json(model_dir / BEST_RECORD, current)
        return current
    source = on_disk[step]
    best = copy_checkpoint(source, model_dir / BEST_DIR)
    record = {
        "metric": MAP50,
        "value": value,
        "step": step,
        "checkpoint": str(best.relative_to(model_dir)),
        "copied_from": source.name,
        "sha256": checkpoint_sha256(best),
        "metrics": metrics[step],
        "evaluated": history,
        "updated": now(),
    }
    atomic.write_json(model_dir / BEST_RECORD, record)
    log.info("best checkpoint so far: step %d, val mAP@0.5 %.4f -> %s", step, value, best)
    return record


def _usable(prefix: Path) -> bool:
    return checkpoint_exists(prefix) and has_model_variables(prefix)


def copy_checkpoint(prefix: Path, directory: Path) -> Path:
    """Copy a checkpoint's files into `directory` (emptied first) and write its `checkpoint` state file."""
    staging = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for path in checkpoint_files(prefix):
        shutil.copy2(path, staging / path.name)
    (staging / CHECKPOINT_STATE).write_text(
        f'model_checkpoint_path: "{prefix.name}"\nall_model_checkpoint_paths: "{prefix.name}"\n', encoding="utf-8"
    )
    old = directory.with_name(f".{directory.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        directory.rename(old)
    staging.rename(directory)
    shutil.rmtree(old, ignore_errors=True)
    return directory / prefix.name


def best_checkpoint(model_dir: str | Path) -> Path | None:
    """The checkpoint prefix best.json names (for export), or None when there is none."""
    record_path = Path(model_dir) / BEST_RECORD
    if not record_path.is_file():
        return None
    return Path(model_dir) / read_json(record_path)["checkpoint"]
