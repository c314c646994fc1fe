"""A reviewer in Chromium: upload a film, change the sensitivity, look at the evidence, correct the boxes,
save; the feedback folder then holds exactly the reviewed boxes and goes into records.

Screenshots of each step are kept under pytest-playwright's --output folder (test-results/ by default).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from defusedxml import ElementTree
from playwright.sync_api import Page, expect

from chestdet.commands.cli import ExitStatus, run_main
from chestdet.commands.generate_tfrecords import main as generate_tfrecords
from chestdet.core.labels import LabelMap
from chestdet.detection.thresholds import OperatingPoint, OperatingPoints, write_operating_points
from tests.conftest import SAMPLE_IMAGES
from tests.support.records_reader import read_records
from tests.support.review_page import ReviewPage
from tests.support.service_server import ServiceServer

pytestmark = pytest.mark.slow

FILM = sorted(SAMPLE_IMAGES.glob("*.png"))[0]
SHOWN = 6


@pytest.fixture
def review_server(tiny_export, random_class, tmp_path):
    """The random model's boxes (all of one class, scoring 0.00995), six of them shown at first."""
    points = OperatingPoints({random_class[1]: {"1fp": OperatingPoint(0.5, 0.2, 1.0, 0.1)}}, split="val")
    write_operating_points(tmp_path / "operating_points.json", points)
    with ServiceServer(tiny_export, tmp_path / "server", "--floor-score", "0", "--min-score", "0", "--max-boxes",
                       str(SHOWN), "--operating-points", str(tmp_path / "operating_points.json")) as server:
        yield server


def xml_objects(path: Path) -> list[tuple[str, list[int]]]:
    root = ElementTree.parse(str(path)).getroot()
    return [(o.findtext("name"), [int(o.find("bndbox").findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")])
            for o in root.iter("object")]


def close_to(found: list[int], expected: list[float], tolerance: float) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(found, expected, strict=True))


def test_a_reviewer_corrects_the_boxes_and_the_corrections_reach_the_records(page: Page, review_server, tiny_export,
                                                                             random_class, output_path, tmp_path):
    model_class = random_class[1]
    shots = Path(output_path)
    shots.mkdir(parents=True, exist_ok=True)
    model = httpx.post(f"{review_server.url}/api/v1/detect", content=FILM.read_bytes(), timeout=60).json()
    expected = [d["box"] for d in model["detections"][:SHOWN]]  # all equal scores: the API's order
    review = ReviewPage(page, review_server.url).open()
    expect(page.get_by_test_id("disclaimer")).to_contain_text("not a diagnosis")

    review.upload(FILM)  # 1. the film and its boxes
    expect(review.count).to_have_text(str(SHOWN))
    expect(review.boxes).to_have_count(SHOWN)
    page.screenshot(path=shots / "1-uploaded.png", full_page=True)

    review.choose_preset(model_class, "1fp")  # 2. sensitivity: the 1fp point hides them, the slider brings them back
    expect(review.count).to_have_text("0")
    review.set_threshold(model_class, 0.009)
    expect(review.count).to_have_text(str(SHOWN))
    page.screenshot(path=shots / "2-sensitivity.png", full_page=True)

    ids = review.box_ids()
    review.explain(ids[0])  # 3. one box's evidence
    page.screenshot(path=shots / "3-explanation.png", full_page=True)

    review.delete(ids[1])  # 4. delete, relabel, move, draw
    expect(review.count).to_have_text(str(SHOWN - 1))
    review.relabel(ids[2], "Mass")
    review.move(ids[3], 60, 40)
    scale = review.screen_scale(1024)
    start = review.to_screen(600, 600, 1024, 1024)
    end = review.to_screen(760, 700, 1024, 1024)
    review.draw("Nodule", start, end)
    expect(review.count).to_have_text(str(SHOWN))
    page.screenshot(path=shots / "4-edited.png", full_page=True)

    status = review.save("Dr Test")  # 5. save
    assert "6 boxes" in status
    page.screenshot(path=shots / "5-saved.png", full_page=True)

    feedback = review_server.feedback
    xml, = (feedback / "xml").glob("*.xml")
    objects = xml_objects(xml)
    moved = [expected[3][0] + 60 * scale, expected[3][1] + 40 * scale, expected[3][2] + 60 * scale,
             expected[3][3] + 40 * scale]
    wanted = [(model_class, expected[0]), ("Mass", expected[2]), (model_class, moved),
              (model_class, expected[4]), (model_class, expected[5]), ("Nodule", [600, 600, 760, 700])]
    assert sorted(name for name, _ in objects) == sorted(name for name, _ in wanted)
    for name, box in wanted:  # each reviewed box once, within rounding (and a screen pixel for dragged ones)
        assert any(n == name and close_to(found, box, 1 + 2 * scale) for n, found in objects), (name, box, objects)
    line, = (feedback / "reviews.jsonl").read_text().splitlines()
    verdicts = sorted(box["verdict"] for box in json.loads(line)["boxes"])
    assert verdicts == ["accepted", "accepted", "accepted", "deleted", "drawn", "moved", "relabelled"]

    out = tmp_path / "records"
    assert run_main(generate_tfrecords, ["--xml-dir", str(feedback / "xml"), "--image-dir", str(feedback / "images"),
                                         "--output-dir", str(out)]) == ExitStatus.SUCCESS
    record, = read_records(sorted(out.glob("*.tfrecord"))).values()
    class_ids = LabelMap.load(tiny_export / "label_map.pbtxt").class_ids
    assert sorted(record["classes"]) == sorted(class_ids[name] for name, _ in objects)
