"""Time generate_tfrecords against a tutorial-style baseline, in the same run, on the same images.

    .venv/bin/python benchmarks/bench_records.py                  # the 440 images of the NIH dev copy
    .venv/bin/python benchmarks/bench_records.py --limit 40       # a quick check
    .venv/bin/python benchmarks/bench_records.py --data-dir workspace/sample/nih

The baseline is what the OD API tutorials' generate_tfrecord.py does: pandas groupby over the CSV,
one image at a time, PIL for the size, Examples built with dataset_util, one unsharded file, no
checks. Ours runs `generate_tfrecords` with every check on (CSV rows, label map, image header and
bomb limit, PNG CRCs / JPEG end marker, boxes against the image, patient split, reports). Both read
the images once before timing, so neither pays for a cold disk. The last lines are a Markdown table
for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

from _common import NIH_DIR as DEFAULT_DATA


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA,
                        help="folder with BBox_List_2017.csv and images/ (default %(default)s)")
    parser.add_argument("--limit", type=int, help="use only the first N images (a quick check)")
    parser.add_argument("--workers", type=int, help="worker processes for ours (default: all CPUs)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; the best is reported")
    parser.add_argument("--max-size", type=int, default=640, help="the downscaled run's --max-size")
    return parser


def baseline(csv_path: Path, image_dir: Path, output: Path) -> int:
    """The tutorial's loop: group rows by file, read each image, PIL for its size, one Example each."""
    import pandas as pd
    import tensorflow as tf
    from object_detection.utils import dataset_util
    from PIL import Image

    from chestdet.core.labels import class_id

    frame = pd.read_csv(csv_path).iloc[:, :6]
    frame.columns = ["filename", "class", "x", "y", "w", "h"]
    present = set(os.listdir(image_dir))
    frame = frame[frame["filename"].isin(present)]
    groups = frame.groupby("filename")
    with tf.io.TFRecordWriter(str(output)) as writer:
        for filename in groups.groups.keys():
            group = groups.get_group(filename)
            with tf.io.gfile.GFile(str(image_dir / filename), "rb") as handle:
                encoded = handle.read()
            width, height = Image.open(io.BytesIO(encoded)).size
            xmins, xmaxs, ymins, ymaxs, texts, labels = [], [], [], [], [], []
            for _, row in group.iterrows():
                xmins.append(row["x"] / width)
                xmaxs.append((row["x"] + row["w"]) / width)
                ymins.append(row["y"] / height)
                ymaxs.append((row["y"] + row["h"]) / height)
                texts.append(row["class"].encode("utf8"))
                labels.append(class_id(row["class"]))
            example = tf.train.Example(features=tf.train.Features(feature={
                "image/height": dataset_util.int64_feature(height),
                "image/width": dataset_util.int64_feature(width),
                "image/filename": dataset_util.bytes_feature(filename.encode("utf8")),
                "image/source_id": dataset_util.bytes_feature(filename.encode("utf8")),
                "image/encoded": dataset_util.bytes_feature(encoded),
                "image/format": dataset_util.bytes_feature(b"png"),
                "image/object/bbox/xmin": dataset_util.float_list_feature(xmins),
                "image/object/bbox/xmax": dataset_util.float_list_feature(xmaxs),
                "image/object/bbox/ymin": dataset_util.float_list_feature(ymins),
                "image/object/bbox/ymax": dataset_util.float_list_feature(ymaxs),
                "image/object/class/text": dataset_util.bytes_list_feature(texts),
                "image/object/class/label": dataset_util.int64_list_feature(labels),
            }))
            writer.write(example.SerializeToString())
    return len(groups)


def ours(csv_path: Path, image_dir: Path, output: Path, workers: int | None, max_size: int | None) -> dict:
    import json

    from chestdet.commands.generate_tfrecords import main

    argv = ["--nih-csv", str(csv_path), "--image-dir", str(image_dir), "--output-dir", str(output)]
    if workers:
        argv += ["--workers", str(workers)]
    if max_size:
        argv += ["--max-size", str(max_size)]
    status = main(argv)
    if status not in (0, 1):
        raise SystemExit(f"generate_tfrecords failed with status {status}")
    return json.loads((output / "summary.json").read_text())


