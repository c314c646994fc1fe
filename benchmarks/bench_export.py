"""Time the export and the two exported models: the export command and its phases, loading, per-image inference.

    .venv/bin/python benchmarks/bench_export.py                         # random 320x320 weights, 40 images
    .venv/bin/python benchmarks/bench_export.py --images 4 --runs 1     # a quick check
    .venv/bin/python benchmarks/bench_export.py --checkpoint workspace/runs/overfit   # + TFLite agreement

The export is `scripts/export.py` (SavedModel and TFLite), run --runs times as its own process and
timed from start to exit; the table gives the median run, its phases as export.json records them
(restore: build the model and restore the checkpoint; SavedModel; TFLite: trace, save the TFLite
graph, convert) and every run's seconds.

Without --checkpoint a randomly initialised checkpoint of the project's config is made (speed does
not depend on the weights); the TFLite agreement needs a trained checkpoint (an untrained model
scores every box about 0.01, so nothing passes the 0.3 threshold) and is reported only with one.
Inference runs on the bundled NIH sample (1024x1024 PNGs) through chestdet.export.backends, as detect does:
the SavedModel resizes inside its graph; TFLite's time is shown with and without the resize and
scaling done before it. The last lines are a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, SAMPLE_NIH_DIR

SAMPLE_IMAGES = SAMPLE_NIH_DIR / "images"
SAMPLE_UNLABELED = SAMPLE_NIH_DIR / "unlabeled"


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path,
                        help="a trained run folder or checkpoint prefix (default: random weights at 320x320)")
    parser.add_argument("--config", type=Path, help="its pipeline config (default: the run folder's)")
    parser.add_argument("--images", type=int, default=40, help="sample images to run (default: all 40)")
    parser.add_argument("--threads", type=int, default=2, help="TFLite interpreter threads (default: 2)")
    parser.add_argument("--runs", type=int, default=3, help="export commands to time; the median counts (default 3)")
    return parser


def sample_images(count: int) -> list[Path]:
    images = sorted(SAMPLE_IMAGES.glob("*.png")) + sorted(SAMPLE_UNLABELED.glob("*.png"))
    return images[:count]


def time_per_image(function, inputs) -> float:
    """Median seconds per call after one warm-up call (the median shrugs off other processes' bursts)."""
    function(inputs[0])
    seconds = []
    for item in inputs:
        started = time.perf_counter()
        function(item)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from chestdet.commands.cli import setup_logging
    from chestdet.core.imaging import read_image, to_rgb
    from chestdet.export import agreement
    from chestdet.export import exporter as export
    from chestdet.export.backends import SavedModelBackend, TFLiteBackend, tflite_normalisation
    from chestdet.export.options import default_config, run_folder
    from chestdet.training.pipeline_config import image_size

    setup_logging()
    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    if args.checkpoint is None:
        from tests.support.model_fixtures import make_tiny_checkpoint

        prefix = make_tiny_checkpoint(work / "model", image_size=320)
    else:
        prefix = export.resolve_checkpoint(args.checkpoint)
    config = args.config or default_config(prefix, run_folder(prefix))
    walls, phases = [], []
    for _ in range(args.runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, str(REPO / "scripts" / "export.py"), "--checkpoint", str(prefix), "--config",
                        str(config), "--output-dir", str(work / "export"), "--overwrite"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        walls.append(time.perf_counter() - started)
        phases.append(json.loads((work / "export" / "export.json").read_text())["seconds"])
    out = work / "export"
    median = sorted(range(len(walls)), key=walls.__getitem__)[len(walls) // 2]
    seconds = phases[median]
    height, width = image_size(export.load_pipeline_config(config))

    started = time.perf_counter()
    saved_model = SavedModelBackend(out / "saved_model", calls=1)  # one image's latency, on every core
    saved_model.load()
    saved_model_load = time.perf_counter() - started
    started = time.perf_counter()
    tflite = TFLiteBackend(out / "model.tflite", tflite_normalisation(out), interpreters=1, threads=args.threads)
    tflite_load = time.perf_counter() - started

    images = [to_rgb(read_image(path)) for path in sample_images(args.images)]
    saved_model_infer = time_per_image(lambda rgb: saved_model.infer([rgb]), images)
    prepared = [tflite.prepare(rgb) for rgb in images]
    tflite_infer = time_per_image(lambda x: tflite.infer([x]), prepared)
    tflite_with_resize = time_per_image(lambda rgb: tflite.infer([tflite.prepare(rgb)]), images)

    rows = [
        ("export command, start to exit (SavedModel + TFLite), median", f"{walls[median]:.1f} s "
         f"(runs: {', '.join(f'{w:.1f}' for w in walls)})"),
        ("export: build the model and restore the checkpoint", f"{seconds['restore']:.1f} s"),
        ("export: SavedModel (trace, save)", f"{seconds['saved_model']:.1f} s"),
        ("export: TFLite (trace the OD API's TFLite module, save, convert)", f"{seconds['tflite']:.1f} s"),
        ("SavedModel load (tf.saved_model.load)", f"{saved_model_load:.1f} s"),
        ("TFLite load (Interpreter + allocate_tensors)", f"{tflite_load:.2f} s"),
        (f"SavedModel inference, batch 1, 1024x1024 input, resize in graph ({len(images)} images)",
         f"{1000 * saved_model_infer:.0f} ms/image (median)"),
        (f"TFLite inference at {height}x{width}, one interpreter, {args.threads} threads",
         f"{1000 * tflite_infer:.0f} ms/image (median)"),
        ("TFLite inference + resize/scale of the 1024x1024 image",
         f"{1000 * tflite_with_resize:.0f} ms/image (median)"),
    ]
    if args.checkpoint is not None:
        agreement = agreement.measure_agreement(out, sample_images(args.images))
        rows.append((
            f"TFLite agreement with the SavedModel (boxes >= {agreement.AGREEMENT_MIN_SCORE}, IoU >= "
            f"{agreement.AGREEMENT_MIN_IOU}, score within {agreement.AGREEMENT_MAX_SCORE_DIFFERENCE})",
            f"{agreement.matched}/{agreement.reference_boxes} = {100 * agreement.share:.1f}%",
        ))
    shutil.rmtree(work, ignore_errors=True)
    print(f"\ncheckpoint {prefix}, input {height}x{width}, {platform.node()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| what | figure |\n| --- | --- |")
    for what, figure in rows:
        print(f"| {what} | {figure} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
