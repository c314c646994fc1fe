"""A real Label Studio for tests: the pinned release in its own venv at the repository's root (made once,
then reused; it cannot share the project's venv, since it needs another Pillow), started on a free
loopback port with a throwaway data folder, and a small client of its REST API (legacy token auth)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import REPO
from tests.support.processes import free_port, stop_process

VERSION = "1.23.2"
VENV = REPO / ".venv-labelstudio"
INSTALL_TIMEOUT_S = 1800
START_TIMEOUT_S = 300
USER, PASSWORD, TOKEN = "reviewer@example.com", "not-a-real-password-1", "0123456789abcdef0123456789abcdef01234567"


def label_studio_executable() -> Path:
    """VENV/bin/label-studio, installing label-studio==VERSION from the package index the first time."""
    executable, done = VENV / "bin" / "label-studio", VENV / f".installed-{VERSION}"
    with open(REPO / ".venv-labelstudio.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test sessions never install at once
        if not done.is_file():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True, timeout=300)
            subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet",
                            "--disable-pip-version-check", f"label-studio=={VERSION}"], check=True,
                           timeout=INSTALL_TIMEOUT_S)
            done.touch()
    return executable


class LabelStudio:
    """`with LabelStudio(folder, document_root) as ls:` ... `ls.api` (an httpx.Client with the token)."""

    def __init__(self, executable: Path, folder: Path, document_root: Path) -> None:
        self.executable, self.folder, self.document_root = executable, Path(folder), Path(document_root)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.folder / "label-studio.log"
        self.process: subprocess.Popen | None = None
        self.api = httpx.Client(base_url=self.url, headers={"Authorization": f"Token {TOKEN}"}, timeout=120)

    def start(self) -> LabelStudio:
        self.folder.mkdir(parents=True, exist_ok=True)
        env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "VIRTUAL_ENV"))}
        env |= {"LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
                "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(self.document_root),
                "ML_BLOCK_LOCAL_IP": "false",  # the ML backend is on this machine's loopback address
                "SSRF_PROTECTION_ENABLED": "false",  # and so is the webhook Label Studio makes for it
                "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
                "HOME": str(self.folder)}
        command = [str(self.executable), "start", "--no-browser", "--data-dir", str(self.folder / "data"),
                   "--internal-host", "127.0.0.1", "--port", str(self.port), "--host", self.url,
                   "--username", USER, "--password", PASSWORD, "--user-token", TOKEN, "--enable-legacy-api-token"]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=self.folder, env=env)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Label Studio exited with {self.process.returncode}:\n{self.log_text()[-3000:]}")
            try:
                if self.api.get("/api/projects", timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(1)
        raise TimeoutError(f"Label Studio did not start in {START_TIMEOUT_S} s:\n{self.log_text()[-3000:]}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.is_file() else ""

    def call(self, method: str, path: str, **kwargs) -> dict | list:
        response = self.api.request(method, path, **kwargs)
        assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text[:2000]}"
        return response.json() if response.content else {}

    def project(self, title: str, label_config: str) -> int:
        return self.call("POST", "/api/projects", json={"title": title, "label_config": label_config})["id"]

    def local_storage(self, project: int, path: Path, files: bool, sync: bool) -> int:
        """A local-files source storage; `files`: each file a task (Label Studio's import method "Files")."""
        storage = self.call("POST", "/api/storages/localfiles", json={
            "project": project, "path": str(path), "title": path.name, "use_blob_urls": files,
            "regex_filter": r".*\.png$" if files else ""})["id"]
        if sync:
            self.call("POST", f"/api/storages/localfiles/{storage}/sync")
        return storage

    def tasks(self, project: int) -> list[dict]:
        return self.call("GET", "/api/tasks", params={"project": project, "page_size": 1000,
                                                      "resolve_uri": "false"})["tasks"]

    def predictions(self, task: int) -> list[dict]:
        return self.call("GET", "/api/predictions/", params={"task": task})

    def export(self, project: int) -> list[dict]:
        return self.call("GET", f"/api/projects/{project}/export", params={"exportType": "JSON"})

    def stop(self) -> None:
        self.api.close()
        stop_process(self.process)

    def __enter__(self) -> LabelStudio:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
