"""Benchmark scripts/detect.py against the OD API tutorial's loop, on the same images and model.

    python benchmarks/bench_detect.py --work-dir W              # 1,000 images; trains the model once (~10 min)
    python benchmarks/bench_detect.py --work-dir W --count 50   # a quick check (reuses W's model)
    python benchmarks/bench_detect.py --model EXPORT            # an existing export directory

The model is a briefly trained SSD MobileNet V2 FPNLite 320x320 (--train-steps from scratch on the
bundled NIH sample, batch 4, batch-norm decay 0.9), exported as SavedModel and TFLite; it is made
once and cached in the work dir (model-<steps>-steps/), so reruns with the same --work-dir reuse it.
An untrained export would not do: it scores every box about 0.01, so the loop would draw nothing
(flattering it) and TFLite's agreement on boxes >= 0.3 would compare none.

The images are NIH's (the full dev copy, else the bundled sample), linked under distinct names until
there are --count of them. Each contender runs as its own process, timed from start to exit:

- loop: the tutorial's way: tf.saved_model.load, then per image cv2.imread, detect_fn(image[None]),
  visualization_utils.visualize_boxes_and_labels_on_image_array (boxes >= 0.3), cv2.imwrite of a PNG;
- detect.py with --backend savedmodel and with --backend tflite, defaults otherwise.

Parity is then checked on untimed runs over the first --parity-count images with --keep-score 0, so
that every detection can be compared.

It prints each rate, the ratios to the loop, the time to the first result, how many boxes reach
0.3 (what the loop draws), the largest difference between the loop's and detect.py's SavedModel
detections, and TFLite's agreement with the SavedModel (boxes >= 0.3, same class, IoU >= 0.95,
score within 0.02).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import NIH_DIR, REPO
from _common import SAMPLE_NIH_DIR as SAMPLE

DEFAULT_IMAGES = [NIH_DIR, SAMPLE]
LAST_LINE = re.compile(r"(\d+) images in ([\d.]+) s = ([\d.]+) images/s; (\d+) errors")
DRAW_SCORE = 0.3  # the tutorial loop's min_score_thresh and detect.py's default --min-score
FIRST = re.compile(r"first result after ([\d.]+) s")


def tutorial_loop(export_dir: Path, inputs: list[Path], out_dir: Path, record: Path) -> None:
    """The OD API tutorial's inference loop, one image at a time (run in its own process)."""
    started = time.perf_counter()
    import cv2
    import numpy as np
    import tensorflow as tf
    from object_detection.utils import label_map_util
    from object_detection.utils import visualization_utils as viz_utils

    detect_fn = tf.saved_model.load(str(export_dir / "saved_model"))
    category_index = label_map_util.create_category_index_from_labelmap(
        str(export_dir / "label_map.pbtxt"), use_display_name=True
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    results, first = {}, None
    for path in inputs:
        image_np = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        input_tensor = tf.convert_to_tensor(image_np)[tf.newaxis, ...]
        detections = detect_fn(input_tensor)
        num = int(detections.pop("num_detections"))
        detections = {key: value[0, :num].numpy() for key, value in detections.items()}
        detections["detection_classes"] = detections["detection_classes"].astype(np.int64)
        image_with_detections = image_np.copy()
        viz_utils.visualize_boxes_and_labels_on_image_array(
            image_with_detections, detections["detection_boxes"], detections["detection_classes"],
            detections["detection_scores"], category_index, use_normalized_coordinates=True,
            max_boxes_to_draw=200, min_score_thresh=DRAW_SCORE, agnostic_mode=False,
        )
        cv2.imwrite(str(out_dir / f"{path.stem}.png"), cv2.cvtColor(image_with_detections, cv2.COLOR_RGB2BGR))
        results[path.name] = {k: detections[k].tolist() for k in ("detection_boxes", "detection_classes",
                                                                     "detection_scores")}
        if first is None:
            first = time.perf_counter() - started
    record.write_text(json.dumps({"first_result_seconds": first, "detections": results}))


def link_images(source: Path, count: int, folder: Path) -> list[Path]:
    """`count` symlinks named NNNN_<image> cycling over source/images and source/unlabeled."""
    images = sorted((source / "images").glob("*.png")) + sorted((source / "unlabeled").glob("*.png"))
    if not images:
        raise SystemExit(f"no PNG images under {source}/images or {source}/unlabeled")
    folder.mkdir(parents=True, exist_ok=True)
    links = []
    for i in range(count):
        link = folder / f"{i:04d}_{images[i % len(images)].name}"
        link.symlink_to(images[i % len(images)].resolve())
        links.append(link)
    return links


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """--count, --model and --train-steps, as the detection benchmarks share them."""
    parser.add_argument("--count", type=int, default=1000, help="number of images (default 1000)")
    parser.add_argument("--model", type=Path,
                        help="export directory (default: train and export a 320x320 model, cached in the work dir)")
    parser.add_argument("--train-steps", type=int, default=200,
                        help="training steps of the default model (default %(default)s)")


def prepare_inputs(args: argparse.Namespace, prefix: str) -> tuple[Path, Path, Path, Path]:
    """(image source, work dir, export, folder of --count linked images) from the shared flags."""
    source = args.images or next((p for p in DEFAULT_IMAGES if (p / "images").is_dir()), DEFAULT_IMAGES[-1])
    work = args.work_dir or Path(tempfile.mkdtemp(prefix=prefix))
    export = args.model or make_export(work, SAMPLE, args.train_steps)
    inputs = work / "inputs"
    if inputs.exists():
        shutil.rmtree(inputs)
    link_images(source, args.count, inputs)
    return source, work, export, inputs


def timed(command: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds, done.stderr


def make_export(work: Path, sample: Path, steps: int) -> Path:
    """A briefly trained 320x320 export, made once per work dir and reused by later runs.

    An untrained model scores every box about 0.01, so nothing reaches the drawing threshold (0.3):
    the loop would draw nothing and TFLite's agreement at 0.3 would compare no boxes. A few hundred
    steps from scratch with fast batch-norm statistics give boxes scoring 0.3-0.5 on NIH images.
    """
    export = work / f"model-{steps}-steps"
    if (export / "export.json").is_file():
        print(f"reusing the trained export {export}", flush=True)
        return export
    from chestdet.commands import generate_tfrecords, train
    from chestdet.export.exporter import export_model

    records, run = work / "model-records", work / f"model-run-{steps}"
    print(f"training a 320x320 model for {steps} steps from scratch, then exporting it (~10 min) ...", flush=True)
    if not (records / "split.csv").is_file():
        run_stage(generate_tfrecords.main, [
            "--nih-csv", str(sample / "BBox_List_2017.csv"), "--image-dir", str(sample / "images"),
            "--data-entry", str(sample / "Data_Entry_2017_sample.csv"), "--unlabeled-dir", str(sample / "unlabeled"),
            "--output-dir", str(records), "--shards", "1"])
    run_stage(train.main, [
        "--model-dir", str(run), "--records", str(records), "--from-scratch", "--steps", str(steps),
        "--batch-size", "4", "--checkpoint-every", str(steps), "--set", "image_size=320",
        "--set", "batch_norm_decay=0.9"])
    return export_model(run, run / "pipeline.config", export, tflite=True, overwrite=True)


def run_stage(command, argv: list[str]) -> None:  # noqa: ANN001 - a chestdet.commands main
    from chestdet.commands.cli import ExitStatus

    if command(argv) not in (ExitStatus.SUCCESS, ExitStatus.REJECTS):
        raise SystemExit(f"{command.__module__} {' '.join(argv)} failed")


def compare_with_loop(loop: dict, detections_dir: Path, keep_score: float) -> tuple[float, float, int]:
    """Largest |box| (normalised) and |score| differences over the images of a detect.py run, and the
    number of detections compared."""
    import numpy as np
    import pandas as pd

    table = pd.read_csv(detections_dir / "detections.csv")
    box_diff = score_diff = 0.0
    compared = 0
    for name in pd.read_csv(detections_dir / "images.csv")["image"]:
        expected = loop[Path(name).name]
        rows = table[table["image"] == name]
        scores = np.array(expected["detection_scores"])
        keep = scores >= keep_score
        boxes = np.array(expected["detection_boxes"]).reshape(-1, 4)[keep]
        if len(rows) != int(keep.sum()):
            return float("inf"), float("inf"), compared
        width, height = rows["width"].to_numpy(), rows["height"].to_numpy()
        ours = np.stack([rows["ymin"] / height, rows["xmin"] / width, rows["ymax"] / height, rows["xmax"] / width], 1)
        if len(rows):
            box_diff = max(box_diff, float(np.abs(ours - boxes).max()))
            score_diff = max(score_diff, float(np.abs(rows["score"].to_numpy() - scores[keep]).max()))
        compared += len(rows)
    return box_diff, score_diff, compared


def tflite_agreement(saved_csv: Path, tflite_csv: Path, min_score: float, same_class: bool = True):
    import pandas as pd

    from chestdet.core.detections import Detection
    from chestdet.export.agreement import backend_agreement

    def grouped(path: Path) -> dict[str, list[Detection]]:
        table = pd.read_csv(path)
        return {
            name: [Detection(int(r.class_id), float(r.score), r.xmin, r.ymin, r.xmax, r.ymax)
                   for r in rows.itertuples()]
            for name, rows in table.groupby("image")
        }

    saved, lite = grouped(saved_csv), grouped(tflite_csv)
    names = sorted(saved)
    return backend_agreement([saved[n] for n in names], [lite.get(n, []) for n in names], min_score=min_score,
                             same_class=same_class)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_flags(parser)
    parser.add_argument("--parity-count", type=int, default=100, help="images of the parity runs (default 100)")
    parser.add_argument("--images", type=Path, help="NIH folder with images/ and unlabeled/")
    parser.add_argument("--work-dir", type=Path, help="where to put inputs and outputs (default: a temp dir)")
    parser.add_argument("--compare-only", action="store_true",
                        help="only print the comparisons of the outputs already in --work-dir")
    parser.add_argument("--loop-only", nargs=3, metavar=("EXPORT", "INPUT_DIR", "RECORD"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.loop_only:
        export, folder, record = (Path(p) for p in args.loop_only)
        tutorial_loop(export, sorted(folder.iterdir()), Path(record).parent / "loop_drawn", Path(record))
        return 0

    if args.compare_only:
        if args.work_dir is None:
            parser.error("--compare-only needs --work-dir")
        print_comparisons(args.work_dir, json.loads((args.work_dir / "loop.json").read_text())["detections"])
        return 0
    source, work, export, inputs = prepare_inputs(args, "bench-detect-")
    print(f"{args.count} images from {source}, export {export}, work dir {work}", flush=True)

    figures = {}
    record = work / "loop.json"
    seconds, _ = timed([sys.executable, __file__, "--loop-only", str(export), str(inputs), str(record)])
    loop = json.loads(record.read_text())
    figures["tutorial loop"] = {"seconds": seconds, "first": loop["first_result_seconds"]}
    for backend in ("savedmodel", "tflite"):
        seconds, log = run_detect(export, inputs, work / f"detect_{backend}", backend)
        first = FIRST.search(log)
        figures[f"detect.py {backend}"] = {"seconds": seconds, "first": float(first.group(1)) if first else None,
                                           "last_line": LAST_LINE.search(log).group(0)}

    base = args.count / figures["tutorial loop"]["seconds"]
    print(f"\n{'contender':<22} {'wall s':>8} {'images/s':>9} {'vs loop':>8} {'first result s':>15}")
    for name, f in figures.items():
        rate = args.count / f["seconds"]
        first = f"{f['first']:.1f}" if f["first"] is not None else "-"
        print(f"{name:<22} {f['seconds']:8.1f} {rate:9.2f} {rate / base:7.2f}x {first:>15}")
    for name, f in figures.items():
        if "last_line" in f:
            print(f"{name} last line: {f['last_line']}")
    parity_list = work / "parity.txt"
    parity_list.write_text("\n".join(str(p) for p in sorted(inputs.iterdir())[: args.parity_count]) + "\n")
    for backend in ("savedmodel", "tflite"):
        run_detect(export, parity_list, work / f"parity_{backend}", backend, "--keep-score", "0")
    print_comparisons(work, loop["detections"])
    return 0


def run_detect(export: Path, inputs: Path, out: Path, backend: str, *extra: str) -> tuple[float, str]:
    return timed([sys.executable, str(REPO / "scripts" / "detect.py"), "--model", str(export), "--input",
                  str(inputs), "--output-dir", str(out), "--backend", backend, "--no-progress", "--overwrite", *extra])


def print_comparisons(work: Path, loop_detections: dict) -> None:
    scores = [s for d in loop_detections.values() for s in d["detection_scores"]]
    drawn = [sum(s >= DRAW_SCORE for s in d["detection_scores"]) for d in loop_detections.values()]
    print(f"boxes >= {DRAW_SCORE} (drawn by the loop): {sum(drawn)} on {sum(n > 0 for n in drawn)} of "
          f"{len(drawn)} images; best score {max(scores, default=0.0):.3f}")
    if not sum(drawn):
        print("WARNING: no box reaches the drawing threshold; the loop draws nothing and the agreement is vacuous")
    box_diff, score_diff, compared = compare_with_loop(loop_detections, work / "parity_savedmodel", keep_score=0.0)
    print(f"SavedModel vs loop over {compared} detections: max |box| {box_diff:.2e}, "
          f"max |score| {score_diff:.2e} -> {'EQUAL' if max(box_diff, score_diff) <= 1e-4 else 'DIFFERENT'} (1e-4)")
    for min_score, same_class in ((DRAW_SCORE, True), (0.0, True)):
        agreement = tflite_agreement(work / "parity_savedmodel" / "detections.csv",
                                     work / "parity_tflite" / "detections.csv", min_score, same_class)
        print(f"TFLite agreement with the SavedModel (boxes >= {min_score}, {'same' if same_class else 'any'} class, "
              f"IoU >= 0.95, score within 0.02): {agreement.matched}/{agreement.reference_boxes} = "
              f"{agreement.share:.3f}")


if __name__ == "__main__":
    sys.exit(main())
