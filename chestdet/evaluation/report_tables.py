"""The report's tables as rows of text, shared by the one-screen summary, report.md and report.html,
and their Markdown and plain-text forms."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from chestdet.evaluation.baseline import FRACTION, OVERALL, Baseline
from chestdet.evaluation.metrics import Metrics
from chestdet.evaluation.paper import PAPER_TABLE4, paper_columns


def number(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


INTERVAL_DIGITS = 2


def with_interval(value: float | None, bounds: Sequence[float] | None) -> str:
    """`0.42 [0.31, 0.55]`: the estimate and its bootstrap interval (`–` where either is undefined)."""
    if value is None:
        return "–"
    text = number(value, INTERVAL_DIGITS)
    if bounds is None:
        return f"{text} [–]"
    low, high = bounds
    return f"{text} [{number(low, INTERVAL_DIGITS)}, {number(high, INTERVAL_DIGITS)}]"


class _Cells:
    """Formats a figure with its interval when the metrics carry a bootstrap, alone otherwise."""

    def __init__(self, metrics: Metrics) -> None:
        self.intervals = metrics.bootstrap.to_dict() if metrics.bootstrap is not None else None

    def __call__(self, value: float | None, *path: str | int) -> str:
        if self.intervals is None:
            return number(value)
        bounds = self.intervals
        for key in path:
            bounds = bounds[key] if bounds is not None else None
        return with_interval(value, bounds)


def rate_text(rate: float) -> str:
    return f"{rate:g}"


def per_class_rows(metrics: Metrics, baseline: Baseline | None = None) -> tuple[list[str], list[list[str]]]:
    """A row per class and "all"; with a baseline, its AP@0.5 beside the model's and whether the model beats it."""
    one_fp = _rate_index(metrics.froc.fp_rates, 1.0)
    header = ["class", "boxes", "AP@[.5:.95]", "AP@0.5", "AP@0.25", "FROC", "sens@1FP/img",
              "img sens", "img spec"]
    cell = _Cells(metrics)
    rows = []
    for name in metrics.settings.classes:
        ap, curve, level = metrics.coco.per_class[name], metrics.froc.per_class[name], metrics.image_level[name]
        coco, froc = ("coco", "per_class", name), ("froc", "per_class", name)
        rows.append([
            name, str(metrics.boxes[name]), cell(ap.ap, *coco, "ap"), cell(ap.ap50, *coco, "ap50"),
            cell(ap.ap25, *coco, "ap25"), cell(curve.score, *froc, "score"),
            cell(curve.at_rates[one_fp], *froc, "sensitivity", one_fp) if one_fp is not None else "–",
            cell(level.sensitivity, "image_level", name, "sensitivity"),
            cell(level.specificity, "image_level", name, "specificity"),
        ])
    overall, curve = metrics.coco.overall, metrics.froc.overall
    rows.append([
        "all", str(sum(metrics.boxes.values())), cell(overall.ap, "coco", "overall", "ap"),
        cell(overall.ap50, "coco", "overall", "ap50"), cell(overall.ap25, "coco", "overall", "ap25"),
        cell(curve.score, "froc", "overall", "score"),
        cell(curve.at_rates[one_fp], "froc", "overall", "sensitivity", one_fp) if one_fp is not None else "–", "", "",
    ])
    return (header, rows) if baseline is None else with_baseline(header, rows, metrics, baseline)


def with_baseline(header: list[str], rows: list[list[str]], metrics: Metrics,
                  baseline: Baseline) -> tuple[list[str], list[list[str]]]:
    """The per-class table with the baseline's AP@0.5 after the model's, and a last column saying plainly
    whether the model beats it."""
    beaten = baseline.beaten(metrics)
    at = header.index("AP@0.5") + 1
    scores = {name: baseline.metrics.coco.per_class[name].ap50 for name in metrics.settings.classes}
    scores[OVERALL] = baseline.metrics.coco.overall.ap50
    table = [[*row[:at], number(scores[row[0]]), *row[at:], verdict(beaten[row[0]])] for row in rows]
    return [*header[:at], "AP@0.5 baseline", *header[at:], "beats baseline"], table


def verdict(beaten: bool | None) -> str:
    """yes, NO (bold in Markdown), or – where the class has no box."""
    return "–" if beaten is None else ("yes" if beaten else "**NO**")


def not_beaten(metrics: Metrics, baseline: Baseline) -> list[str]:
    """The classes (and "all") whose AP@0.5 is not above the baseline's."""
    return [name for name, beaten in baseline.beaten(metrics).items() if beaten is False]


