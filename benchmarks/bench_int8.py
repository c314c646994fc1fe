"""The INT8 TFLite model against the float one: detect.py's speed, and how many of the float boxes it keeps.

    python benchmarks/bench_int8.py --checkpoint RUN --images DIR --work-dir W   # exports both, 1,000 films
    python benchmarks/bench_int8.py --float EXPORT --int8 EXPORT_INT8 --images DIR --count 200 --runs 1

With --checkpoint (a run folder or checkpoint prefix) it exports the float model and the INT8 one
(`export.sh --no-saved-model`, and `--int8`: calibrated on the first --calibration-images images of
the run's training records) into the work dir, or reuses them there. The films are the PNGs of
--images (a folder, or a NIH folder with images/ and unlabeled/) that the training records do not
hold, nor the records the INT8 model was calibrated on (held out), linked under distinct names until
there are --count of them.

It prints, per model, the stages' costs and limit (benchmarks/_stages.py) and detect.py's rate (the
median of --runs whole processes, TFLite backend, defaults otherwise) and their ratio; then the
agreement over the distinct films: the share of the float model's boxes scoring >= 0.3 that INT8
reproduces (a box of the same class at IoU >= 0.9, each used once), and the score differences of
those pairs. Goals: >= 1.6x the float rate, >= 95% of the boxes kept.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import REPO
from bench_detect import median_run, run_detect_process, stage_limit

MIN_SCORE = 0.3
MIN_IOU = 0.9


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--checkpoint", type=Path, help="a trained run folder or prefix: export both models")
    parser.add_argument("--float", dest="float_export", type=Path, help="an export with a float model.tflite")
    parser.add_argument("--int8", dest="int8_export", type=Path, help="an export with an INT8 model.tflite")
    parser.add_argument("--images", type=Path, required=True, help="folder of PNG films (or a NIH folder)")
    parser.add_argument("--count", type=int, default=1000, help="films per detect run (default 1000)")
    parser.add_argument("--runs", type=int, default=3, help="detect runs per model; the median counts (default 3)")
    parser.add_argument("--calibration-images", type=int, default=300, help="with --checkpoint (default 300)")
    parser.add_argument("--calibration-records", nargs="+",
                        help="with --checkpoint: records to calibrate on (default: the run's training records)")
    parser.add_argument("--work-dir", type=Path, help="exports, inputs and outputs (default: a temp dir)")
    return parser


def export_pair(checkpoint: Path, work: Path, calibration_images: int,
                calibration_records: list[str] | None) -> tuple[Path, Path]:
    """The float and INT8 TFLite exports of `checkpoint`, made once per work dir."""
    exports = (work / "export-float", work / "export-int8")
    int8 = ["--int8", "--calibration-images", str(calibration_images)]
    int8 += ["--calibration-records", *calibration_records] if calibration_records else []
    for export, extra in zip(exports, ([], int8), strict=True):
        if not (export / "export.json").is_file():
            subprocess.run([sys.executable, str(REPO / "scripts" / "export.py"), "--checkpoint", str(checkpoint),
                            "--output-dir", str(export), "--no-saved-model", "--overwrite", *extra], check=True)
    return exports


def seen_names(float_export: Path, int8_export: Path) -> set[str]:
    """The image names (image/filename) of the float export's training records, read as its config names
    them, and of the records the INT8 model was calibrated on, as its export.json lists them."""
    import tensorflow as tf

    from chestdet.export.calibration import record_files, train_records
    from chestdet.training.pipeline_config import load_configs

    files = [str(path) for path in record_files(train_records(load_configs(float_export / "pipeline.config")))]
    quantization = json.loads((int8_export / "export.json").read_text())["tflite"].get("quantization", {})
    files += quantization.get("calibration", {}).get("records", [])
    names = set()
    for raw in tf.data.TFRecordDataset(files):
        feature = tf.train.Example.FromString(raw.numpy()).features.feature["image/filename"]
        names.add(Path(feature.bytes_list.value[0].decode("utf-8")).name)
    return names


def held_out_inputs(source: Path, exclude: set[str], count: int, folder: Path) -> int:
    """Link `count` held-out films into `folder`; returns how many distinct films there are."""
    films = sorted((source / "images").glob("*.png")) + sorted((source / "unlabeled").glob("*.png"))
    films = [p for p in (films or sorted(source.glob("*.png"))) if p.name not in exclude]
    if not films:
        raise SystemExit(f"no held-out PNG films under {source}")
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    for i in range(count):
        (folder / f"{i:04d}_{films[i % len(films)].name}").symlink_to(films[i % len(films)].resolve())
    return min(count, len(films))


def grouped(csv_path: Path, names: list[str]) -> list[list]:
    import pandas as pd

    from chestdet.core.detections import Detection

    table = pd.read_csv(csv_path)
    by_image = {name: [Detection(int(r.class_id), float(r.score), r.xmin, r.ymin, r.xmax, r.ymax)
                       for r in rows.itertuples()] for name, rows in table.groupby("image")}
    return [by_image.get(name, []) for name in names]


def agreement(float_dir: Path, int8_dir: Path, names: list[str]) -> tuple[int, list[float]]:
    """(the float model's boxes >= MIN_SCORE, the signed score differences of those INT8 reproduces)."""
    from chestdet.export.agreement import matched_pairs

    total, differences = 0, []
    for refs, cands in zip(grouped(float_dir / "detections.csv", names), grouped(int8_dir / "detections.csv", names),
                           strict=True):
        refs = sorted((d for d in refs if d.score >= MIN_SCORE), key=lambda d: -d.score)
        total += len(refs)
        differences += [cand.score - ref.score for ref, cand in matched_pairs(refs, cands, MIN_IOU, 1.0)]
    return total, differences


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench-int8-"))
    if args.checkpoint is not None:
        float_export, int8_export = export_pair(args.checkpoint, work, args.calibration_images,
                                                  args.calibration_records)
    elif args.float_export and args.int8_export:
        float_export, int8_export = args.float_export, args.int8_export
    else:
        raise SystemExit("pass --checkpoint, or both --float and --int8")
    inputs = work / "held-out"
    distinct = held_out_inputs(args.images, seen_names(float_export, int8_export), args.count, inputs)
    print(f"{args.count} films ({distinct} distinct, held out from the training and calibration records) from "
          f"{args.images}; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    models = {"float": float_export, "int8": int8_export}
    limits = {name: stage_limit(export, inputs, "tflite") for name, export in models.items()}
    runs = {name: [] for name in models}
    for _ in range(args.runs):
        for name, export in models.items():
            runs[name].append(run_detect_process(export, inputs, work / f"detect_{name}", "tflite"))
    print(f"\n{'model':<6} {'infer ms':>9} {'limit/s':>8} {'detect/s':>9} {'vs float':>9} {'runs (s)':>20}")
    base = args.count / median_run(runs["float"])["seconds"]
    for name in models:
        rate = args.count / median_run(runs[name])["seconds"]
        seconds = " ".join(f"{run['seconds']:.1f}" for run in runs[name])
        print(f"{name:<6} {limits[name]['ms']['inference']:9.2f} {limits[name]['limit']:8.2f} {rate:9.2f} "
              f"{rate / base:8.2f}x {seconds:>20}")
    names = sorted(path.name for path in inputs.iterdir())[:distinct]
    total, differences = agreement(work / "detect_float", work / "detect_int8", names)
    kept = len(differences) / total if total else 1.0
    print(f"\nINT8 keeps {len(differences)} of the float model's {total} boxes >= {MIN_SCORE} "
          f"({100 * kept:.1f}%; same class, IoU >= {MIN_IOU}) on {distinct} films")
    if differences:
        absolute = sorted(abs(d) for d in differences)
        print(f"score differences (INT8 - float) of those boxes: mean {statistics.mean(differences):+.4f}, "
              f"median |d| {statistics.median(absolute):.4f}, 95th percentile |d| "
              f"{absolute[int(0.95 * (len(absolute) - 1))]:.4f}, largest |d| {absolute[-1]:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
