"""Cross-validation's steps stood in for: each call recorded, each leaving the file the next step or the
skip check looks for."""

from __future__ import annotations

import csv
from pathlib import Path

from chestdet.detection.inputs import list_inputs
from chestdet.evaluation.crossval import Steps
from chestdet.export.options import ExportOptions
from chestdet.training.train import TrainOptions


class FakeSteps:
    """Records every call; train writes best.json, export export.json, detect images.csv of its list."""

    def __init__(self, fail: dict[tuple[str, int], BaseException] | None = None) -> None:
        self.calls: list[tuple[str, object]] = []
        self.fail = dict(fail or {})

    def _maybe_fail(self, step: str, argument: object) -> None:
        self.calls.append((step, argument))
        fold = sum(1 for name, _ in self.calls if name == step)
        outcome = self.fail.pop((step, fold), None)
        if outcome is not None:
            raise outcome

    def train(self, options: TrainOptions) -> None:
        self._maybe_fail("train", options)
        options.model_dir.mkdir(parents=True, exist_ok=True)
        (options.model_dir / "best.json").write_text("{}")

    def export(self, options: ExportOptions) -> Path:
        self._maybe_fail("export", options)
        options.output_dir.mkdir(parents=True)
        (options.output_dir / "export.json").write_text("{}")
        return options.output_dir

    def detect(self, model: Path, images: Path, output_dir: Path, detect_args: tuple[str, ...]) -> None:
        self._maybe_fail("detect", (model, images, output_dir, detect_args))
        output_dir.mkdir(parents=True, exist_ok=True)
        with (output_dir / "images.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image", "path", "width", "height", "detections"])
            writer.writerows([image.name, str(image.path), 1024, 1024, 0] for image in list_inputs(str(images)))

    def steps(self) -> Steps:
        return Steps(detect=self.detect, train=self.train, export=self.export)

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]
