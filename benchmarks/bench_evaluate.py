"""Time the evaluation stage, and check its COCO AP against the OD API's own COCO evaluator.

    .venv/bin/python benchmarks/bench_evaluate.py                         # NIH dev copy, 100 detections/image
    .venv/bin/python benchmarks/bench_evaluate.py --images 40 --per-image 20   # a quick check
    .venv/bin/python benchmarks/bench_evaluate.py --data-dir workspace/sample/nih

Detections are made from the real NIH boxes of the images present: three jittered copies of every
box (one in five of another class) and random boxes up to `--per-image` per image, with random
scores, so every metric has work to do. The baseline is what the OD API's model_main_tf2 evaluation
computes, `CocoDetectionEvaluator` (COCO AP only, also through pycocotools); both must give the
same AP@[.5:.95] and AP@0.5. The last lines are a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from _common import NIH_DIR as DEFAULT_DATA


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA,
                        help="folder with BBox_List_2017.csv and images/ (default %(default)s)")
    parser.add_argument("--images", type=int, help="use only the first N images (a quick check)")
    parser.add_argument("--per-image", type=int, default=100, help="detections per image (default 100)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; the best is reported")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def make_case(data_dir: Path, limit: int | None, per_image: int, seed: int):
    import numpy as np
    import pandas as pd

    from chestdet.core.labels import CLASS_NAMES
    from chestdet.data.annotations import read_nih_csv

    images = sorted(p.name for p in (data_dir / "images").glob("*.png"))[:limit]
    if not images:
        sys.exit(f"no PNG images in {data_dir / 'images'}")
    wanted = set(images)
    boxes = [b for b in read_nih_csv(data_dir / "BBox_List_2017.csv")[0] if b.image in wanted]
    rng = np.random.default_rng(seed)
    rows = []
    for image in images:
        own = [b for b in boxes if b.image == image]
        for box in own:
            for _ in range(3):
                jitter = rng.normal(0, 0.1 * min(box.width, box.height), 4)
                label = CLASS_NAMES[rng.integers(8)] if rng.random() < 0.2 else box.label
                rows.append((image, label, float(rng.random()), box.xmin + jitter[0], box.ymin + jitter[1],
                             box.xmax + jitter[2], box.ymax + jitter[3]))
        for _ in range(max(0, per_image - 3 * len(own))):
            x, y = rng.uniform(0, 900, 2)
            w, h = rng.uniform(20, 300, 2)
            rows.append((image, CLASS_NAMES[rng.integers(8)], float(rng.random()) * 0.5, x, y,
                         min(x + w, 1024.0), min(y + h, 1024.0)))
    detections = pd.DataFrame(rows, columns=["image", "label", "score", "xmin", "ymin", "xmax", "ymax"])
    return images, boxes, detections


def best_time(function, repeat: int):
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def od_api_coco(images, truth, detections):
    """model_main_tf2's evaluator: CocoDetectionEvaluator fed one image at a time."""
    import contextlib
    import io

    import numpy as np
    from object_detection.core.standard_fields import DetectionResultFields as D
    from object_detection.core.standard_fields import InputDataFields as G
    from object_detection.metrics.coco_evaluation import CocoDetectionEvaluator

    from chestdet.core.labels import CLASS_NAMES, class_id

    evaluator = CocoDetectionEvaluator([{"id": class_id(n), "name": n} for n in CLASS_NAMES])
    gt_by_image = dict(tuple(truth.groupby("image")))
    det_by_image = dict(tuple(detections.groupby("image")))
    for image in images:
        g = gt_by_image.get(image, truth.iloc[0:0])
        d = det_by_image.get(image, detections.iloc[0:0])
        evaluator.add_single_ground_truth_image_info(image, {
            G.groundtruth_boxes: g[["ymin", "xmin", "ymax", "xmax"]].to_numpy(np.float32).reshape(-1, 4),
            G.groundtruth_classes: np.array([class_id(n) for n in g["label"]], dtype=np.int32),
        })
        evaluator.add_single_detected_image_info(image, {
            D.detection_boxes: d[["ymin", "xmin", "ymax", "xmax"]].to_numpy(np.float32).reshape(-1, 4),
            D.detection_scores: d["score"].to_numpy(np.float32),
            D.detection_classes: np.array([class_id(n) for n in d["label"]], dtype=np.int32),
        })
    with contextlib.redirect_stdout(io.StringIO()):
        return evaluator.evaluate()


