"""Benchmark detect.py locally against detect.py --beam with 1 and 2 workers, on the same images.

    python benchmarks/bench_beam.py --work-dir W                 # 1,000 images; trains the model once (~10 min)
    python benchmarks/bench_beam.py --work-dir W --count 100     # a quick check (reuses W's model)
    python benchmarks/bench_beam.py --model EXPORT --count 100   # an existing export directory

The model is bench_detect.py's (a briefly trained 320x320 SSD MobileNet V2 FPNLite, cached in the work
dir), so the drawn images hold boxes as in real use. The images are NIH's (the full dev copy, else
the bundled sample), linked under distinct names until there are --count of them. Each contender
runs as its own process, timed from start to exit (imports, model loading and worker start-up
included), with the same backend (--backend, default tflite) and defaults otherwise:

- local: detect.py's threaded runner;
- beam, 1 worker / 2 workers: detect.py --beam on its default runner, Beam's in-process FnApiRunner
  in multi_threading mode, with --direct_num_workers 1 and 2;
- beam, 2 processes: the same in multi_processing mode (each worker process imports TensorFlow and
  opens the model itself).

It prints each rate, the ratio of each Beam rate to the local one (the goal: 2 workers at 0.8x or
better on 2 cores), and the largest difference between the local and the 2-worker detections.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from _common import NIH_DIR, REPO
from _common import SAMPLE_NIH_DIR as SAMPLE
from bench_detect import LAST_LINE, add_model_flags, prepare_inputs, timed

DEFAULT_IMAGES = [NIH_DIR, SAMPLE]
GOAL = 0.8
CONTENDERS = {
    "local": (),
    "beam, 1 worker": ("--beam", "--beam-options=--direct_num_workers=1"),
    "beam, 2 workers": ("--beam", "--beam-options=--direct_num_workers=2"),
    "beam, 2 processes": ("--beam", "--beam-options=--direct_num_workers=2 --direct_running_mode=multi_processing"),
}


def run_detect(export: Path, inputs: Path, out: Path, backend: str, *extra: str) -> tuple[float, str]:
    return timed([sys.executable, str(REPO / "scripts" / "detect.py"), "--model", str(export), "--input",
                  str(inputs), "--output-dir", str(out), "--backend", backend, "--no-progress", "--overwrite", *extra])


def detections(path: Path) -> list[tuple]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    numbers = ("score", "xmin", "ymin", "xmax", "ymax")
    return sorted((r["image"], int(r["class_id"]), *(float(r[k]) for k in numbers)) for r in rows)


def largest_difference(a: Path, b: Path) -> float | None:
    """The largest score or pixel difference between two runs' detections; None if the rows differ."""
    ours, theirs = detections(a / "detections.csv"), detections(b / "detections.csv")
    if len(ours) != len(theirs) or any(x[:2] != y[:2] for x, y in zip(ours, theirs, strict=True)):
        return None
    return max((abs(p - q) for x, y in zip(ours, theirs, strict=True) for p, q in zip(x[2:], y[2:], strict=True)),
               default=0.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_flags(parser)
    parser.add_argument("--backend", choices=("tflite", "savedmodel"), default="tflite",
                        help="the backend of every contender (default %(default)s)")
    parser.add_argument("--images", type=Path, help="NIH folder with images/ and unlabeled/")
    parser.add_argument("--work-dir", type=Path, help="where to put inputs and outputs (default: a temp dir)")
    args = parser.parse_args(argv)
    source, work, export, inputs = prepare_inputs(args, "bench-beam-")
    print(f"{args.count} images from {source}, export {export}, {args.backend} backend, work dir {work}", flush=True)

    seconds = {}
    for name, extra in CONTENDERS.items():
        out = work / name.replace(", ", "_").replace(" ", "_")
        seconds[name], log = run_detect(export, inputs, out, args.backend, *extra)
        last = LAST_LINE.search(log)
        print(f"{name}: {seconds[name]:.1f} s; last line: {last.group(0) if last else '(none)'}", flush=True)

    local_rate = args.count / seconds["local"]
    print(f"\n{'contender':<18} {'wall s':>8} {'images/s':>9} {'vs local':>9}")
    for name, wall in seconds.items():
        rate = args.count / wall
        print(f"{name:<18} {wall:8.1f} {rate:9.2f} {rate / local_rate:8.2f}x")
    ratio = (args.count / seconds["beam, 2 workers"]) / local_rate
    print(f"beam with 2 workers at {ratio:.2f}x the local rate (goal: {GOAL}x or better): "
          f"{'met' if ratio >= GOAL else 'not met'}")
    difference = largest_difference(work / "local", work / "beam_2_workers")
    print("local and beam detections: " + ("different rows" if difference is None
                                           else f"same rows, largest score or pixel difference {difference:.2g}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
