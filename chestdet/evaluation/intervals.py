"""Bootstrap intervals as metrics.json carries them: the record, and the percentile interval of one
figure's replicates (chestdet.evaluation.bootstrap computes the replicates)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
BOOTSTRAP_UNIT = "patient"
Interval = list[float] | None  # [low, high]; None where no replicate defines the figure


@dataclass
class BootstrapResult:
    replicates: int
    seed: int
    level: float
    patients: int  # distinct patients resampled (the report says it; metrics.json has the images)
    coco: dict  # mirrors metrics.json's "coco" block with [low, high] for each figure
    froc: dict
    image_level: dict

    def to_dict(self) -> dict:
        """metrics.json's "bootstrap" block."""
        return {
            "replicates": self.replicates,
            "seed": self.seed,
            "level": self.level,
            "unit": BOOTSTRAP_UNIT,
            "coco": self.coco,
            "froc": self.froc,
            "image_level": self.image_level,
        }


def interval(values: np.ndarray, level: float = LEVEL) -> Interval:
    """Percentile interval of one figure's replicates (NaN where a replicate leaves it undefined)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not values.size:
        return None
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return [float(low), float(high)]
