"""The Beam pipelines on Beam's in-process runner: the same outputs as the local runners, offline defaults."""

from __future__ import annotations

import functools
import json
import logging
import tempfile
from pathlib import Path

import cv2
import pytest

pytest.importorskip("apache_beam", reason="apache-beam is not installed (requirements.lock has it)")

from chestdet.core.system import available_cpus  # noqa: E402
from chestdet.detection import beam_pipelines, detect
from chestdet.detection.inputs import list_inputs  # noqa: E402
from tests.conftest import SAMPLE_IMAGES  # noqa: E402
from tests.detection.test_detect import CLASS_NAMES, FakeBackend, mixed_inputs  # noqa: E402, F401
from tests.support.datasets import make_messy_dataset, run_records  # noqa: E402

IN_MEMORY = "--direct_running_mode=in_memory --direct_num_workers=1"
TWO_THREADS = "--direct_running_mode=multi_threading --direct_num_workers=2"


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` (run.json aside: it records how the run was started), by relative path."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "run.json" and p.name != ".journal.jsonl"}


def detect_both_ways(inputs: Path, tmp_path: Path, backend=FakeBackend, max_batch: int = 1,
                     beam_options: str = IN_MEMORY, **options) -> tuple[Path, Path, detect.RunSummary,
                                                                        detect.RunSummary]:
    local, beam = tmp_path / "local out", tmp_path / "beam out"
    settings = detect.DetectOptions(**options)
    images = list_inputs(inputs)
    for out in (local, beam):
        detect.prepare_output_dir(out, {}, resume=False, overwrite=False)
    local_summary = detect.detect_images(images, backend(), CLASS_NAMES, local, settings)
    beam_summary = beam_pipelines.detect_with_beam(images, backend, CLASS_NAMES, beam, settings, beam_options,
                                                   max_batch)
    return local, beam, local_summary, beam_summary


# ------------------------------------------------------------------ options


def test_default_options_select_the_in_process_runner_and_never_prism(monkeypatch, tmp_path):
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions
    from apache_beam.runners.portability import prism_runner
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from apache_beam.runners.runner import create_runner

    options = beam_pipelines.pipeline_options(None)
    assert options.view_as(StandardOptions).runner == "FnApiRunner"
    direct = options.view_as(DirectOptions)
    assert (direct.direct_running_mode, direct.direct_num_workers) == ("multi_threading", available_cpus())
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # a pipeline never run keeps its temp folder
    assert type(beam_pipelines.make_pipeline(options).runner) is FnApiRunner
    assert type(create_runner("FnApiRunner")) is FnApiRunner
    records = beam_pipelines.pipeline_options(None, beam_pipelines.RECORDS_MODE).view_as(DirectOptions)
    assert records.direct_running_mode == "multi_processing"

    def no_prism(*_args, **_kwargs):
        raise AssertionError("the default options reached the Prism runner")

    monkeypatch.setattr(prism_runner.PrismRunner, "run_pipeline", no_prism)
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    with beam_pipelines.make_pipeline(beam_pipelines.pipeline_options(IN_MEMORY)) as pipeline:
        assert_that(pipeline | beam.Create([1, 2]) | beam.Map(lambda x: x + 1), equal_to([2, 3]))


def test_given_options_override_the_defaults_and_other_runners_are_kept(caplog):
    from apache_beam.options.pipeline_options import DirectOptions, FlinkRunnerOptions, StandardOptions

    options = beam_pipelines.pipeline_options("--direct_num_workers=2 --direct_running_mode=multi_processing")
    assert options.view_as(StandardOptions).runner == "FnApiRunner"
    assert options.view_as(DirectOptions).direct_num_workers == 2
    flink = beam_pipelines.pipeline_options("--runner=FlinkRunner --flink_master='host:8081'")
    assert flink.view_as(StandardOptions).runner == "FlinkRunner"
    assert flink.view_as(FlinkRunnerOptions).flink_master == "host:8081"
    with caplog.at_level(logging.WARNING):
        beam_pipelines.pipeline_options("--runner=DirectRunner")
    assert "Prism" in caplog.text
    with pytest.raises(beam_pipelines.BeamError, match="cannot split"):
        beam_pipelines.pipeline_options("--job_name='unclosed")


# ------------------------------------------------------------------ detection


def test_detect_pipeline_writes_what_the_local_runner_writes(mixed_inputs: Path, tmp_path: Path, caplog):  # noqa: F811
    with caplog.at_level(logging.INFO, logger="chestdet.beam"):
        local, beam, local_summary, beam_summary = detect_both_ways(mixed_inputs, tmp_path, voc_xml=True)
    assert tree(beam) == tree(local)
    assert "errors.csv" in tree(beam) and "voc/gray.xml" in tree(beam)
    assert (beam_summary.processed, beam_summary.errors) == (local_summary.processed, local_summary.errors) == (9, 3)
    assert "decode: 9 images, 3 unreadable" in caplog.text
    assert "infer: 6 images, 6 batches" in caplog.text
    assert "draw: 9 images, 3 errors" in caplog.text
    assert "tables: 9 images" in caplog.text
    assert "drawn 9 of 9 images" in caplog.text


def test_batches_of_mixed_sizes_reach_the_backend_one_shape_at_a_time(mixed_inputs: Path, tmp_path: Path,  # noqa: F811
                                                                        caplog):
    small = cv2.resize(cv2.imread(str(SAMPLE_IMAGES / sorted(p.name for p in SAMPLE_IMAGES.glob("*.png"))[3])),
                       (300, 200))
    cv2.imwrite(str(mixed_inputs / "gray.5 small.png"), small)
    with caplog.at_level(logging.INFO, logger="chestdet.beam"):
        local, beam, _, _ = detect_both_ways(mixed_inputs, tmp_path, functools.partial(FakeBackend, max_batch=4),
                                             max_batch=4, beam_options=TWO_THREADS)
    assert tree(beam) == tree(local)
    rows = (beam / "images.csv").read_text().splitlines()
    assert "gray.5 small.png,{},300,200,2".format(mixed_inputs / "gray.5 small.png") in rows
    assert "infer: 7 images" in caplog.text  # the 3 unusable files pass uninferred


def test_the_command_refuses_resume_and_stray_beam_options(tmp_path: Path, caplog):
    from chestdet.commands.cli import ExitStatus, run_main
    from chestdet.commands.detect import main

    model = tmp_path / "export"
    model.mkdir()
    base = ["--model", str(model), "--input", str(SAMPLE_IMAGES), "--output-dir", str(tmp_path / "o")]
    assert run_main(main, [*base, "--beam", "--resume"]) == ExitStatus.ERROR
    assert "--resume is not available with --beam" in caplog.text
    assert run_main(main, [*base, "--beam-options=--direct_num_workers=2"]) == ExitStatus.ERROR
    assert "--beam-options needs --beam" in caplog.text


# ------------------------------------------------------------------ records


def test_records_pipeline_writes_the_local_shards_rejects_and_summary(tmp_path: Path):
    dataset = make_messy_dataset(tmp_path)
    local, beam = tmp_path / "local", tmp_path / "beam"
    assert run_records(dataset, local) == 0
    assert run_records(dataset, beam, "--beam", f"--beam-options={IN_MEMORY}") == 0
    local_files, beam_files = tree(local), tree(beam)
    assert sorted(beam_files) == sorted(local_files)
    assert len([name for name in beam_files if name.endswith(".tfrecord")]) >= 3
    for name in local_files:
        if name != "summary.json":
            assert beam_files[name] == local_files[name], name
    assert without_timing(beam / "summary.json") == without_timing(local / "summary.json")
    assert not [p for p in beam.iterdir() if p.name.startswith(".")]


def without_timing(path: Path) -> dict:
    summary = json.loads(path.read_text())
    for key in ("seconds", "images_per_second"):
        summary["totals"].pop(key)
    summary.pop("output_dir")
    return summary


WORKER_PIPELINE = """
import apache_beam as beam
from chestdet.detection import beam_pipelines
options = beam_pipelines.pipeline_options("--direct_running_mode=multi_processing --direct_num_workers=1")
pipeline = beam_pipelines.make_pipeline(options)
_ = pipeline | beam.Create([1, 2, 3]) | beam.Map(lambda x: x * 2)
beam_pipelines._run(pipeline)
print("ran in a worker process")
"""


@pytest.mark.slow
def test_worker_processes_start_from_an_interpreter_whose_path_holds_a_space(tmp_path: Path):
    """Beam runs `{sys.executable} -m ...` through a shell: unquoted, a clone in "My Projects/" waited forever."""
    import subprocess
    import sys

    venv = Path(sys.prefix)
    spaced = tmp_path / "my projects" / "venv"
    spaced.parent.mkdir()
    spaced.symlink_to(venv, target_is_directory=True)
    run = subprocess.run([str(spaced / "bin" / "python"), "-c", WORKER_PIPELINE], capture_output=True, text=True,
                         timeout=300, cwd=Path(__file__).parents[2])
    assert run.returncode == 0 and "ran in a worker process" in run.stdout, run.stderr[-2000:]