def limited_image_dir(image_dir: Path, limit: int | None, scratch: Path) -> Path:
    """The image folder itself, or a folder of symlinks to its first `limit` images."""
    if not limit:
        return image_dir
    subset = scratch / "images"
    subset.mkdir()
    for name in sorted(os.listdir(image_dir))[:limit]:
        (subset / name).symlink_to(image_dir / name)
    return subset


def warm_imports() -> None:
    """Import what either side uses before any timing, so neither pays for it."""
    import pandas  # noqa: F401
    import tensorflow  # noqa: F401
    from object_detection.utils import dataset_util  # noqa: F401

    from chestdet.commands import generate_tfrecords  # noqa: F401
    from chestdet.core.labels import load_label_map

    load_label_map()


def warm_cache(image_dir: Path) -> int:
    total = 0
    for name in sorted(os.listdir(image_dir)):
        total += len((image_dir / name).read_bytes())
    return total


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the worker processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(function, *args):
    """Seconds until `function` returns (its outputs complete), and the CPU time of it and its workers.

    generate_tfrecords does not wait for its worker to finish exiting before it writes its reports, so
    the CPU time is read once every child has been reaped.
    """
    import multiprocessing

    started, started_cpu = time.perf_counter(), cpu_seconds()
    result = function(*args)
    seconds = time.perf_counter() - started
    for child in multiprocessing.active_children():
        child.join()
    return seconds, cpu_seconds() - started_cpu, result


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    csv_path = args.data_dir / "BBox_List_2017.csv"
    if not csv_path.is_file() or not (args.data_dir / "images").is_dir():
        print(f"error: {args.data_dir} lacks BBox_List_2017.csv or images/", file=sys.stderr)
        return 2
    warm_imports()

    logging.disable(logging.INFO)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench_records.") as scratch_name:
        scratch = Path(scratch_name)
        image_dir = limited_image_dir(args.data_dir / "images", args.limit, scratch)
        source_bytes = warm_cache(image_dir)
        runs = {"baseline": [], "ours": [], "ours_max": []}
        for attempt in range(args.repeat):
            seconds, cpu, images = timed(baseline, csv_path, image_dir, scratch / f"baseline{attempt}.record")
            runs["baseline"].append((seconds, images, (scratch / f"baseline{attempt}.record").stat().st_size, cpu))
            for key, max_size in (("ours", None), ("ours_max", args.max_size)):
                out = scratch / f"{key}{attempt}"
                seconds, cpu, summary = timed(ours, csv_path, image_dir, out, args.workers, max_size)
                runs[key].append((seconds, summary["totals"]["images"], summary["totals"]["record_bytes"], cpu))
        best = {key: min(values) for key, values in runs.items()}
    logging.disable(logging.NOTSET)
    rate = {key: images / seconds for key, (seconds, images, _, _) in best.items()}
    workers = args.workers or len(os.sched_getaffinity(0))
    print(f"images: {best['baseline'][1]} ({source_bytes / 1e6:.1f} MB of PNG), CPUs: {os.cpu_count()}, "
          f"workers: {workers}, load average: {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    rows = [
        ("tutorial-style baseline (pandas groupby, PIL size, 1 file, no checks)", "baseline"),
        ("generate_tfrecords, every check on, PNG bytes passed through", "ours"),
        (f"generate_tfrecords --max-size {args.max_size} (decode, downscale, PNG re-encode)", "ours_max"),
    ]
    print()
    print("| run | images | seconds | images/s | vs baseline | CPU ms/image | record size |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, key in rows:
        seconds, images, size, cpu = best[key]
        print(f"| {label} | {images} | {seconds:.2f} | {rate[key]:.0f} | {rate[key] / rate['baseline']:.2f}x | "
              f"{cpu / images * 1000:.2f} | {size / 1e6:.1f} MB |")
    print()
    print(f"Python {platform.python_version()}, best of {args.repeat}; ratio ours/baseline = "
          f"{rate['ours'] / rate['baseline']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
