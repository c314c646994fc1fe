"""The files annotation tools import, written from a detection run's `ImageResult`s in listing order.

- detections_coco.json: a full COCO dataset (images, categories, annotations with `score`), which
  CVAT's COCO 1.0 import and FiftyOne's COCODetectionDataset take as it is;
- with Label Studio on: label_studio_tasks.json (one task per image, its boxes as a prediction)
  and label_studio_config.xml (the labeling config those tasks fit).

Both hold the boxes a person sees on the drawn images: the kept boxes at or above their class's
drawing threshold, at most `max_boxes` per image, each with its score. detections.json (COCO
results) and detections.csv keep everything above --keep-score for evaluation.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from chestdet import atomic, labelstudio
from chestdet.contracts import DETECTIONS_COCO_JSON, LABEL_STUDIO_CONFIG_XML, LABEL_STUDIO_TASKS_JSON
from chestdet.detections import Detection, ImageResult
from chestdet.inputs import InputImage

# The boxes of one image that a person sees (the drawing thresholds, at most max_boxes).
Shown = Callable[[Sequence[Detection]], list[Detection]]


@dataclass(frozen=True)
class ReviewOptions:
    label_studio: bool = False
    image_url_prefix: str = labelstudio.DEFAULT_IMAGE_URL_PREFIX
    model_version: str = ""


def coco_dataset(
    readable: Sequence[tuple[InputImage, ImageResult]], class_names: Mapping[int, str], shown: Shown,
    model_version: str = "",
) -> dict:
    """A COCO dataset of the shown boxes: bbox [x, y, width, height] in pixels, area, score, iscrowd 0.

    Image ids are those of detections.json and coco_images.json (the position in the input listing);
    file names are paths relative to the input folder; every readable image is listed, boxes or not.
    """
    annotations = []
    for item, result in readable:
        for d in shown(result.detections):
            width, height = round(d.xmax - d.xmin, 2), round(d.ymax - d.ymin, 2)
            annotations.append({
                "id": len(annotations) + 1, "image_id": item.image_id, "category_id": d.class_id,
                "bbox": [d.xmin, d.ymin, width, height], "area": round(width * height, 2), "score": d.score,
                "iscrowd": 0, "segmentation": [],
            })
    return {
        "info": {"description": "chestdet detections" + (f" of {model_version}" if model_version else ""),
                 "version": "1.0"},
        "licenses": [],
        "images": [{"id": i.image_id, "file_name": r.image, "width": r.width, "height": r.height} for i, r in readable],
        "categories": [{"id": k, "name": v, "supercategory": ""} for k, v in sorted(class_names.items())],
        "annotations": annotations,
    }


def label_studio_tasks(
    readable: Sequence[tuple[InputImage, ImageResult]], class_names: Mapping[int, str], shown: Shown,
    options: ReviewOptions,
) -> list[dict]:
    """One Label Studio task per readable image, its shown boxes as the prediction."""
    return [
        labelstudio.task(r.image, r.width, r.height, shown(r.detections), class_names, options.model_version,
                         options.image_url_prefix)
        for _, r in readable
    ]


def write_review_files(
    output_dir: Path, images: Sequence[InputImage], results: Mapping[str, ImageResult],
    class_names: Mapping[int, str], shown: Shown, options: ReviewOptions = ReviewOptions(),
) -> None:
    """detections_coco.json, and with Label Studio on its tasks and labeling config, in listing order."""
    readable = [(i, results[i.name]) for i in images if i.name in results and results[i.name].error is None]
    atomic.write_json(output_dir / DETECTIONS_COCO_JSON,
                      coco_dataset(readable, class_names, shown, options.model_version))
    if options.label_studio:
        tasks = label_studio_tasks(readable, class_names, shown, options)
        atomic.write_text(output_dir / LABEL_STUDIO_TASKS_JSON, json.dumps(tasks, indent=1) + "\n")
        atomic.write_bytes(output_dir / LABEL_STUDIO_CONFIG_XML, labelstudio.labeling_config(class_names))
