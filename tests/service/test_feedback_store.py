"""The feedback folder's writer alone: names by SHA-256, replacement, and reviews.jsonl after a cut line."""

from __future__ import annotations

import json

import cv2
import pytest

from chestdet.core.imaging import MAX_PIXELS
from chestdet.service.feedback import FeedbackStore, ReviewError, latest_reviews
from chestdet.service.schemas import Review
from chestdet.service.uploads import UploadError, read_upload
from tests.support.image_makers import gradient, write_bomb_png

NAMES = {1: "Atelectasis", 5: "Mass", 6: "Nodule"}


def upload(seed: int = 0):  # noqa: ANN201 - an Upload
    image = gradient(64, 48).copy()
    image[0, 0] = seed
    return read_upload(cv2.imencode(".png", image)[1].tobytes(), MAX_PIXELS)


def review(*boxes: dict, reviewer: str = "Dr A") -> Review:
    return Review.model_validate({"reviewer": reviewer, "boxes": list(boxes)})


def test_a_review_is_stored_by_sha256_and_a_later_one_replaces_its_xml(tmp_path):
    store = FeedbackStore(tmp_path, NAMES)
    image = upload()
    first = store.save(image, review({"verdict": "drawn", "class": "mass", "box": [1, 2, 30, 40]}), "m")
    second = store.save(image, review({"verdict": "drawn", "class": "Nodule", "box": [5, 5, 20, 20]},
                                      reviewer="Dr B"), "m")
    assert first["image"] == f"images/{image.sha256}.png" and first["replaced"] is False
    assert second["replaced"] is True
    xml = (tmp_path / first["xml"]).read_text()
    assert "<name>Nodule</name>" in xml and "Mass" not in xml
    assert (tmp_path / first["image"]).read_bytes() == image.data
    assert latest_reviews(tmp_path)[image.sha256]["reviewer"] == "Dr B"
    assert len((tmp_path / "reviews.jsonl").read_text().splitlines()) == 2


def test_a_line_cut_by_a_crash_is_skipped_and_the_next_review_starts_on_its_own_line(tmp_path):
    store = FeedbackStore(tmp_path, NAMES)
    store.save(upload(1), review(), "m")
    with open(tmp_path / "reviews.jsonl", "a") as log:
        log.write('{"sha256": "cut sho')  # a kill in the middle of an append
    store.save(upload(2), review(), "m")
    lines = (tmp_path / "reviews.jsonl").read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[2])["sha256"] == upload(2).sha256
    assert set(latest_reviews(tmp_path)) == {upload(1).sha256, upload(2).sha256}


@pytest.mark.parametrize("box, reason", [
    ({"verdict": "drawn", "class": "Fracture", "box": [1, 2, 30, 40]}, "box 1: unknown class 'Fracture'"),
    ({"verdict": "drawn", "class": "Mass", "box": [70, 2, 90, 40]}, "box 1: [70.0, 2.0, 90.0, 40.0] has no area"),
])
def test_a_bad_box_is_refused_naming_it_and_nothing_is_written(tmp_path, box, reason):
    store = FeedbackStore(tmp_path, NAMES)
    with pytest.raises(ReviewError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        store.save(upload(), review(box), "m")
    assert not (tmp_path / "reviews.jsonl").exists() and not list((tmp_path / "xml").iterdir())


def test_uploads_that_are_not_images_or_are_bombs_are_refused_with_their_status(tmp_path):
    with pytest.raises(UploadError) as error:
        read_upload(b"GIF89a not really", MAX_PIXELS)
    assert error.value.status == 415
    with pytest.raises(UploadError) as error:
        read_upload(write_bomb_png(tmp_path / "bomb.png", 10_000, 10_000).read_bytes(), MAX_PIXELS)
    assert error.value.status == 422 and "over the limit of" in error.value.reason
    assert "/" not in error.value.reason  # no server path in what the client is told
