"""The evaluation stage: read detections and ground truth, decide which images count, compute, write.

`evaluate_detections` is the library entry point (for training's checkpoint choice, for instance);
`run_evaluation` adds the files: it reads a detections folder (detection_set), NIH CSV / labelImg
XML / TFRecord ground truth (ground_truth) and an optional split (selection), puts the trivial
baseline beside the model (baseline), and writes metrics.json, report.md, report.html,
operating_points.json, plots, the error gallery and rejects.csv. Images are matched by file name, so
`sub/00000001_000.png` in detections.csv meets `00000001_000.png` in BBox_List_2017.csv.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from chestdet.core.contracts import METRICS_JSON, OPERATING_POINTS_JSON, REJECTS_CSV, REPORT_HTML, REPORT_MD
from chestdet.core.errors import EvaluationError
from chestdet.core.labels import LabelMap
from chestdet.core.rejects import write_rejects
from chestdet.data.annotations import Box
from chestdet.data.split import TEST
from chestdet.detection.thresholds import OperatingPoints, write_operating_points
from chestdet.evaluation import bootstrap, gallery, report
from chestdet.evaluation.baseline import Baseline, build_baseline, training_images, training_source
from chestdet.evaluation.boxes import image_key
from chestdet.evaluation.detection_set import detections_frame
from chestdet.evaluation.ground_truth import ground_truth_frame, ground_truth_labels
from chestdet.evaluation.intervals import BootstrapResult
from chestdet.evaluation.metrics import EvaluationSettings, Metrics, compute_metrics, write_metrics_json
from chestdet.evaluation.operating_points import operating_points, with_intervals
from chestdet.evaluation.plots import PLOT_FILES, write_plots
from chestdet.evaluation.selection import EvaluationInputs, image_patients, prepare_inputs

log = logging.getLogger("chestdet.evaluation.evaluate")

OUTPUT_FILES = (METRICS_JSON, REPORT_MD, REPORT_HTML, OPERATING_POINTS_JSON, *PLOT_FILES)


def evaluate_detections(
    detections: pd.DataFrame,
    ground_truth: Sequence[Box],
    images: Iterable[str] | None = None,
    settings: EvaluationSettings | None = None,
) -> Metrics:
    """Score detections (detections.csv's columns) against ground-truth Boxes, of the settings' classes.

    `images` names every image detection ran on (paths or file names), so images without
    detections and without boxes count; boxes of other images are left out. Without it, the images
    named by the detections or the boxes are evaluated.
    """
    settings = settings or EvaluationSettings()
    labels = LabelMap(settings.classes)
    table, rejects = detections_frame(detections.astype(object), "detections", labels)
    if rejects:
        raise ValueError(f"unusable detections: {rejects[0].location}: {rejects[0].reason} ({len(rejects)} rows)")
    gt = ground_truth_frame(ground_truth)
    if images is None:
        keys = sorted(set(table["image"]) | set(gt["image"]))
    else:
        keys = list(dict.fromkeys(image_key(name) for name in images))
    metrics = compute_metrics(gt[gt["image"].isin(keys)], table[table["image"].isin(keys)], keys, settings)
    left_out = gt[~gt["image"].isin(keys)]
    if len(left_out):
        metrics.notes.append(f"{len(left_out)} ground-truth boxes on images not evaluated were left out")
    return metrics


def with_classes(settings: EvaluationSettings | None, labels: LabelMap) -> EvaluationSettings:
    """`settings` (or the defaults) for the classes of `labels`."""
    try:
        return replace(settings or EvaluationSettings(), classes=labels.names)
    except ValueError as error:
        raise EvaluationError(f"{labels.source or 'label map'}: {error}") from None


@dataclass
class EvaluationRun:
    metrics: Metrics
    inputs: EvaluationInputs
    output_dir: Path
    files: list[Path]
    baseline: Baseline | None = None
    operating_points: OperatingPoints | None = None


@dataclass(frozen=True)
class ReportOptions:
    """What run_evaluation adds beyond the metrics: the baseline, plots, bootstrap intervals, the error gallery."""

    plots: bool = True
    bootstrap: int = 0  # replicates; 0: no intervals
    seed: int = 0
    gallery: int = gallery.DEFAULT_PER_CLASS  # cases per class and kind; 0: no gallery
    image_dir: Path | None = None  # where the gallery finds the images (else images.csv's paths)
    baseline: bool = True  # the trivial baseline beside the model, when there are training images to take it from
    baseline_from: Path | None = None  # its boxes from this ground truth (else the split's train rows' boxes)


def run_evaluation(
    detections_path: str | Path,
    ground_truth_spec: str | Path,
    output_dir: str | Path,
    split_file: str | Path | None = None,
    split: str = TEST,
    settings: EvaluationSettings | None = None,
    plots: bool = True,
    options: ReportOptions | None = None,
    labels: LabelMap | None = None,
) -> EvaluationRun:
    """Evaluate and write metrics.json, report.md, report.html, operating_points.json, the plots, the
    error gallery and rejects.csv; `options` (if given) overrides `plots`. The classes are those of `labels`,
    by default the ground-truth records' own map, else the shipped one."""
    options = options or ReportOptions(plots=plots, gallery=0)
    output_dir = Path(output_dir)
    labels = ground_truth_labels(ground_truth_spec, labels)
    settings = with_classes(settings, labels)
    inputs = prepare_inputs(detections_path, ground_truth_spec, split_file, split, labels)
    for note in inputs.notes:
        log.info("%s", note)
    if inputs.rejects:
        log.warning("%d input rows rejected; see %s", len(inputs.rejects), output_dir / REJECTS_CSV)
    metrics = compute_metrics(inputs.ground_truth, inputs.detections, inputs.images, settings)
    metrics.notes.extend(inputs.notes)
    prior = _baseline(metrics, inputs, ground_truth_spec, options) if options.baseline else None
    points = operating_points(metrics, split if split_file is not None else "", inputs.sources)
    if options.bootstrap:
        metrics.bootstrap, points = _bootstrap(metrics, inputs, options, points)
    output_dir.mkdir(parents=True, exist_ok=True)
    document = {"sources": inputs.sources, "rejects": len(inputs.rejects), **metrics.to_dict()}
    if prior is not None:
        document["baseline"] = prior.to_dict(metrics)
    files = [write_metrics_json(output_dir / METRICS_JSON, document)]
    if options.plots:
        files += write_plots(metrics, output_dir)
    pictures = _gallery(metrics, inputs, output_dir, options)
    files += [path for kinds in pictures.values() for paths in kinds.values() for path in paths]
    files += report.write_reports(metrics, output_dir, inputs.sources, len(inputs.rejects), plots=options.plots,
                                  gallery=pictures, baseline=prior)
    files.append(write_operating_points(output_dir / OPERATING_POINTS_JSON, points))
    files.append(write_rejects(inputs.rejects, output_dir / REJECTS_CSV))
    return EvaluationRun(metrics=metrics, inputs=inputs, output_dir=output_dir, files=files, baseline=prior,
                         operating_points=points)


def _baseline(metrics: Metrics, inputs: EvaluationInputs, ground_truth_spec: str | Path,
              options: ReportOptions) -> Baseline | None:
    """The trivial baseline on the evaluated images, or None (a note says why when a split was given)."""
    explicit = options.baseline_from is not None
    try:
        source = training_source(ground_truth_spec, inputs.truth, options.baseline_from, inputs.labels)
    except EvaluationError as error:
        if explicit:
            raise
        metrics.notes.append(f"no baseline: its training boxes cannot be read ({error})")
        return None
    train = training_images(inputs.split_rows, source, explicit)
    if not train:
        if inputs.split_rows is not None:
            metrics.notes.append("no baseline: the split has no train rows (pass --baseline-from)")
        return None
    sizes = {**{image_key(image): size for image, size in inputs.truth.sizes.items()}, **inputs.sizes}
    prior = build_baseline(inputs.ground_truth, inputs.images, sizes, source, train, metrics.settings)
    if prior is None:
        metrics.notes.append(f"no baseline: none of its {len(train)} training images has a box")
        return None
    metrics.notes.extend(prior.notes)
    log.info("baseline: median boxes of %d training images (%s)", prior.images, prior.source)
    return prior


def _bootstrap(metrics: Metrics, inputs: EvaluationInputs, options: ReportOptions,
               points: OperatingPoints) -> tuple[BootstrapResult, OperatingPoints]:
    """The metrics' intervals, and the operating points' at their thresholds, from the same patient draws."""
    patients, note = image_patients(inputs.images, inputs.split_rows)
    if note:
        metrics.notes.append(note)
    log.info("bootstrap: %d replicates over %d patients (seed %d)", options.bootstrap, len(set(patients)),
             options.seed)
    result = bootstrap.bootstrap_metrics(metrics, inputs.ground_truth, inputs.detections, inputs.images, patients,
                                         options.bootstrap, options.seed)
    return result, with_intervals(points, inputs.ground_truth, inputs.detections, inputs.images, patients,
                                  options.bootstrap, options.seed, metrics.settings.hit_iou)


def _gallery(metrics: Metrics, inputs: EvaluationInputs, output_dir: Path,
             options: ReportOptions) -> dict[str, dict[str, list[Path]]]:
    gallery.clear_gallery(output_dir)
    if not options.gallery:
        return {}
    finder = image_finder(inputs.image_paths, options.image_dir, Path(inputs.sources["detections"]).parent)
    written, notes = gallery.write_gallery(inputs.ground_truth, inputs.detections, metrics.settings, output_dir,
                                           finder, options.gallery)
    for note in notes:
        log.warning("%s", note)
    metrics.notes.extend(notes)
    return written


def image_finder(paths: dict[str, list[str]], image_dir: Path | None,
                 detections_dir: Path) -> Callable[[str], Path | None]:
    """key -> the image file: under --image-dir by its images.csv name or file name, else images.csv's
    path as written (absolute, or relative to the working folder or to the detections folder)."""

    def find(key: str) -> Path | None:
        name, path = paths.get(key, [key, ""])
        candidates = [image_dir / name, image_dir / key] if image_dir is not None else []
        if path:
            candidates += [Path(path), detections_dir / path]
        return next((candidate for candidate in candidates if candidate.is_file()), None)

    return find
