"""The files annotation tools import from a detection run: a COCO dataset of the shown boxes, and Label Studio's
tasks and labeling config."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote

import defusedxml.ElementTree as SafeElementTree
import pytest

from chestdet.core.contracts import DETECTIONS_COCO_JSON, LABEL_STUDIO_CONFIG_XML, LABEL_STUDIO_TASKS_JSON
from chestdet.core.detections import Detection, ImageResult
from chestdet.detection.inputs import InputImage
from chestdet.detection.review import ReviewOptions, ReviewWriter
from tests.support.results import CLASS_NAMES, made_up_run

REVIEW_FILES = (DETECTIONS_COCO_JSON, LABEL_STUDIO_TASKS_JSON, LABEL_STUDIO_CONFIG_XML)


def shown(detections: Sequence[Detection]) -> list[Detection]:
    """What a person sees on the drawn image: here boxes scoring at least 0.4, at most two of them."""
    return [d for d in detections if d.score >= 0.4][:2]


def write_review(out: Path, pairs: list[tuple[InputImage, ImageResult]], options: ReviewOptions) -> None:
    with ReviewWriter(out, CLASS_NAMES, shown, options) as review:
        for item, result in pairs:
            review.add(item, result)


def test_the_coco_dataset_loads_in_pycocotools_with_every_readable_image_and_only_the_shown_boxes(tmp_path: Path):
    from pycocotools.coco import COCO

    pairs = made_up_run(15)
    write_review(tmp_path, pairs, ReviewOptions(model_version="nih step 1200"))
    coco = COCO(str(tmp_path / DETECTIONS_COCO_JSON))
    assert coco.dataset["info"]["description"] == "chestdet detections of nih step 1200"
    assert {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())} == CLASS_NAMES
    read = [(item, result) for item, result in pairs if result.error is None]
    assert sorted(coco.getImgIds()) == [item.image_id for item, _ in read]
    hidden = 0
    for item, result in read:
        image = coco.imgs[item.image_id]
        assert (image["file_name"], image["width"], image["height"]) == (result.image, result.width, result.height)
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=[item.image_id]))
        expected = shown(result.detections)
        hidden += len(result.detections) - len(expected)
        assert [a["category_id"] for a in annotations] == [d.class_id for d in expected]
        for annotation, d in zip(annotations, expected, strict=True):
            x, y, w, h = annotation["bbox"]
            assert [x, y, x + w, y + h] == pytest.approx([d.xmin, d.ymin, d.xmax, d.ymax], abs=0.01)
            assert annotation["area"] == pytest.approx(w * h, abs=0.01)
            assert (annotation["score"], annotation["iscrowd"]) == (d.score, 0)
    assert hidden > 0 and any(not shown(r.detections) for _, r in read), "the case has hidden boxes and empty images"
    ids = [a["id"] for a in coco.dataset["annotations"]]
    assert len(set(ids)) == len(ids) and min(ids) >= 1


def test_without_label_studio_no_task_or_config_is_written(tmp_path: Path):
    write_review(tmp_path, made_up_run(5), ReviewOptions(label_studio=False))
    assert sorted(p.name for p in tmp_path.iterdir()) == [DETECTIONS_COCO_JSON]


def test_label_studio_tasks_hold_the_shown_boxes_and_fit_the_labeling_config(tmp_path: Path):
    prefix = "/data/upload/?path="
    pairs = made_up_run(10)
    pairs.append((InputImage("second look/x ray #1.png", Path("/in/second look/x ray #1.png"), 11),
                  ImageResult("second look/x ray #1.png", "/in/second look/x ray #1.png", 200, 100,
                              (Detection(3, 0.75, 20, 10, 120, 60),))))
    write_review(tmp_path, pairs, ReviewOptions(label_studio=True, image_url_prefix=prefix, model_version="v7"))
    tasks = json.loads((tmp_path / LABEL_STUDIO_TASKS_JSON).read_text(encoding="utf-8"))
    read = [result for _, result in pairs if result.error is None]
    assert len(tasks) == len(read)

    view = SafeElementTree.fromstring((tmp_path / LABEL_STUDIO_CONFIG_XML).read_bytes())
    image_tag, = view.findall("Image")
    labels_tag, = view.findall("RectangleLabels")
    data_key = image_tag.get("value").removeprefix("$")
    assert labels_tag.get("toName") == image_tag.get("name")
    assert [label.get("value") for label in labels_tag.findall("Label")] == [CLASS_NAMES[k]
                                                                           for k in sorted(CLASS_NAMES)]

    for task, result in zip(tasks, read, strict=True):
        url = task["data"][data_key]
        assert url.startswith(prefix) and unquote(url.removeprefix(prefix)) == result.image
        prediction, = task["predictions"]
        expected = shown(result.detections)
        assert prediction["model_version"] == "v7"
        assert prediction["score"] == max((d.score for d in expected), default=0.0)
        assert len(prediction["result"]) == len(expected)
        for region, d in zip(prediction["result"], expected, strict=True):
            assert (region["from_name"], region["to_name"]) == (labels_tag.get("name"), image_tag.get("name"))
            assert region["value"]["rectanglelabels"] == [CLASS_NAMES[d.class_id]]
            width, height = region["original_width"], region["original_height"]
            assert (width, height) == (result.width, result.height)
            value = region["value"]
            corners = [value["x"] * width / 100, value["y"] * height / 100,
                       (value["x"] + value["width"]) * width / 100, (value["y"] + value["height"]) * height / 100]
            assert corners == pytest.approx([d.xmin, d.ymin, d.xmax, d.ymax], abs=1e-3)
            assert region["score"] == d.score


def test_a_run_without_readable_images_still_writes_files_that_load(tmp_path: Path):
    from pycocotools.coco import COCO

    broken = [(InputImage("a.png", Path("/in/a.png"), 1), ImageResult("a.png", "/in/a.png", error="not an image"))]
    write_review(tmp_path, broken, ReviewOptions(label_studio=True))
    coco = COCO(str(tmp_path / DETECTIONS_COCO_JSON))
    assert coco.dataset["images"] == [] and coco.dataset["annotations"] == []
    assert json.loads((tmp_path / LABEL_STUDIO_TASKS_JSON).read_text()) == []


def test_nothing_is_published_before_close_and_a_failure_publishes_nothing(tmp_path: Path):
    write_review(tmp_path, made_up_run(3), ReviewOptions(label_studio=True))
    earlier = {name: (tmp_path / name).read_bytes() for name in REVIEW_FILES}
    review = ReviewWriter(tmp_path, CLASS_NAMES, shown, ReviewOptions(label_studio=True, model_version="new"))
    for item, result in made_up_run(8):
        review.add(item, result)
    assert {name: (tmp_path / name).read_bytes() for name in REVIEW_FILES} == earlier
    review.abort()
    assert {name: (tmp_path / name).read_bytes() for name in REVIEW_FILES} == earlier
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(REVIEW_FILES), "no scratch or temporary file is left"

    review = ReviewWriter(tmp_path, CLASS_NAMES, shown, ReviewOptions(label_studio=True, model_version="new"))
    pairs = made_up_run(8)
    for item, result in pairs:
        review.add(item, result)
    review.close()
    assert json.loads((tmp_path / DETECTIONS_COCO_JSON).read_text())["info"]["description"].endswith("of new")
    tasks = json.loads((tmp_path / LABEL_STUDIO_TASKS_JSON).read_text())
    assert len(tasks) == sum(result.error is None for _, result in pairs)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(REVIEW_FILES)


def test_the_streamed_files_are_what_json_dumps_writes_for_the_whole(tmp_path: Path):
    """Written image by image, yet the same bytes as dumping the finished lists: diffs between runs stay readable."""
    for count in (0, 1, 6):
        out = tmp_path / str(count)
        write_review(out, made_up_run(count), ReviewOptions(label_studio=True))
        for name, indent in ((DETECTIONS_COCO_JSON, 2), (LABEL_STUDIO_TASKS_JSON, 1)):
            text = (out / name).read_text(encoding="utf-8")
            assert text == json.dumps(json.loads(text), indent=indent) + "\n", (count, name)
