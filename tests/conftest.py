"""Shared paths and fixtures. The bundled sample is always there; the full NIH copy may not be."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "workspace" / "sample" / "nih"
SAMPLE_CSV = SAMPLE / "BBox_List_2017.csv"
SAMPLE_DATA_ENTRY = SAMPLE / "Data_Entry_2017_sample.csv"
SAMPLE_IMAGES = SAMPLE / "images"
SAMPLE_UNLABELED = SAMPLE / "unlabeled"
LABEL_MAP = REPO / "chestdet" / "resources" / "label_map.pbtxt"
FULL_NIH = Path(os.environ.get("CHESTDET_NIH_DIR", REPO.parent / "shared" / "data" / "nih"))


@pytest.fixture
def full_nih() -> Path:
    """The full development copy of NIH data; tests that need it skip, saying why, when it is absent."""
    if not (FULL_NIH / "images").is_dir():
        pytest.skip(f"full NIH data not found at {FULL_NIH} (set CHESTDET_NIH_DIR to run this test)")
    return FULL_NIH


def built_once(tmp_path_factory, name: str, build: Callable[[Path], Path]) -> Path:
    """A model fixture built once per test run: under pytest-xdist, the first worker that needs it builds
    it, under a file lock, in the run's temporary folder that all workers share, and the others reuse it."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    done = root / f"{name}.path"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.is_file():
            folder = root / name
            folder.mkdir(exist_ok=True)
            done.write_text(str(build(folder)))
    return Path(done.read_text())


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory) -> Path:
    """One export (SavedModel + TFLite, 128x128, random weights) of the project's SSD per test session.

    Takes about 4 minutes on a 2-core CPU; the model dir it came from is the export's sibling `model`.
    """
    from tests.support.model_fixtures import make_tiny_export

    return built_once(tmp_path_factory, "tiny export", lambda folder: make_tiny_export(folder, image_size=128))


@pytest.fixture(scope="session")
def random_class(tiny_export) -> tuple[int, str]:
    """(id, name) of the class of `tiny_export`'s first boxes on the TFLite backend. Random weights score
    every box alike, so which class comes first is the interpreter's tie-break, not the model's
    (TensorFlow's interpreter put Pneumothorax first, LiteRT's puts Atelectasis)."""
    from chestdet.core.imaging import read_image
    from chestdet.core.labels import load_label_map
    from chestdet.export.backends import open_backend

    backend = open_backend("tflite", tiny_export, interpreters=1)
    output, = backend.infer([backend.prepare(read_image(sorted(SAMPLE_IMAGES.glob("*.png"))[0]))])
    classes = set(output.classes[:8].tolist())
    assert len(classes) == 1, f"the random model's first boxes are of several classes: {classes}"
    class_id = classes.pop()
    return class_id, load_label_map(tiny_export / "label_map.pbtxt")[class_id]


@pytest.fixture(scope="session")
def overfit_run(tmp_path_factory) -> Path:
    """A run folder of the project's SSD trained by the library's train() from scratch on the 16 overfit sample
    images (256x256, batch 4, 400 steps, no augmentation; tests.support.model_fixtures.train_overfit_run).
    About 5 minutes on a 2-core CPU; tests that need a trained model share it."""
    from tests.support.model_fixtures import train_overfit_run

    return built_once(tmp_path_factory, "overfit run", train_overfit_run)


@pytest.fixture(scope="session")
def trained_export(overfit_run, tmp_path_factory) -> Path:
    """`overfit_run`'s last checkpoint exported (SavedModel + TFLite): confident scores on the overfit images.
    About 4 more minutes on a 2-core CPU."""
    from chestdet.export.options import ExportOptions, export

    return built_once(tmp_path_factory, "trained export",
                      lambda folder: export(ExportOptions(checkpoint=overfit_run, output_dir=folder / "export")))


@pytest.fixture(scope="session")
def tiny_ssd(tmp_path_factory):  # noqa: ANN201 - (an OD API SSDMetaArch, its configs)
    """The project's SSD at 128x128 with the builder's initial weights, built as chestdet.detection.explain builds it
    (a few seconds): (model, configs, its predict outputs on a blank image)."""
    from chestdet.detection.gradcam import build_model, load_configs
    from tests.support.model_fixtures import write_tiny_config

    folder = tmp_path_factory.mktemp("tiny ssd")
    write_tiny_config(folder)
    configs = load_configs(folder)
    model, blank = build_model(configs)
    return model, configs, blank


@pytest.fixture(scope="session")
def folds_dir(tmp_path_factory) -> Path:
    """generate_tfrecords --folds 2 on the bundled sample (boxes, Data_Entry patients, unlabeled images)."""
    from chestdet.commands.generate_tfrecords import main as generate

    output = tmp_path_factory.mktemp("cv") / "fold records"
    assert generate(["--nih-csv", str(SAMPLE_CSV), "--image-dir", str(SAMPLE_IMAGES), "--data-entry",
                     str(SAMPLE_DATA_ENTRY), "--unlabeled-dir", str(SAMPLE_UNLABELED), "--output-dir", str(output),
                     "--folds", "2"]) == 0
    return output


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory):  # noqa: ANN201 - tests.support.orthanc.Orthanc
    """Debian's Orthanc (with DICOMweb) on free loopback ports, from a config in a temp folder; its Lua script
    routes CR/DX films to the DICOM node at `orthanc.node_port` (AE CHESTDET). Stopped at the end."""
    from tests.support.orthanc import Orthanc
    from tests.support.processes import free_port

    server = Orthanc(tmp_path_factory.mktemp("orthanc"), free_port()).start()
    yield server
    server.stop()
