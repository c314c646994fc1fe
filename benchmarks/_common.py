"""What every benchmark script starts with: the repository on sys.path, and where the NIH data is."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The full NIH dev copy beside the repository (CHESTDET_NIH_DIR overrides), and the bundled sample.
NIH_DIR = Path(os.environ.get("CHESTDET_NIH_DIR", REPO.parent / "shared" / "data" / "nih"))
SAMPLE_NIH_DIR = REPO / "workspace" / "sample" / "nih"
