"""Benchmark Grad-CAM explanations against detection alone, on the same images and model.

    python benchmarks/bench_explain.py --work-dir W              # 100 images; trains the model once (~10 min)
    python benchmarks/bench_explain.py --work-dir W --count 20   # a quick check (reuses W's model)
    python benchmarks/bench_explain.py --model EXPORT            # an existing export directory

The model and the images are bench_detect.py's: a briefly trained SSD MobileNet V2 FPNLite 320x320
(cached in the work dir as model-<steps>-steps/, shared with bench_detect.py given the same work dir)
and NIH images linked under distinct names. Each contender runs as its own process, timed from start
to exit: scripts/detect.py with --backend (default auto: TFLite on a CPU), defaults otherwise, and
the same with --explain, in turn: one pair to warm the disk cache, then --runs timed pairs.

It prints each pair's wall times and ratio, then the medians; the goal is detect --explain at most
3x detect's time.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from bench_detect import DEFAULT_IMAGES, SAMPLE, link_images, make_export, run_detect

GOAL = 3.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100, help="number of images (default 100)")
    parser.add_argument("--model", type=Path,
                        help="export directory (default: train and export a 320x320 model, cached in the work dir)")
    parser.add_argument("--train-steps", type=int, default=200,
                        help="training steps of the default model (default %(default)s)")
    parser.add_argument("--backend", default="auto", help="detect.py --backend (default auto)")
    parser.add_argument("--runs", type=int, default=5, help="timed pairs of detect and detect --explain (default 5)")
    parser.add_argument("--images", type=Path, help="NIH folder with images/ and unlabeled/")
    parser.add_argument("--work-dir", type=Path, help="where to put inputs and outputs (default: a temp dir)")
    args = parser.parse_args(argv)

    source = args.images or next((p for p in DEFAULT_IMAGES if (p / "images").is_dir()), DEFAULT_IMAGES[-1])
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench-explain-"))
    export = args.model or make_export(work, SAMPLE, args.train_steps)
    inputs = work / "explain-inputs"
    if not inputs.is_dir() or len(list(inputs.iterdir())) != args.count:
        shutil.rmtree(inputs, ignore_errors=True)
        link_images(source, args.count, inputs)
    print(f"{args.count} images from {source}, export {export}, work dir {work}", flush=True)

    paired_runs(export, inputs, work, args.backend, args.runs)
    return 0


def paired_runs(export: Path, inputs: Path, work: Path, backend: str, runs: int) -> None:
    """detect and detect --explain in turn, `runs` pairs after one unrecorded pair; prints each pair and
    the medians (the ratio's median is taken pair by pair, which keeps it fair on a drifting machine)."""
    pairs = []
    for run in range(runs + 1):
        alone, _ = run_detect(export, inputs, work / "explain-detect", backend)
        explained, _ = run_detect(export, inputs, work / "explain-detect-explain", backend, "--explain")
        if run:
            pairs.append((alone, explained))
            print(f"run {run}: detect {alone:.2f} s, detect --explain {explained:.2f} s = {explained / alone:.2f}x",
                  flush=True)
    alone, explained = (statistics.median(p[i] for p in pairs) for i in (0, 1))
    ratio = statistics.median(e / a for a, e in pairs)
    print(f"median over {runs} runs ({backend}): detect {alone:.2f} s, detect --explain {explained:.2f} s, "
          f"ratio {ratio:.2f}x detect (goal <= {GOAL:g}x)")


if __name__ == "__main__":
    sys.exit(main())