def baseline_rows(baseline: Baseline, metrics: Metrics) -> tuple[list[str], list[list[str]]]:
    """Per class the baseline's median box, its score and training boxes, its AP@0.5 beside the model's."""
    beaten = baseline.beaten(metrics)
    unit = "fractions of the image" if baseline.unit == FRACTION else "pixels"
    header = ["class", f"median box x0, y0, x1, y1 ({unit})", "score (frequency)", "training boxes",
              "AP@0.5 baseline", "AP@0.5 model", "beats baseline"]
    digits = "{:.3f}" if baseline.unit == FRACTION else "{:.0f}"
    ours, theirs = metrics.coco, baseline.metrics.coco
    rows = []
    for name, prior in baseline.priors.items():
        box = ", ".join(digits.format(v) for v in prior.box) if prior.box else "none"
        rows.append([name, box, f"{prior.score:.3f}", str(prior.boxes), number(theirs.per_class[name].ap50),
                     number(ours.per_class[name].ap50), verdict(beaten[name])])
    rows.append([OVERALL, "", "", str(sum(p.boxes for p in baseline.priors.values())), number(theirs.overall.ap50),
                 number(ours.overall.ap50), verdict(beaten[OVERALL])])
    return header, rows


def _rate_index(rates: Sequence[float], wanted: float) -> int | None:
    matches = [k for k, rate in enumerate(rates) if rate == wanted]
    return matches[0] if matches else None


def froc_rows(metrics: Metrics) -> tuple[list[str], list[list[str]]]:
    header = ["class", *(f"{rate_text(r)} FP/img" for r in metrics.froc.fp_rates), "mean"]
    cell = _Cells(metrics)
    rows = []
    for name, curve in [*metrics.froc.per_class.items(), ("all", metrics.froc.overall)]:
        path = ("froc", "overall") if name == "all" else ("froc", "per_class", name)
        rows.append([name, *(cell(v, *path, "sensitivity", k) for k, v in enumerate(curve.at_rates)),
                     cell(curve.score, *path, "score")])
    return header, rows


def iobb_rows(metrics: Metrics) -> tuple[list[str], list[list[str]]]:
    """Ours beside Wang et al. Table 4, per T(IoBB), for the evaluated classes the paper has (no row when none)."""
    columns = paper_columns(metrics.settings.classes)
    header = ["T(IoBB)", "", *columns]
    rows = []
    for t, threshold in enumerate(metrics.iobb.thresholds if columns else ()):
        paper = PAPER_TABLE4.get(threshold)
        row = [metrics.iobb.per_class[name] for name in columns]
        rows.append([rate_text(threshold), "Acc. (this model)", *(number(r.accuracy[t], 4) for r in row)])
        if paper:
            rows.append(["", "Acc. (Wang et al.)", *(f"{paper['accuracy'][k]:.4f}" for k in columns.values())])
        rows.append(["", "AFP (this model)", *(number(r.afp[t], 4) for r in row)])
        if paper:
            rows.append(["", "AFP (Wang et al.)", *(f"{paper['afp'][k]:.4f}" for k in columns.values())])
        rows.append(["", "FP per evaluated image (not AFP)", *(number(r.fp_per_image[t], 4) for r in row)])
    return header, rows


def image_level_rows(metrics: Metrics) -> tuple[list[str], list[list[str]]]:
    header = ["class", "TP", "FP", "TN", "FN", "ignored", "sensitivity", "specificity"]
    cell = _Cells(metrics)
    rows = [
        [name, str(v.true_positives), str(v.false_positives), str(v.true_negatives), str(v.false_negatives),
         str(v.ignored), cell(v.sensitivity, "image_level", name, "sensitivity"),
         cell(v.specificity, "image_level", name, "specificity")]
        for name, v in metrics.image_level.items()
    ]
    return header, rows


def confusion_rows(metrics: Metrics) -> tuple[list[str], list[list[str]]]:
    labels = metrics.confusion.labels
    header = ["truth \\ predicted", *labels]
    rows = [[label, *(str(int(v)) for v in row)] for label, row in zip(labels, metrics.confusion.matrix, strict=True)]
    return header, rows


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    align = ["---"] + ["---:"] * (len(header) - 1)
    return "\n".join([line(header), "| " + " | ".join(align) + " |", *(line(row) for row in rows)])


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        return "  ".join([first.ljust(widths[0]), *(c.rjust(w) for c, w in zip(rest, widths[1:], strict=True))])

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *(line(row) for row in rows)])
