"""Installed as a wheel, outside the repository, the package finds its own label map and pipeline
configs and its console commands make records and detect."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import REPO, SAMPLE_CSV, SAMPLE_IMAGES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory) -> Path:
    """A new venv holding only the built wheel; the locked dependencies come from the test's own venv
    through a .pth path line (whose own .pth files, the editable install's among them, are not run)."""
    folder = tmp_path_factory.mktemp("wheel venv")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(folder / "dist"), str(REPO)], check=True, cwd=folder)
    [wheel] = (folder / "dist").glob("chestdet-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder / "venv")], check=True)
    python = folder / "venv" / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "locked-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    str(wheel)], check=True)
    return folder / "venv" / "bin"


def run(bin_dir: Path, *argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return subprocess.run([str(bin_dir / argv[0]), *argv[1:]], cwd=cwd, env=env, capture_output=True, text=True)


def test_the_wheel_reads_its_own_files_and_makes_records_and_detections(wheel_venv: Path, tiny_export: Path,
                                                                       tmp_path: Path):
    away = tmp_path / "elsewhere"
    away.mkdir()
    probe = run(wheel_venv, "python", "-c", (
        "import chestdet, chestdet.core.resources as r; from chestdet.core.labels import load_label_map; "
        "from chestdet.training.pipeline_config import load_configs; "
        "print(chestdet.__file__); print(len(load_label_map(r.DEFAULT_LABEL_MAP))); "
        "print(load_configs(r.DEFAULT_PIPELINE)['model'].ssd.num_classes)"), cwd=away)
    assert probe.returncode == 0, probe.stderr[-2000:]
    location, classes, num_classes = probe.stdout.splitlines()[-3:]
    assert str(wheel_venv.parent) in location and str(REPO) not in location
    assert classes == num_classes == "8"

    records = run(wheel_venv, "chestdet-generate-tfrecords", "--nih-csv", str(SAMPLE_CSV), "--image-dir",
                  str(SAMPLE_IMAGES), "--output-dir", "records", cwd=away)
    assert records.returncode == 0, records.stderr[-2000:]
    assert list((away / "records").glob("train-*.tfrecord")) and (away / "records" / "label_map.pbtxt").is_file()

    (away / "three.txt").write_text("".join(f"{path}\n" for path in sorted(SAMPLE_IMAGES.glob("*.png"))[:3]))
    detect = run(wheel_venv, "chestdet-detect", "--model", str(tiny_export), "--input", "three.txt",
                 "--output-dir", "detections", cwd=away)
    assert detect.returncode == 0, detect.stderr[-2000:]
    assert len((away / "detections" / "images.csv").read_text().splitlines()) == 4
