"""detect.py and generate_tfrecords.py --beam with two workers equal their local runs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("apache_beam", reason="apache-beam is not installed (requirements.lock has it)")

from chestdet.commands import detect as detect_command  # noqa: E402
from chestdet.commands import generate_tfrecords  # noqa: E402
from chestdet.commands.cli import ExitStatus  # noqa: E402
from tests.conftest import LABEL_MAP, SAMPLE_CSV, SAMPLE_DATA_ENTRY, SAMPLE_IMAGES, SAMPLE_UNLABELED  # noqa: E402
from tests.e2e.test_detect_e2e import LAST_LINE, listed_inputs  # noqa: E402, F401
from tests.support.records import decode_records  # noqa: E402

pytestmark = pytest.mark.slow

TWO_WORKERS = "--beam-options=--direct_num_workers=2 --direct_running_mode=multi_processing"
TWO_THREADS = "--beam-options=--direct_num_workers=2 --direct_running_mode=multi_threading"


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def sorted_detections(path: Path) -> list[dict]:
    return sorted(read_rows(path), key=lambda r: (r["image"], -float(r["score"]), r["class_id"], r["xmin"]))


def assert_same_detections(beam: Path, local: Path) -> None:
    ours, theirs = sorted_detections(beam / "detections.csv"), sorted_detections(local / "detections.csv")
    assert len(ours) == len(theirs) > 0
    for a, b in zip(ours, theirs, strict=True):
        assert (a["image"], a["class_id"], a["width"], a["height"]) == (b["image"], b["class_id"], b["width"],
                                                                        b["height"])
        numbers = ("score", "xmin", "ymin", "xmax", "ymax")
        np.testing.assert_allclose([float(a[k]) for k in numbers], [float(b[k]) for k in numbers], atol=1e-4)


# Two worker processes load the SavedModel twice more than the local run: TFLite there, threads for the SavedModel.
@pytest.mark.parametrize(("backend", "workers"), [("tflite", TWO_WORKERS), ("savedmodel", TWO_THREADS)],
                         ids=["tflite-2-processes", "savedmodel-2-threads"])
def test_detect_with_two_beam_workers_equals_the_local_run(tiny_export: Path, listed_inputs: Path,  # noqa: F811
                                                           tmp_path: Path, backend: str, workers: str, capsys):
    outputs = {}
    for mode in ("local", "beam"):
        out = tmp_path / f"{mode} out"
        argv = ["--model", str(tiny_export), "--input", str(listed_inputs), "--output-dir", str(out),
                "--backend", backend, "--voc-xml", "--keep-score", "0.0", "--no-progress"]
        argv += ["--beam", workers] if mode == "beam" else []
        assert detect_command.main(argv) == ExitStatus.SUCCESS
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert LAST_LINE.search(last) and "9 images in " in last and last.endswith("; 1 errors"), last
        outputs[mode] = out
    beam, local = outputs["beam"], outputs["local"]
    assert_same_detections(beam, local)
    for table in ("images.csv", "errors.csv"):
        assert read_rows(beam / table) == read_rows(local / table)
    assert len(read_rows(beam / "errors.csv")) == 1
    assert len(json.loads((beam / "detections.json").read_text())) == len(read_rows(local / "detections.csv"))
    for folder in ("drawn", "voc"):
        # files, not names with a dot: drawn/ mirrors the inputs' folders, and a clone's path may hold dots
        names = sorted(p.relative_to(beam).as_posix() for p in (beam / folder).rglob("*") if p.is_file())
        assert names == sorted(p.relative_to(local).as_posix() for p in (local / folder).rglob("*") if p.is_file())
        assert len(names) == 8


def records_argv(output: Path, *extra: str) -> list[str]:
    return ["--nih-csv", str(SAMPLE_CSV), "--image-dir", str(SAMPLE_IMAGES), "--unlabeled-dir",
            str(SAMPLE_UNLABELED), "--data-entry", str(SAMPLE_DATA_ENTRY), "--label-map", str(LABEL_MAP),
            "--output-dir", str(output), "--shards", "2", *extra]


def test_records_with_two_beam_workers_hold_the_local_examples(tmp_path: Path):
    local, beam = tmp_path / "local", tmp_path / "beam"
    assert generate_tfrecords.main(records_argv(local)) == ExitStatus.SUCCESS
    assert generate_tfrecords.main(records_argv(beam, "--beam", TWO_WORKERS)) == ExitStatus.SUCCESS
    summary = json.loads((local / "summary.json").read_text())
    assert set(summary["splits"]) == {"train", "val", "test"}
    for split, counts in summary["splits"].items():
        local_examples = decode_records(sorted(local.glob(f"{split}-*.tfrecord")))
        beam_examples = decode_records(sorted(beam.glob(f"{split}-*.tfrecord")))
        assert len(beam_examples) == len(local_examples) == counts["images"]
        assert {name: e["raw"] for name, e in beam_examples.items()} == {
            name: e["raw"] for name, e in local_examples.items()}
        for name, example in beam_examples.items():
            np.testing.assert_array_equal(example["boxes"], local_examples[name]["boxes"])
    for report in ("rejects.csv", "split.csv", "label_map.pbtxt"):
        assert (beam / report).read_bytes() == (local / report).read_bytes(), report
    beam_summary = json.loads((beam / "summary.json").read_text())
    for report in (beam_summary, summary):
        for key in ("seconds", "images_per_second"):
            report["totals"].pop(key)
        report.pop("output_dir")
    assert beam_summary == summary
    assert sorted(p.name for p in beam.glob("*.tfrecord")) == sorted(p.name for p in local.glob("*.tfrecord"))
