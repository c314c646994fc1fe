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
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from chestdet.core import atomic
from chestdet.core.contracts import DETECTIONS_COCO_JSON, LABEL_STUDIO_CONFIG_XML, LABEL_STUDIO_TASKS_JSON
from chestdet.core.detections import Detection, ImageResult
from chestdet.data import labelstudio
from chestdet.detection.inputs import InputImage
from chestdet.detection.tables import JsonArray, PublishedWhole

# The boxes of one image that a person sees (the drawing thresholds, at most max_boxes).
Shown = Callable[[Sequence[Detection]], list[Detection]]


@dataclass(frozen=True)
class ReviewOptions:
    label_studio: bool = False
    image_url_prefix: str = labelstudio.DEFAULT_IMAGE_URL_PREFIX
    model_version: str = ""


def coco_annotation(annotation_id: int, image_id: int, d: Detection) -> dict:
    """One shown box as a COCO annotation: bbox [x, y, width, height] in pixels, area, score, iscrowd 0."""
    width, height = round(d.xmax - d.xmin, 2), round(d.ymax - d.ymin, 2)
    return {
        "id": annotation_id, "image_id": image_id, "category_id": d.class_id,
        "bbox": [d.xmin, d.ymin, width, height], "area": round(width * height, 2), "score": d.score,
        "iscrowd": 0, "segmentation": [],
    }


class ReviewWriter(PublishedWhole):
    """detections_coco.json, and with Label Studio on its tasks and labeling config, an image at a time.

    Image ids are those of detections.json and coco_images.json (the position in the input listing);
    file names are paths relative to the input folder; every readable image is listed, boxes or not.
    The annotations go to a scratch file while the images are written, and are appended after them.
    """

    def __init__(self, output_dir: Path, class_names: Mapping[int, str], shown: Shown,
                 options: ReviewOptions = ReviewOptions()) -> None:
        self._output_dir, self._class_names, self._shown, self._options = output_dir, dict(class_names), shown, options
        self._coco = atomic.PendingFile(output_dir / DETECTIONS_COCO_JSON, "w", encoding="utf-8")
        self._annotations_part = atomic.PendingFile(output_dir / f"{DETECTIONS_COCO_JSON}.annotations", "w+",
                                                    encoding="utf-8")
        description = "chestdet detections" + (f" of {options.model_version}" if options.model_version else "")
        head = json.dumps({"info": {"description": description, "version": "1.0"}, "licenses": []}, indent=2)
        self._coco.handle.write(head[:-2] + ',\n  "images": ')
        self._images = JsonArray(self._coco.handle, indent=2, level=1)
        self._annotations = JsonArray(self._annotations_part.handle, indent=2, level=1)
        self._annotation_count = 0
        self._tasks_file = (atomic.PendingFile(output_dir / LABEL_STUDIO_TASKS_JSON, "w", encoding="utf-8")
                            if options.label_studio else None)
        self._tasks = JsonArray(self._tasks_file.handle, indent=1) if self._tasks_file else None

    def add(self, item: InputImage, result: ImageResult) -> None:
        if result.error is not None:
            return
        shown = self._shown(result.detections)
        self._images.append({"id": item.image_id, "file_name": result.image, "width": result.width,
                             "height": result.height})
        for detection in shown:
            self._annotation_count += 1
            self._annotations.append(coco_annotation(self._annotation_count, item.image_id, detection))
        if self._tasks is not None:
            self._tasks.append(labelstudio.task(result.image, result.width, result.height, shown, self._class_names,
                                                self._options.model_version, self._options.image_url_prefix))

    def close(self) -> None:
        self._images.close()
        categories = [{"id": k, "name": v, "supercategory": ""} for k, v in sorted(self._class_names.items())]
        self._coco.handle.write(',\n  "categories": ' + json.dumps(categories, indent=2).replace("\n", "\n  "))
        self._coco.handle.write(',\n  "annotations": ')
        self._annotations.close()
        self._annotations_part.handle.seek(0)
        shutil.copyfileobj(self._annotations_part.handle, self._coco.handle)
        self._annotations_part.discard()
        self._coco.handle.write("\n}\n")
        self._coco.commit()
        if self._tasks is not None:
            self._tasks.close()
            self._tasks_file.handle.write("\n")
            self._tasks_file.commit()
            config = labelstudio.labeling_config(self._class_names)
            atomic.write_bytes(self._output_dir / LABEL_STUDIO_CONFIG_XML, config)

    def abort(self) -> None:
        for pending in (self._coco, self._annotations_part, self._tasks_file):
            if pending is not None:
                pending.discard()