def write_detections_folder(folder: Path, images, detections) -> Path:
    from chestdet.core.labels import class_id

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "detections.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "width", "height", "class_id", "class_name", "score", "xmin", "ymin", "xmax", "ymax"])
        for row in detections.itertuples(index=False):
            writer.writerow([row.image, 1024, 1024, class_id(row.label), row.label, row.score,
                             row.xmin, row.ymin, row.xmax, row.ymax])
    with open(folder / "images.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "path", "width", "height", "detections"])
        writer.writerows([image, image, 1024, 1024, 0] for image in images)
    return folder


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from chestdet.evaluation import coco, confusion, evaluate, froc, ground_truth, image_level, iobb, metrics

    images, boxes, detections = make_case(args.data_dir, args.images, args.per_image, args.seed)
    truth = ground_truth.ground_truth_frame(boxes)
    print(f"{len(images)} images, {len(truth)} boxes, {len(detections)} detections "
          f"({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs)")
    settings = metrics.EvaluationSettings()
    parts = {
        "COCO AP (pycocotools, 11 IoU thresholds)": lambda: coco.coco_average_precision(truth, detections, images),
        "FROC": lambda: froc.froc(truth, detections, images),
        "T(IoBB)": lambda: iobb.iobb_localisation(truth, detections, images),
        "image level + confusion matrix": lambda: (image_level.image_level(truth, detections, images),
                                                   confusion.confusion_matrix(truth, detections, images)),
        "all metrics (compute_metrics)": lambda: metrics.compute_metrics(truth, detections, images, settings),
    }
    timings = {name: best_time(function, args.repeat) for name, function in parts.items()}
    ours = timings["all metrics (compute_metrics)"][1]
    import object_detection.metrics.coco_evaluation  # noqa: F401  (TensorFlow's import is not the baseline's cost)
    baseline_time, baseline = best_time(lambda: od_api_coco(images, truth, detections), args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_detections_folder(Path(tmp) / "detections", images, detections)
        csv_path = args.data_dir / "BBox_List_2017.csv"
        run_time, _ = best_time(lambda: evaluate.run_evaluation(folder, csv_path, Path(tmp) / "out"), args.repeat)
        no_plots_time, _ = best_time(
            lambda: evaluate.run_evaluation(folder, csv_path, Path(tmp) / "out2", plots=False), args.repeat)

    same_ap = abs(ours.coco.overall.ap - baseline["DetectionBoxes_Precision/mAP"]) < 1e-9
    same_ap50 = abs(ours.coco.overall.ap50 - baseline["DetectionBoxes_Precision/mAP@.50IOU"]) < 1e-9
    print(f"ours: AP {ours.coco.overall.ap:.6f}, AP50 {ours.coco.overall.ap50:.6f}; OD API CocoDetectionEvaluator: "
          f"AP {baseline['DetectionBoxes_Precision/mAP']:.6f}, "
          f"AP50 {baseline['DetectionBoxes_Precision/mAP@.50IOU']:.6f}"
          f" -> {'identical' if same_ap and same_ap50 else 'DIFFERENT'}")
    print()
    print("| what | seconds |")
    print("| --- | ---: |")
    for name, (seconds, _) in timings.items():
        print(f"| {name} | {seconds:.2f} |")
    print(f"| baseline: OD API CocoDetectionEvaluator (COCO AP only) | {baseline_time:.2f} |")
    print(f"| run_evaluation: read CSVs, all metrics, metrics.json, report.md/.html, 3 PNG plots | {run_time:.2f} |")
    print(f"| run_evaluation with --no-plots | {no_plots_time:.2f} |")
    return 0 if same_ap and same_ap50 else 1


if __name__ == "__main__":
    sys.exit(main())
