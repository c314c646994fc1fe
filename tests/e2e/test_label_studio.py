"""Against a real Label Studio (the pinned release, in its own venv): the server as its ML backend, and the
file-based import of detect's label_studio_tasks.json; both annotated and exported through Label Studio's
API and read back by generate_tfrecords.

Both use local-files storage with the document root one folder above the images, as Label Studio 1.23
requires (it refuses a storage path equal to the document root).
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from chestdet.commands.cli import ExitStatus, run_main
from chestdet.commands.detect import main as detect
from chestdet.commands.generate_tfrecords import main as generate_tfrecords
from chestdet.core.contracts import LABEL_STUDIO_CONFIG_XML, LABEL_STUDIO_TASKS_JSON
from chestdet.core.labels import LabelMap, load_label_map
from chestdet.data import labelstudio
from chestdet.export.identity import model_version
from tests.conftest import LABEL_MAP, SAMPLE_IMAGES
from tests.support.label_studio import LabelStudio, label_studio_executable
from tests.support.records_reader import read_records
from tests.support.service_server import ServiceServer

pytestmark = pytest.mark.slow

NAMES = sorted(path.name for path in SAMPLE_IMAGES.glob("*.png"))[:2]
BOXES = 3  # boxes per image, from a model whose every box scores 0.00995


@pytest.fixture(scope="module")
def document_root(tmp_path_factory) -> Path:
    """root/images holds the films; root is Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT."""
    root = tmp_path_factory.mktemp("label studio files")
    (root / "images").mkdir()
    for name in NAMES:
        shutil.copy(SAMPLE_IMAGES / name, root / "images" / name)
    return root


@pytest.fixture(scope="module")
def label_studio(document_root, tmp_path_factory):
    with LabelStudio(label_studio_executable(), tmp_path_factory.mktemp("label studio"), document_root) as running:
        yield running


def edit(result: list[dict]) -> tuple[list[dict], list[tuple[str, list[float]]]]:
    """A person's corrections of a prediction's regions: move the first by 5% right, delete the second,
    relabel the third, draw one; and the boxes in pixels of a 1024x1024 film the records should then hold."""
    regions = [{k: v for k, v in copy.deepcopy(r).items() if k != "score"} for r in result]
    regions[0]["value"]["x"] += 5.0
    del regions[1]
    regions[1]["value"]["rectanglelabels"] = ["Mass"]
    drawn = copy.deepcopy(regions[1])
    drawn["id"], drawn["value"] = "drawn1", {"x": 60.0, "y": 55.0, "width": 10.0, "height": 12.5, "rotation": 0,
                                             "rectanglelabels": ["Nodule"]}
    regions.append(drawn)
    pixels = [(r["value"]["rectanglelabels"][0], [r["value"][k] * 10.24 for k in ("x", "y")] + [
        (r["value"]["x"] + r["value"]["width"]) * 10.24, (r["value"]["y"] + r["value"]["height"]) * 10.24])
        for r in regions]
    return regions, pixels


def annotate_export_and_read(label_studio: LabelStudio, project: int, document_root: Path, tmp_path: Path) -> None:
    """Annotate each task with `edit` of its prediction, export as JSON, and check generate_tfrecords' records."""
    expected = {}
    for task in label_studio.tasks(project):
        prediction, = label_studio.predictions(task["id"])
        regions, pixels = edit(prediction["result"])
        label_studio.call("POST", f"/api/tasks/{task['id']}/annotations", json={"result": regions})
        expected[labelstudio.image_names(next(iter(task["data"].values())))[0]] = pixels
    export = tmp_path / "export.json"
    export.write_text(json.dumps(label_studio.export(project)))
    out = tmp_path / "records"
    assert run_main(generate_tfrecords, ["--label-studio", str(export), "--image-dir", str(document_root / "images"),
                                         "--output-dir", str(out)]) == ExitStatus.SUCCESS
    records = read_records(sorted(out.glob("*.tfrecord")))
    assert set(records) == set(expected) == set(NAMES)
    ids = LabelMap.load(LABEL_MAP).class_ids
    for name, pixels in expected.items():
        assert records[name]["classes"] == [ids[label] for label, _ in pixels]
        boxes = np.array([[y0, x0, y1, x1] for _, (x0, y0, x1, y1) in pixels]) / 1024
        np.testing.assert_allclose(records[name]["boxes"], boxes, atol=0.2 / 1024)  # 0.2 px


def test_the_server_as_label_studios_ml_backend(label_studio, document_root, tiny_export, tmp_path):
    config = labelstudio.labeling_config(load_label_map(tiny_export / "label_map.pbtxt")).decode()
    with ServiceServer(tiny_export, tmp_path / "server", "--no-explain", "--floor-score", "0", "--min-score", "0",
                       "--max-boxes", str(BOXES)) as server:
        project = label_studio.project("ML backend", config)
        label_studio.local_storage(project, document_root / "images", files=True, sync=True)
        backend = label_studio.call("POST", "/api/ml", json={"url": server.url, "project": project,
                                                             "title": "chestdet", "auth_method": "NONE"})
        assert backend["state"] == "CO", backend  # connected: /health and /setup answered
        label_studio.call("POST", "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project},
                          json={"selectedItems": {"all": True, "excluded": []}})
        with server.client() as client:
            for task in label_studio.tasks(project):
                prediction, = label_studio.predictions(task["id"])
                url = next(iter(task["data"].values()))
                name = labelstudio.image_names(url)[0]
                assert url.startswith(f"{label_studio.url}/data/local-files/?d=images/")
                detected = client.post("/api/v1/detect", content=(document_root / "images" / name).read_bytes())
                boxes = detected.json()["detections"][:BOXES]
                assert prediction["model_version"] == model_version(tiny_export)
                assert [r["value"]["rectanglelabels"] for r in prediction["result"]] == [[b["class"]] for b in boxes]
                for region, box in zip(prediction["result"], boxes, strict=True):
                    assert region["score"] == box["score"]
                    assert region["value"]["x"] == pytest.approx(100 * box["box"][0] / 1024, abs=1e-4)
    annotate_export_and_read(label_studio, project, document_root, tmp_path)


def test_detects_tasks_file_imports_into_label_studio(label_studio, document_root, tiny_export, tmp_path):
    out = tmp_path / "detections"
    assert run_main(detect, ["--model", str(tiny_export), "--input", str(document_root / "images"), "--output-dir",
                             str(out), "--label-studio", "--min-score", "0", "--keep-score", "0", "--max-boxes",
                             str(BOXES), "--no-progress"]) == ExitStatus.SUCCESS
    tasks = json.loads((out / LABEL_STUDIO_TASKS_JSON).read_text())
    assert tasks[0]["data"]["image"] == f"/data/local-files/?d=images/{NAMES[0]}"  # the document root is one up
    project = label_studio.project("file import", (out / LABEL_STUDIO_CONFIG_XML).read_text())
    label_studio.local_storage(project, document_root / "images", files=False, sync=False)  # serves the files
    label_studio.call("POST", f"/api/projects/{project}/import", json=tasks)
    imported = {task["data"]["image"]: task for task in label_studio.tasks(project)}
    for written in tasks:
        task = imported[written["data"]["image"]]
        assert label_studio.api.get(written["data"]["image"]).status_code == 200  # the image loads
        prediction, = label_studio.predictions(task["id"])
        assert prediction["result"] == written["predictions"][0]["result"]
        assert prediction["score"] == written["predictions"][0]["score"]
        assert prediction["model_version"] == written["predictions"][0]["model_version"]
    annotate_export_and_read(label_studio, project, document_root, tmp_path)
