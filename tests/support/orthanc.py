"""A real Orthanc PACS for tests: Debian's `Orthanc` run from a config written into a temporary folder,
on free loopback ports, with the DICOMweb plugin and a Lua script routing chest films to the node.

Orthanc 1.10 has no listen-address option: its HTTP server refuses remote clients
(RemoteAccessAllowed false) and its DICOM server stores only from the two AEs declared here, on
127.0.0.1 (the node and the test's modality).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import requests

from tests.support.processes import free_port, stop_process

ORTHANC_AET = "ORTHANC"
NODE_AET = "CHESTDET"
MODALITY_AET = "MODALITY"
PLUGINS = Path("/usr/share/orthanc/plugins")

ROUTING_LUA = """\
-- Route chest films (CR, DX) to the AI node; never its results (SR, PR) nor anything it sent,
-- or results would loop back to it.
function OnStoredInstance(instanceId, tags, metadata, origin)
  if origin["RequestOrigin"] == "DicomProtocol" and origin["RemoteAet"] == "%(node)s" then
    return
  end
  local modality = tags["Modality"]
  if modality == "SR" or modality == "PR" then
    return
  end
  if modality == "CR" or modality == "DX" then
    SendToModality(instanceId, "chestdet")
  end
end
"""


def orthanc_binary() -> str:
    found = shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin:/usr/bin:/usr/local/bin")
    if found is None:
        raise RuntimeError("Orthanc is not installed (apt-get install orthanc orthanc-dicomweb)")
    return found


class Orthanc:
    """One Orthanc in `folder`; `node_port` is where the Lua script sends chest films (AE CHESTDET)."""

    def __init__(self, folder: Path, node_port: int) -> None:
        self.folder, self.node_port = Path(folder), node_port
        self.http_port, self.dicom_port = free_port(), free_port()
        self.process: subprocess.Popen | None = None
        self.log = self.folder / "orthanc.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def address(self) -> str:
        """Where the node sends results: AE@HOST:PORT."""
        return f"{ORTHANC_AET}@127.0.0.1:{self.dicom_port}"

    def write_config(self) -> Path:
        config = self.folder / "config"
        config.mkdir(parents=True, exist_ok=True)
        (config / "route.lua").write_text(ROUTING_LUA % {"node": NODE_AET})
        settings = {
            "Name": "chestdet test PACS", "StorageDirectory": str(self.folder / "db"),
            "IndexDirectory": str(self.folder / "db"), "HttpPort": self.http_port, "DicomPort": self.dicom_port,
            "DicomAet": ORTHANC_AET, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "DicomAlwaysAllowStore": False, "DicomAlwaysAllowEcho": False, "DicomCheckModalityHost": True,
            "DicomModalities": {"chestdet": [NODE_AET, "127.0.0.1", self.node_port],
                                "modality": [MODALITY_AET, "127.0.0.1", free_port()]},
            "LuaScripts": [str(config / "route.lua")],
            "Plugins": [str(PLUGINS / "libOrthancDicomWeb.so")],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "OverwriteInstances": True, "DicomScuTimeout": 10, "SaveJobs": False, "StorageCompression": False,
            "ConcurrentJobs": 1, "HttpThreadsCount": 8,
        }
        (config / "orthanc.json").write_text(json.dumps(settings, indent=2))
        return config

    def start(self, timeout: float = 60) -> Orthanc:
        config = self.write_config()
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([orthanc_binary(), f"{config}{os.sep}"], stdout=log,
                                            stderr=subprocess.STDOUT, cwd=self.folder)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if requests.get(f"{self.url}/system", timeout=2).ok:
                    return self
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc did not answer within {timeout} s: {self.log.read_text()[-2000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None

    # ---------------------------------------------------------------- what it holds

    def get(self, path: str) -> object:
        answer = requests.get(f"{self.url}{path}", timeout=30)
        answer.raise_for_status()
        return answer.json()

    def post(self, path: str, body: object) -> object:
        answer = requests.post(f"{self.url}{path}", json=body, timeout=60)
        answer.raise_for_status()
        return answer.json()

    def find(self, study: str | None = None, modality: str | None = None) -> list[dict]:
        """Instances (expanded: their main tags and Orthanc ids), of a study and modality when given."""
        query = {key: value for key, value in (("StudyInstanceUID", study), ("Modality", modality)) if value}
        return self.post("/tools/find", {"Level": "Instance", "Query": query, "Expand": True})

    def sop_uids(self, study: str | None = None, modality: str | None = None) -> list[str]:
        return [i["MainDicomTags"]["SOPInstanceUID"] for i in self.find(study, modality)]

    def route_again(self, orthanc_ids: list[str]) -> None:
        """Send instances to the node again, as an administrator re-routes a study."""
        self.post("/modalities/chestdet/store", {"Resources": orthanc_ids, "Synchronous": True})
