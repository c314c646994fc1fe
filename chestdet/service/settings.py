"""What one server runs with: the export, its thresholds, the feedback folder, the limits and the token."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from chestdet.core.imaging import MAX_PIXELS

MEGABYTE = 1 << 20


@dataclass(frozen=True)
class Settings:
    model: Path  # an export directory of export.py
    feedback_dir: Path
    operating_points: Path | None = None  # evaluate's operating_points.json (on a validation split)
    operating_point: str | None = None  # its point the page and Label Studio start from
    token: str | None = None  # when set, the API and the Label Studio routes want it
    backend: str = "auto"
    min_score: float = 0.3  # a class without an operating point is shown from this score
    floor_score: float = 0.05  # /api/v1/detect returns every box down to this score
    max_boxes: int = 100  # boxes per image shown, and sent to Label Studio
    max_body_bytes: int = 50 * MEGABYTE
    max_pixels: int = MAX_PIXELS  # the same limit as detect's
    max_batch: int = 8  # images per backend call
    batch_wait_ms: float = 5.0  # how long a batch waits for more requests after its first
    max_queue: int = 32  # requests being read, decoded or waiting for the model; more get 503
    interpreters: int | None = None  # TFLite interpreters side by side (default: one per CPU)
    explain: bool = True  # build the Grad-CAM explainer beside the detector
    label_studio_url: str | None = None  # where Label Studio serves task images, instead of what /setup says
    retry_after_s: int = 1  # Retry-After of a 503 when the queue is full

    @property
    def batch_wait_s(self) -> float:
        return self.batch_wait_ms / 1000.0
