"""The records detect hands on: their dict form is what the journal holds."""

from __future__ import annotations

from chestdet.core.detections import Detection, ImageResult


def test_an_image_result_round_trips_through_its_dict_with_or_without_detections_or_an_error():
    results = [
        ImageResult("sub/a.png", "/x/sub/a.png", 1024, 1000, (Detection(3, 0.25, 1.5, 2.0, 700.25, 999.9),)),
        ImageResult("b.png", "/x/b.png", 512, 512),
        ImageResult("c.png", "/x/c.png", error="cannot decode (ValueError: truncated)"),
    ]
    for result in results:
        assert ImageResult.from_dict(result.to_dict()) == result
    reason = "cannot decode (ValueError: truncated)"
    assert results[2].to_dict() == {"image": "c.png", "path": "/x/c.png", "error": reason}
    assert results[0].to_dict()["detections"] == [[3, 0.25, 1.5, 2.0, 700.25, 999.9]]
