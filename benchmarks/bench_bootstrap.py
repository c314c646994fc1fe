"""Time what `evaluate.py --bootstrap N` adds to an evaluation: patient-resampled 95% intervals.

    .venv/bin/python benchmarks/bench_bootstrap.py                     # NIH dev copy (440 images), 1,000 replicates
    .venv/bin/python benchmarks/bench_bootstrap.py --images 100 --replicates 50   # a quick check

The case is bench_evaluate.py's: the real NIH boxes of the images present, three jittered copies of
every box and random boxes up to `--per-image` detections per image. Patients come from the NIH
file names, as evaluate.py takes them without a split.csv. The figure is the time of
`bootstrap_metrics` alone (the point estimates, computed first, are what an evaluation without
--bootstrap costs). Before timing, it checks that the reweighting with every weight 1 gives the
point estimates. The last lines are a Markdown table for BENCHMARKS.md; the goal is under 30 s for
1,000 replicates over 440 images.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np
from _common import NIH_DIR as DEFAULT_DATA
from bench_evaluate import make_case

GOAL_SECONDS = 30.0


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=type(DEFAULT_DATA), default=DEFAULT_DATA,
                        help="folder with BBox_List_2017.csv and images/ (default %(default)s)")
    parser.add_argument("--images", type=int, help="use only the first N images (a quick check)")
    parser.add_argument("--per-image", type=int, default=100, help="detections per image (default 100)")
    parser.add_argument("--replicates", type=int, default=1000, help="bootstrap replicates (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def check_parity(metrics, truth, detections, images) -> bool:
    """Every weight 1 must give the point estimates (COCO AP of pycocotools, FROC of froc.froc)."""
    from chestdet.core.labels import CLASS_NAMES
    from chestdet.evaluation import bootstrap

    ones = np.ones((1, len(images)))
    coco = bootstrap.coco_replicates(metrics.coco.matches, metrics.coco.iou_thresholds,
                                     metrics.coco.recall_thresholds, ones)
    table = bootstrap.froc_outcome_table(truth, detections, images, metrics.settings.hit_iou)
    same = True
    for name in [*CLASS_NAMES, "overall"]:
        point = metrics.coco.overall if name == "overall" else metrics.coco.per_class[name]
        curve = metrics.froc.overall if name == "overall" else metrics.froc.per_class[name]
        for key in ("ap", "ap50", "ap25"):
            expected, value = getattr(point, key), coco[name][key][0]
            same &= bool(np.isnan(value) if expected is None else abs(value - expected) < 1e-12)
        sensitivity = bootstrap.weighted_froc(table[name], ones, metrics.settings.fp_rates)[0]
        expected = np.array([np.nan if v is None else v for v in curve.at_rates])
        same &= bool(np.allclose(sensitivity, expected, equal_nan=True, atol=1e-12))
    return same


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from chestdet.data.split import patient_of
    from chestdet.evaluation import bootstrap, ground_truth, metrics

    images, boxes, detections = make_case(args.data_dir, args.images, args.per_image, args.seed)
    truth = ground_truth.ground_truth_frame(boxes)
    patients = [patient_of(image) for image in images]
    print(f"{len(images)} images of {len(set(patients))} patients, {len(truth)} boxes, {len(detections)} "
          f"detections ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs)")
    start = time.perf_counter()
    point = metrics.compute_metrics(truth, detections, images)
    point_seconds = time.perf_counter() - start
    parity = check_parity(point, truth, detections, images)
    print(f"reweighting with every weight 1 gives the point estimates: {'yes' if parity else 'NO'}")
    start = time.perf_counter()
    result = bootstrap.bootstrap_metrics(point, truth, detections, images, patients, args.replicates, args.seed)
    boot_seconds = time.perf_counter() - start
    overall = result.coco["overall"]["ap50"]
    print(f"AP@0.5 {point.coco.overall.ap50:.3f} [{overall[0]:.3f}, {overall[1]:.3f}]")
    print()
    print("| what | seconds |")
    print("| --- | ---: |")
    print(f"| point estimates (compute_metrics), {len(images)} images | {point_seconds:.2f} |")
    print(f"| bootstrap adds: {args.replicates} replicates over {len(images)} images | {boot_seconds:.2f} |")
    if args.replicates == 1000 and len(images) >= 440:
        print(f"goal < {GOAL_SECONDS:g} s: {'met' if boot_seconds < GOAL_SECONDS else 'NOT met'}")
    return 0 if parity else 1


if __name__ == "__main__":
    sys.exit(main())
