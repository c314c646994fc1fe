"""Benchmark Grad-CAM explanations against detection alone, on the same images and model.

    python benchmarks/bench_explain.py --work-dir W              # 100 images; trains the model once (~10 min)
    python benchmarks/bench_explain.py --work-dir W --count 20   # a quick check (reuses W's model)
    python benchmarks/bench_explain.py --model EXPORT            # an existing export directory

The model and the images are bench_detect.py's: a briefly trained SSD MobileNet V2 FPNLite 320x320
(cached in the work dir as model-<steps>-steps/, shared with bench_detect.py given the same work dir)
and NIH images linked under distinct names. Each contender runs as its own process, timed from start
to exit:

- detect: scripts/detect.py with --backend (default auto: TFLite on a CPU), defaults otherwise;
- detect --explain, when scripts/detect.py has the flag, the two in turn: one pair to warm the
  disk cache, then --runs timed pairs, whose medians are printed;
- explain: chestdet.explain over the images and boxes of the detect run (those scoring at least
  --min-score, detect's drawing threshold), the way detect --explain uses it: Explainer.open, then
  Explainer.write per image with a box, in --workers threads; it also reports the model's loading,
  the first call (tracing) and the time per image after that.

It prints each wall time and the ratio of detect with explanations to detect alone (the goal is at
most 3x): detect --explain over detect when the flag exists, else (detect + explain) over detect,
an upper bound, since detect --explain overlaps the explainer's loading with detection.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import REPO
from bench_detect import DEFAULT_IMAGES, SAMPLE, link_images, make_export, run_detect, timed

GOAL = 3.0


def explain_run(export: Path, detections_dir: Path, out: Path, record: Path, min_score: float, workers: int) -> None:
    """Explain every image of a detect run that has a box scoring >= min_score (run in its own process)."""
    import pandas as pd

    from chestdet.backends import Detection
    from chestdet.explain import Explainer
    from chestdet.imaging import read_image

    started = time.perf_counter()
    explainer = Explainer.open(export)
    loaded = time.perf_counter()
    table = pd.read_csv(detections_dir / "detections.csv")
    table = table[table["score"] >= min_score]
    boxes = {
        name: [Detection(int(r.class_id), float(r.score), r.xmin, r.ymin, r.xmax, r.ymax) for r in rows.itertuples()]
        for name, rows in table.groupby("image")
    }
    paths = dict(pd.read_csv(detections_dir / "images.csv")[["image", "path"]].itertuples(index=False))
    names = [name for name in paths if name in boxes]

    def explain_one(name: str) -> int:
        explanation = explainer.write(out, name, read_image(Path(paths[name])), boxes[name])
        return len(explanation.unexplained) if explanation is not None else 0

    first_name, rest = (names[0], names[1:]) if names else (None, [])
    unexplained = explain_one(first_name) if first_name else 0
    first = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        unexplained += sum(pool.map(explain_one, rest))
    done = time.perf_counter()
    record.write_text(json.dumps({
        "load_seconds": loaded - started, "first_call_seconds": first - loaded, "rest_seconds": done - first,
        "images": len(names), "rest_images": len(rest), "boxes": int(sum(len(b) for b in boxes.values())),
        "unexplained": unexplained,
    }))


def detect_has_explain() -> bool:
    helped = subprocess.run([sys.executable, str(REPO / "scripts" / "detect.py"), "--help"],
                            capture_output=True, text=True)
    return "--explain" in helped.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100, help="number of images (default 100)")
    parser.add_argument("--model", type=Path,
                        help="export directory (default: train and export a 320x320 model, cached in the work dir)")
    parser.add_argument("--train-steps", type=int, default=200,
                        help="training steps of the default model (default %(default)s)")
    parser.add_argument("--backend", default="auto", help="detect.py --backend (default auto)")
    parser.add_argument("--runs", type=int, default=5, help="timed pairs of detect and detect --explain (default 5)")
    parser.add_argument("--min-score", type=float, default=0.3,
                        help="boxes explained: those scoring at least this (detect.py's default --min-score)")
    parser.add_argument("--workers", type=int, default=None, help="explaining threads (default: the CPU count)")
    parser.add_argument("--images", type=Path, help="NIH folder with images/ and unlabeled/")
    parser.add_argument("--work-dir", type=Path, help="where to put inputs and outputs (default: a temp dir)")
    parser.add_argument("--explain-only", nargs=4, metavar=("EXPORT", "DETECTIONS", "OUT", "RECORD"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from chestdet.cli import available_cpus

    workers = args.workers or available_cpus()
    if args.explain_only:
        export, detections, out, record = (Path(p) for p in args.explain_only)
        explain_run(export, detections, out, record, args.min_score, workers)
        return 0

    source = args.images or next((p for p in DEFAULT_IMAGES if (p / "images").is_dir()), DEFAULT_IMAGES[-1])
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench-explain-"))
    export = args.model or make_export(work, SAMPLE, args.train_steps)
    inputs = work / "explain-inputs"
    if not inputs.is_dir() or len(list(inputs.iterdir())) != args.count:
        shutil.rmtree(inputs, ignore_errors=True)
        link_images(source, args.count, inputs)
    print(f"{args.count} images from {source}, export {export}, work dir {work}", flush=True)

    if detect_has_explain():
        paired_runs(export, inputs, work, args.backend, args.runs)
        return 0
    detect_seconds, _ = run_detect(export, inputs, work / "explain-detect", args.backend)
    print(f"detect ({args.backend}): {detect_seconds:.1f} s", flush=True)
    record = work / "explain.json"
    command = [sys.executable, __file__, "--explain-only", str(export), str(work / "explain-detect"),
               str(work / "explain-out"), str(record), "--min-score", str(args.min_score), "--workers", str(workers)]
    explain_seconds, _ = timed(command)
    figures = json.loads(record.read_text())
    print_figures(detect_seconds, explain_seconds, figures, args.count)
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


def print_figures(detect_seconds: float, explain_seconds: float, figures: dict, count: int) -> None:
    per_image = figures["rest_seconds"] / figures["rest_images"] if figures["rest_images"] else float("nan")
    print(f"explain: {explain_seconds:.1f} s wall for {figures['images']} of {count} images with boxes "
          f"({figures['boxes']} boxes, {figures['unexplained']} not explained): model built and restored in "
          f"{figures['load_seconds']:.1f} s, first image (tracing) {figures['first_call_seconds']:.1f} s, then "
          f"{1000 * per_image:.0f} ms per image")
    total = detect_seconds + explain_seconds
    steady = detect_seconds + per_image * figures["images"]
    print(f"detect + explain: {total:.1f} s = {total / detect_seconds:.2f}x detect (goal <= {GOAL:g}x); "
          f"without the explainer's start-up (which detect --explain overlaps with detection): "
          f"{steady / detect_seconds:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
