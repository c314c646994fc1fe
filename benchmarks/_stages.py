"""The CPU limit of detect.py: each stage of its work on one image, timed alone on one thread.

    python benchmarks/_stages.py EXPORT BACKEND LIST [--count 200] [--passes 3]

prints one JSON object: milliseconds per image for each stage, and the rate that their sum allows
when the stages are spread over every CPU (`limit`). The stages are what detect.py cannot avoid:

- decode: `cv2.imdecode` of the file's bytes (already in memory);
- prepare: the backend's `prepare` (TFLite: the resize to the model's input and its scaling;
  SavedModel: gray to RGB, the graph resizes);
- inference: the backend on one image, one thread (TFLite: one single-threaded interpreter;
  SavedModel: one call, TensorFlow's intra-op threads 1), outputs read;
- encode: the drawn copy (boxes at or above 0.3, as detect draws them) encoded as JPEG.

Each stage runs over the first --count images of LIST (a text file of paths), --passes times; a
stage's cost is its fastest pass divided by the images, so bursts of other processes count least.
Run as its own process, so that the backend's threading is set as detect.py sets it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _common import REPO  # noqa: F401 - puts the repository on sys.path

STAGES = ("decode", "prepare", "inference", "encode")


def fastest_pass(function, items: list, passes: int) -> float:
    """Seconds per item of the fastest of `passes` passes over the items."""
    best = float("inf")
    for _ in range(passes):
        started = time.perf_counter()
        for item in items:
            function(item)
        best = min(best, time.perf_counter() - started)
    return best / len(items)


def stage_costs(export: Path, backend_kind: str, paths: list[Path], passes: int) -> dict[str, float]:
    """Seconds per image of each of STAGES."""
    import cv2
    import numpy as np

    from chestdet.core.labels import load_label_map
    from chestdet.detection.drawing import render
    from chestdet.detection.thresholds import Thresholds
    from chestdet.export.backends import SavedModelBackend, TFLiteBackend, tflite_normalisation, to_pixels

    if backend_kind == "tflite":
        backend = TFLiteBackend(export / "model.tflite", tflite_normalisation(export), interpreters=1, threads=1)
    else:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)
        backend = SavedModelBackend(export / "saved_model", calls=1)
        backend.load()
    class_names = load_label_map(export / "label_map.pbtxt")
    files = [np.frombuffer(path.read_bytes(), np.uint8) for path in paths]
    pixels = [cv2.imdecode(data, cv2.IMREAD_UNCHANGED) for data in files]
    prepared = [backend.prepare(image) for image in pixels]
    backend.infer([prepared[0]])  # the first call allocates
    outputs = [backend.infer([item])[0] for item in prepared]
    shown = [Thresholds(0.3).shown(to_pixels(out, image.shape[1], image.shape[0]), 100)
             for out, image in zip(outputs, pixels, strict=True)]
    return {
        "decode": fastest_pass(lambda data: cv2.imdecode(data, cv2.IMREAD_UNCHANGED), files, passes),
        "prepare": fastest_pass(backend.prepare, pixels, passes),
        "inference": fastest_pass(lambda item: backend.infer([item]), prepared, passes),
        "encode": fastest_pass(lambda pair: render(pair[0], pair[1], class_names, "jpg"),
                               list(zip(pixels, shown, strict=True)), passes),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export", type=Path)
    parser.add_argument("backend", choices=("tflite", "savedmodel"))
    parser.add_argument("list", type=Path, help="text file of image paths")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args(argv)
    from chestdet.core.system import available_cpus

    paths = [Path(line) for line in args.list.read_text().split("\n") if line.strip()][: args.count]
    costs = stage_costs(args.export, args.backend, paths, args.passes)
    total = sum(costs.values())
    print(json.dumps({"ms": {k: 1000 * v for k, v in costs.items()}, "cpus": available_cpus(),
                      "images": len(paths), "limit": available_cpus() / total}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
