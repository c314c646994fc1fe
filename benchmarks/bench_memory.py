"""Peak memory of scripts/detect.py as the input grows: it should not grow with the number of images.

    python benchmarks/bench_memory.py                                  # 500 and 20,000 images
    python benchmarks/bench_memory.py --counts 200 2000                # a quick check
    python benchmarks/bench_memory.py --model EXPORT                   # an existing export directory

The model is the project's SSD at 128x128 with random weights, exported with TFLite (made once and
cached in the work dir, default workspace/bench/memory, as tiny-export-128/; building it takes a
few minutes). Random weights score
every box about 0.01 and the export keeps all of them (TFLite NMS floor 0), so with --keep-score 0
every image brings its 100 detections into every table: the most a run can have to hold.

Each count gets a folder of that many symlinks (distinct names) to the NIH images (the full dev
copy, else the bundled sample), and detect.py runs on it in its own process, TFLite backend, one
run after the other. The figure is that process's peak resident set size (`ru_maxrss` from
`os.wait4`). It prints one line per count and the growth from the smallest count to the largest;
the goal is within 10%.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import NIH_DIR, REPO, SAMPLE_NIH_DIR

GOAL = 0.10


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--work-dir", type=Path, default=REPO / "workspace" / "bench" / "memory",
                        help="cache for the model, inputs and outputs (default: workspace/bench/memory)")
    parser.add_argument("--model", type=Path, help="an export directory with model.tflite (default: a tiny one)")
    parser.add_argument("--counts", type=int, nargs="+", default=[500, 20_000], help="input sizes (default: 500 20000)")
    parser.add_argument("--images", type=Path, help="folder of the images to link (default: the NIH images)")
    return parser


def tiny_export(work_dir: Path) -> Path:
    export = work_dir / "tiny-export-128" / "export"
    if not (export / "model.tflite").is_file():
        sys.path.insert(0, str(REPO))
        from tests.support.model_fixtures import make_tiny_export

        shutil.rmtree(export.parent, ignore_errors=True)
        make_tiny_export(export.parent, image_size=128)
    return export


def linked_inputs(folder: Path, sources: list[Path], count: int) -> Path:
    """`count` symlinks named image_000001.png ... to the sources, in turn (made once)."""
    if folder.is_dir() and sum(1 for _ in folder.iterdir()) == count:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for index in range(count):
        source = sources[index % len(sources)]
        (folder / f"image_{index + 1:06d}{source.suffix}").symlink_to(source.resolve())
    return folder


def peak_rss(model: Path, inputs: Path, out: Path) -> tuple[int, float, str]:
    """detect.py's peak RSS in bytes, its wall time, and its last log line."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, str(REPO / "scripts" / "detect.py"), "--model", str(model), "--input", str(inputs),
               "--output-dir", str(out), "--backend", "tflite", "--keep-score", "0", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    log = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"detect.py exited with {process.returncode}:\n{log[-3000:]}")
    last = [line for line in log.splitlines() if " images in " in line]
    shutil.rmtree(out, ignore_errors=True)  # 20,000 drawn copies are gigabytes
    return usage.ru_maxrss * 1024, seconds, last[-1] if last else ""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    model = args.model or tiny_export(args.work_dir)
    folder = args.images or next(d / "images" for d in (NIH_DIR, SAMPLE_NIH_DIR) if (d / "images").is_dir())
    sources = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
    print(f"model {model}; {len(sources)} source images from {folder}")
    peaks = {}
    for count in sorted(args.counts):
        inputs = linked_inputs(args.work_dir / f"inputs-{count}", sources, count)
        peak, seconds, last = peak_rss(model, inputs, args.work_dir / f"out-{count}")
        peaks[count] = peak
        print(f"{count:>7} images: peak RSS {peak / 2**20:8.1f} MiB in {seconds:7.1f} s  ({last.split('] ')[-1]})")
    low, high = min(peaks), max(peaks)
    growth = peaks[high] / peaks[low] - 1
    verdict = "within" if growth <= GOAL else "over"
    print(f"peak RSS at {high} images vs {low}: {growth:+.1%} ({verdict} the {GOAL:.0%} goal)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
