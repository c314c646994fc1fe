"""Shared by the training tests: records from the bundled NIH sample, a start checkpoint, and mAP@0.5
of a checkpoint's detections against the NIH CSV's boxes (not the records: a wiring bug in the
records, such as swapped x and y or an off-by-one class id, must show up as a low mAP)."""

from __future__ import annotations

import contextlib
import io
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from chestdet.core.labels import CLASS_NAMES, class_id
from chestdet.data.annotations import Box, read_nih_csv
from tests.conftest import SAMPLE_CSV, SAMPLE_IMAGES

OVERFIT_CLASSES = ("Cardiomegaly", "Pneumonia", "Infiltrate", "Mass")
OVERFIT_PER_CLASS = 4


def sample_boxes() -> list[Box]:
    """The NIH CSV's boxes on the bundled sample images."""
    boxes, _ = read_nih_csv(SAMPLE_CSV)
    present = {path.name for path in SAMPLE_IMAGES.glob("*.png")}
    return [box for box in boxes if box.image in present]


def overfit_boxes() -> list[Box]:
    """The 16 single-box sample images with the largest boxes of four large-finding classes
    (how tools/bundle_sample.py chose them)."""
    boxes = sample_boxes()
    per_image = Counter(box.image for box in boxes)
    chosen: list[Box] = []
    for label in OVERFIT_CLASSES:
        single = [box for box in boxes if box.label == label and per_image[box.image] == 1]
        chosen += sorted(single, key=lambda box: -box.width * box.height)[:OVERFIT_PER_CLASS]
    return chosen


def write_records(folder: Path, boxes: Sequence[Box]) -> Path:
    """TFRecords of the images those boxes are on, written by the project's generate_tfrecords from
    their rows of the NIH CSV (all in the train split, one shard); returns the folder."""
    from chestdet.commands.generate_tfrecords import main as generate_tfrecords

    images = {box.image for box in boxes}
    folder.mkdir(parents=True, exist_ok=True)
    lines = SAMPLE_CSV.read_text(encoding="utf-8").splitlines(keepends=True)
    rows = [line for line in lines[1:] if line.split(",", 1)[0] in images]
    csv_path = folder / "BBox_List_subset.csv"
    csv_path.write_text(lines[0] + "".join(rows), encoding="utf-8")
    status = generate_tfrecords([
        "--nih-csv", str(csv_path), "--image-dir", str(SAMPLE_IMAGES), "--output-dir", str(folder),
        "--split", "1,0,0", "--shards", "1", "--workers", "1", "--strict",
    ])
    assert status == 0, f"generate_tfrecords exited with {status}"
    assert len(list(folder.glob("train-*"))) == 1
    return folder


def make_start_checkpoint(config_path: Path, directory: Path, seed: int = 0) -> Path:
    """A complete detection checkpoint (every variable built by one forward pass) of the config's model,
    standing in for the TF2 zoo's COCO checkpoint; returns its prefix."""
    import tensorflow as tf
    from object_detection.builders import model_builder

    from chestdet.training import pipeline_config

    configs = pipeline_config.load_configs(config_path)
    height, width = pipeline_config.image_size(configs)
    tf.random.set_seed(seed)
    model = model_builder.build(configs["model"], is_training=False)
    images, shapes = model.preprocess(tf.zeros([1, height, width, 3]))
    model.predict(images, shapes)
    return Path(tf.train.Checkpoint(model=model).save(str(directory / "ckpt")))


def checkpoint_detections(config_path: Path, prefix: Path, images: Sequence[str]) -> list[dict]:
    """COCO-style results ({image_id, category_id, bbox [x, y, w, h] in pixels, score}) of a training
    checkpoint on sample images, read and scaled back to pixels independently of the records."""
    import tensorflow as tf
    from object_detection.builders import model_builder

    from chestdet.core.imaging import read_image, to_rgb
    from chestdet.training import pipeline_config

    configs = pipeline_config.load_configs(config_path)
    model = model_builder.build(configs["model"], is_training=False)
    tf.train.Checkpoint(model=model).restore(str(prefix)).expect_partial()

    @tf.function
    def detect(image: tf.Tensor) -> dict:
        preprocessed, shapes = model.preprocess(tf.cast(image, tf.float32))
        return model.postprocess(model.predict(preprocessed, shapes), shapes)

    results = []
    for image_id, image in enumerate(images, start=1):
        pixels = to_rgb(read_image(SAMPLE_IMAGES / image))
        height, width = pixels.shape[:2]
        output = detect(tf.convert_to_tensor(pixels[np.newaxis]))
        count = int(output["num_detections"][0])
        boxes = output["detection_boxes"][0][:count].numpy()
        classes = output["detection_classes"][0][:count].numpy().astype(int) + 1  # 0-based -> label-map ids
        scores = output["detection_scores"][0][:count].numpy()
        for (ymin, xmin, ymax, xmax), label, score in zip(boxes, classes, scores, strict=True):
            x, y = xmin * width, ymin * height
            results.append({"image_id": image_id, "category_id": int(label), "score": float(score),
                            "bbox": [float(x), float(y), float((xmax - xmin) * width), float((ymax - ymin) * height)]})
    return results


def map50(boxes: Sequence[Box], images: Sequence[str], results: list[dict]) -> float:
    """COCO AP at IoU 0.5 (pycocotools) of `results` against the NIH CSV's boxes."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ids = {image: number for number, image in enumerate(images, start=1)}
    dataset = {
        "images": [{"id": number, "file_name": image} for image, number in ids.items()],
        "categories": [{"id": class_id(name), "name": name} for name in CLASS_NAMES],
        "annotations": [
            {"id": n, "image_id": ids[b.image], "category_id": class_id(b.label), "iscrowd": 0,
             "bbox": [b.xmin, b.ymin, b.width, b.height], "area": b.width * b.height}
            for n, b in enumerate(boxes, start=1)
        ],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = dataset
        truth.createIndex()
        if not results:
            return 0.0
        evaluation = COCOeval(truth, truth.loadRes(results), "bbox")
        evaluation.params.iouThrs = np.array([0.5])
        evaluation.evaluate()
        evaluation.accumulate()
    precision = evaluation.eval["precision"][0, :, :, 0, -1]  # [recall, class] at IoU 0.5, all areas, 100 dets
    present = sorted({class_id(b.label) for b in boxes})
    per_class = [precision[:, evaluation.params.catIds.index(c)] for c in present]
    return float(np.mean([p[p > -1].mean() if (p > -1).any() else 0.0 for p in per_class]))
