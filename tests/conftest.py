"""Shared paths and fixtures. The bundled sample is always there; the full NIH copy may not be."""

from __future__ import annotations

import os
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


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory) -> Path:
    """One export (SavedModel + TFLite, 128x128, random weights) of the project's SSD per test session.

    Takes about 4 minutes on a 2-core CPU; the model dir it came from is the export's sibling `model`.
    """
    from tests.support.model_fixtures import make_tiny_export

    return make_tiny_export(tmp_path_factory.mktemp("tiny export"), image_size=128)


@pytest.fixture(scope="session")
def trained_export(tmp_path_factory) -> Path:
    """The project's SSD at 256x256 trained from scratch for 300 steps on the 16 overfit sample images,
    exported (SavedModel + TFLite): confident scores on those images. About 8 minutes on a 2-core CPU."""
    from tests.support.model_fixtures import make_trained_export

    return make_trained_export(tmp_path_factory.mktemp("trained export"), image_size=256, steps=300)


@pytest.fixture(scope="session")
def tiny_ssd(tmp_path_factory):  # noqa: ANN201 - (an OD API SSDMetaArch, its configs)
    """The project's SSD at 128x128 with the builder's initial weights, built as chestdet.detection.explain builds it
    (a few seconds): (model, configs, its predict outputs on a blank image)."""
    from chestdet.detection.explain import build_model, load_configs
    from tests.support.model_fixtures import write_tiny_config

    folder = tmp_path_factory.mktemp("tiny ssd")
    write_tiny_config(folder)
    configs = load_configs(folder)
    model, blank = build_model(configs)
    return model, configs, blank


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory):  # noqa: ANN201 - tests.support.orthanc.Orthanc
    """Debian's Orthanc (with DICOMweb) on free loopback ports, from a config in a temp folder; its Lua script
    routes CR/DX films to the DICOM node at `orthanc.node_port` (AE CHESTDET). Stopped at the end."""
    from tests.support.dicom_peers import free_port
    from tests.support.orthanc import Orthanc

    server = Orthanc(tmp_path_factory.mktemp("orthanc"), free_port()).start()
    yield server
    server.stop()
