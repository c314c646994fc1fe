"""Benchmark scripts/detect.py: against the CPU limit of its own stages, and against the OD API tutorial's loop.

    python benchmarks/bench_detect.py --model EXPORT --images DIR --runs 3   # 1,000 images, both backends
    python benchmarks/bench_detect.py --work-dir W              # trains and caches a 320x320 model (~10 min)
    python benchmarks/bench_detect.py --work-dir W --count 50   # a quick check (reuses W's model)

The model is --model, or a briefly trained SSD MobileNet V2 FPNLite 320x320 (--train-steps from
scratch on the bundled NIH sample, batch 4, batch-norm decay 0.9), exported as SavedModel and TFLite;
it is made once and cached in the work dir (model-<steps>-steps/), so reruns with the same --work-dir
reuse it. An untrained export would not do: it scores every box about 0.01, so the loop would draw
nothing (flattering it) and TFLite's agreement on boxes >= 0.3 would compare none.

The images are --images (a folder of PNGs, or a NIH folder with images/ and unlabeled/; default the
NIH copy of CHESTDET_NIH_DIR, else the bundled sample), linked under distinct names until there are
--count of them.

For each backend it prints the CPU limit (benchmarks/_stages.py: PNG decode, the backend's
prepare, inference on one thread, drawing and JPEG encode, each timed alone per image; their sum
spread over every CPU gives the images/s the machine allows) beside what detect.py achieves: the
median of --runs whole processes, timed from start to exit, defaults otherwise, and the CPU time
they used per image. Then, unless --no-loop:

- loop: the tutorial's way: tf.saved_model.load, then per image cv2.imread, detect_fn(image[None]),
  visualization_utils.visualize_boxes_and_labels_on_image_array (boxes >= 0.3), cv2.imwrite of a PNG;

and parity, on untimed runs over the first --parity-count images with --keep-score 0: the largest
difference between the loop's and detect.py's SavedModel detections, and TFLite's agreement with
the SavedModel (boxes >= 0.3, same class, IoU >= 0.95, score within 0.02).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
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
    """`count` symlinks named NNNN_<image> cycling over source/images and source/unlabeled (a NIH folder),
    or over the PNGs of `source` itself."""
    images = sorted((source / "images").glob("*.png")) + sorted((source / "unlabeled").glob("*.png"))
    images = images or sorted(source.glob("*.png"))
    if not images:
        raise SystemExit(f"no PNG images under {source}, {source}/images or {source}/unlabeled")
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
    seconds, _, log = timed_process(command)
    return seconds, log


def timed_process(command: list[str]) -> tuple[float, float, str]:
    """Run `command`: its wall seconds from start to exit, the CPU seconds it used, and its stderr."""
    with tempfile.TemporaryFile("w+") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        stderr.seek(0)
        log = stderr.read()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{log[-3000:]}")
    return seconds, usage.ru_utime + usage.ru_stime, log


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
    parser.add_argument("--runs", type=int, default=3, help="detect.py runs per backend; the median counts (default 3)")
    parser.add_argument("--no-loop", action="store_true", help="skip the tutorial loop and the parity checks")
    parser.add_argument("--parity-count", type=int, default=100, help="images of the parity runs (default 100)")
    parser.add_argument("--images", type=Path, help="a folder of PNGs, or a NIH folder with images/ and unlabeled/")
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
    print(f"{args.count} images from {source}, export {export}, work dir {work}, load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    backends = ("tflite", "savedmodel")
    limits = {backend: stage_limit(export, inputs, backend) for backend in backends}
    runs = {backend: [] for backend in backends}
    for _ in range(args.runs):
        for backend in backends:
            runs[backend].append(run_detect_process(export, inputs, work / f"detect_{backend}", backend))
    print_limits(args.count, limits, runs)
    if args.no_loop:
        return 0
    record = work / "loop.json"
    seconds, _ = timed([sys.executable, __file__, "--loop-only", str(export), str(inputs), str(record)])
    loop = json.loads(record.read_text())
    print_against_loop(args.count, seconds, loop["first_result_seconds"], runs)
    parity_list = work / "parity.txt"
    parity_list.write_text("\n".join(str(p) for p in sorted(inputs.iterdir())[: args.parity_count]) + "\n")
    for backend in backends:
        run_detect(export, parity_list, work / f"parity_{backend}", backend, "--keep-score", "0")
    print_comparisons(work, loop["detections"])
    return 0


def stage_limit(export: Path, inputs: Path, backend: str) -> dict:
    """benchmarks/_stages.py's per-stage costs and limit, on the linked images."""
    listing = inputs.parent / "stages.txt"
    listing.write_text("\n".join(str(p) for p in sorted(inputs.iterdir())) + "\n")
    done = subprocess.run([sys.executable, str(Path(__file__).parent / "_stages.py"), str(export), backend,
                           str(listing)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_detect_process(export: Path, inputs: Path, out: Path, backend: str) -> dict:
    seconds, cpu, log = timed_process(detect_command(export, inputs, out, backend))
    first = FIRST.search(log)
    return {"seconds": seconds, "cpu": cpu, "first": float(first.group(1)) if first else None,
            "last_line": LAST_LINE.search(log).group(0)}


def median_run(runs: list[dict]) -> dict:
    return sorted(runs, key=lambda run: run["seconds"])[len(runs) // 2]


def print_limits(count: int, limits: dict, runs: dict) -> None:
    print(f"\n{'backend':<11} {'decode':>7} {'prepare':>8} {'infer':>7} {'encode':>7} {'sum ms':>7} "
          f"{'limit/s':>8} {'detect/s':>9} {'x limit':>8} {'CPU ms/img':>11} {'runs (s)':>20}")
    for backend, limit in limits.items():
        ms, median = limit["ms"], median_run(runs[backend])
        rate = count / median["seconds"]
        seconds = " ".join(f"{run['seconds']:.1f}" for run in runs[backend])
        print(f"{backend:<11} {ms['decode']:7.2f} {ms['prepare']:8.2f} {ms['inference']:7.2f} {ms['encode']:7.2f} "
              f"{sum(ms.values()):7.2f} {limit['limit']:8.2f} {rate:9.2f} {rate / limit['limit']:7.2f}x "
              f"{1000 * median['cpu'] / count:11.2f} {seconds:>20}")
    for backend in runs:
        print(f"detect.py {backend} median run: {median_run(runs[backend])['last_line']}; first result after "
              f"{median_run(runs[backend])['first']} s; {statistics.median(r['cpu'] for r in runs[backend]):.1f} "
              f"CPU s")
    print(f"(limit: {next(iter(limits.values()))['cpus']} CPUs / the stages' summed ms per image, stages timed alone "
          f"on {next(iter(limits.values()))['images']} images; detect/s: whole process, start to exit)")


def print_against_loop(count: int, loop_seconds: float, loop_first: float, runs: dict) -> None:
    base = count / loop_seconds
    print(f"\n{'contender':<22} {'wall s':>8} {'images/s':>9} {'vs loop':>8} {'first result s':>15}")
    print(f"{'tutorial loop':<22} {loop_seconds:8.1f} {base:9.2f} {1:7.2f}x {loop_first:15.1f}")
    for backend, backend_runs in runs.items():
        median = median_run(backend_runs)
        rate = count / median["seconds"]
        first = f"{median['first']:.1f}" if median["first"] is not None else "-"
        print(f"{'detect.py ' + backend:<22} {median['seconds']:8.1f} {rate:9.2f} {rate / base:7.2f}x {first:>15}")


def run_detect(export: Path, inputs: Path, out: Path, backend: str, *extra: str) -> tuple[float, str]:
    return timed(detect_command(export, inputs, out, backend, *extra))


def detect_command(export: Path, inputs: Path, out: Path, backend: str, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "scripts" / "detect.py"), "--model", str(export), "--input", str(inputs),
            "--output-dir", str(out), "--backend", backend, "--no-progress", "--overwrite", *extra]


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
