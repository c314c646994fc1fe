"""Turn Metrics into what people read: plots (PNG), report.md, report.html and a one-screen summary.

Holds the published ChestX-ray8 Table 4 figures, so a report can put a model beside the paper.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from chestdet.core import atomic
from chestdet.core.labels import CLASS_NAMES
from chestdet.evaluation.gallery import FALSE_POSITIVE_KIND, MISSED_KIND
from chestdet.evaluation.metrics import Metrics

# Wang X, Peng Y, Lu L, Lu Z, Bagheri M, Summers RM. "ChestX-ray8: Hospital-scale Chest X-ray
# Database and Benchmarks on Weakly-Supervised Classification and Localization of Common Thorax
# Diseases." CVPR 2017, pp. 3462-3471, Table 4 ("Pathology localization accuracy and average false
# positive number for 8 disease classes"); the same figures are Table 4 of arXiv:1705.02315.
# Their weakly supervised ResNet-50 heatmap boxes on the 984 NIH boxes. Columns in CLASS_NAMES
# order (the paper writes "Infiltration" for Infiltrate).
PAPER_CITATION = (
    "Wang X, Peng Y, Lu L, Lu Z, Bagheri M, Summers RM. ChestX-ray8: Hospital-scale Chest X-ray "
    "Database and Benchmarks on Weakly-Supervised Classification and Localization of Common Thorax "
    "Diseases. IEEE CVPR 2017, pp. 3462-3471, Table 4."
)
PAPER_TABLE4: dict[float, dict[str, tuple[float, ...]]] = {
    0.1: {
        "accuracy": (0.7277, 0.9931, 0.7124, 0.7886, 0.4352, 0.1645, 0.7500, 0.4591),
        "afp": (0.8323, 0.3506, 0.7998, 0.5589, 0.6423, 0.6047, 0.9055, 0.4776),
    },
    0.25: {
        "accuracy": (0.5500, 0.9794, 0.5424, 0.5772, 0.2823, 0.0506, 0.5583, 0.3469),
        "afp": (0.9167, 0.4553, 0.8598, 0.6077, 0.6707, 0.6158, 0.9614, 0.5000),
    },
    0.5: {
        "accuracy": (0.2833, 0.8767, 0.3333, 0.4227, 0.1411, 0.0126, 0.3833, 0.1836),
        "afp": (1.0203, 0.5630, 0.9268, 0.6585, 0.6941, 0.6189, 1.0132, 0.5285),
    },
    0.75: {
        "accuracy": (0.1666, 0.7260, 0.2418, 0.3252, 0.1176, 0.0126, 0.2583, 0.1020),
        "afp": (1.0619, 0.6616, 0.9603, 0.6921, 0.7043, 0.6199, 1.0569, 0.5396),
    },
    0.9: {
        "accuracy": (0.1333, 0.6849, 0.2091, 0.2520, 0.0588, 0.0126, 0.2416, 0.0816),
        "afp": (1.0752, 0.7226, 0.9797, 0.7124, 0.7144, 0.6199, 1.0732, 0.5437),
    },
}

PLOT_FILES = ("pr_curves.png", "froc.png", "confusion_matrix.png")


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


def _rate(rate: float) -> str:
    return f"{rate:g}"


# ---------------------------------------------------------------------------------------------
# Tables shared by the summary, Markdown and HTML


def per_class_rows(metrics: Metrics) -> tuple[list[str], list[list[str]]]:
    one_fp = _rate_index(metrics.froc.fp_rates, 1.0)
    header = ["class", "boxes", "AP@[.5:.95]", "AP@0.5", "AP@0.25", "FROC", "sens@1FP/img",
              "img sens", "img spec"]
    cell = _Cells(metrics)
    rows = []
    for name in CLASS_NAMES:
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
    return header, rows


def _rate_index(rates: Sequence[float], wanted: float) -> int | None:
    matches = [k for k, rate in enumerate(rates) if rate == wanted]
    return matches[0] if matches else None


def froc_rows(metrics: Metrics) -> tuple[list[str], list[list[str]]]:
    header = ["class", *(f"{_rate(r)} FP/img" for r in metrics.froc.fp_rates), "mean"]
    cell = _Cells(metrics)
    rows = []
    for name, curve in [*metrics.froc.per_class.items(), ("all", metrics.froc.overall)]:
        path = ("froc", "overall") if name == "all" else ("froc", "per_class", name)
        rows.append([name, *(cell(v, *path, "sensitivity", k) for k, v in enumerate(curve.at_rates)),
                     cell(curve.score, *path, "score")])
    return header, rows


def iobb_rows(metrics: Metrics) -> tuple[list[str], list[list[str]]]:
    """Ours beside Wang et al. Table 4, per T(IoBB)."""
    header = ["T(IoBB)", "", *CLASS_NAMES]
    rows = []
    for t, threshold in enumerate(metrics.iobb.thresholds):
        paper = PAPER_TABLE4.get(threshold)
        row = [metrics.iobb.per_class[name] for name in CLASS_NAMES]
        rows.append([_rate(threshold), "Acc. (this model)", *(number(r.accuracy[t], 4) for r in row)])
        if paper:
            rows.append(["", "Acc. (Wang et al.)", *(f"{v:.4f}" for v in paper["accuracy"])])
        rows.append(["", "AFP (this model)", *(number(r.afp[t], 4) for r in row)])
        if paper:
            rows.append(["", "AFP (Wang et al.)", *(f"{v:.4f}" for v in paper["afp"])])
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


def summary_text(metrics: Metrics) -> str:
    """The one-screen summary the CLI ends with."""
    s = metrics.settings
    header, rows = per_class_rows(metrics)
    ignored = sum(metrics.ignored.values())
    return "\n".join([
        f"{metrics.images} images ({metrics.images_with_boxes} with boxes), {sum(metrics.boxes.values())} boxes"
        + (f" ({ignored} difficult ones ignored)" if ignored else "")
        + f", {metrics.detections} detections; image-level at score > {s.score_threshold:g}, FROC hit at IoU >= "
        f"{s.hit_iou:g}" + (f"; {metrics.bootstrap.level:.0%} intervals" if metrics.bootstrap is not None else ""),
        text_table(header, rows),
    ])


# ---------------------------------------------------------------------------------------------
# Markdown and HTML


def render_markdown(
    metrics: Metrics, sources: dict[str, str], rejects: int = 0, plots: bool = True,
    gallery: Mapping[str, Mapping[str, Sequence[Path]]] | None = None, output_dir: Path | None = None,
) -> str:
    parts = [
        *_header(metrics, sources, rejects),
        *_per_class_section(metrics),
        *_iobb_section(metrics),
        *_image_level_section(metrics),
    ]
    if plots:
        parts += [
            "## Plots",
            "",
            "![Precision-recall curves](pr_curves.png)",
            "",
            "![FROC curves](froc.png)",
            "",
            "![Confusion matrix](confusion_matrix.png)",
            "",
        ]
    if gallery:
        parts += gallery_section(gallery, output_dir)
    if metrics.notes:
        parts += ["## Notes", "", *(f"- {note}" for note in metrics.notes), ""]
    return "\n".join(parts)


def _header(metrics: Metrics, sources: dict[str, str], rejects: int) -> list[str]:
    s = metrics.settings
    ignored = {name: count for name, count in metrics.ignored.items() if count}
    lines = [
        "# Detection evaluation",
        "",
        f"- Detections: `{sources.get('detections', '?')}`",
        f"- Ground truth: `{sources.get('ground_truth', '?')}`",
        f"- Split: {sources.get('split', 'none')}",
        f"- Images evaluated: {metrics.images} ({metrics.images_with_boxes} with boxes); boxes: "
        f"{sum(metrics.boxes.values())}; detections: {metrics.detections}; rejected input rows: {rejects}",
        f"- Difficult boxes ignored: {sum(ignored.values())}"
        + (f" ({', '.join(f'{name} {count}' for name, count in ignored.items())})" if ignored else "")
        + " (a detection on one is neither a hit nor a false positive, missing one is no miss)",
        f"- Score threshold (T(IoBB), image level, confusion matrix): score > {s.score_threshold:g}; "
        f"FROC hit: IoU >= {s.hit_iou:g}; confusion-matrix match: IoU >= {s.confusion_iou:g}",
    ]
    if metrics.bootstrap is not None:
        b = metrics.bootstrap
        lines.append(
            f"- Intervals `estimate [low, high]`: {b.level:.0%} bootstrap percentile intervals, {b.replicates} "
            f"replicates resampling the {b.patients} patients with replacement (seed {b.seed})"
        )
    return [*lines, ""]


def _per_class_section(metrics: Metrics) -> list[str]:
    s = metrics.settings
    return [
        "## Per class",
        "",
        "AP from pycocotools COCOeval (area all, 100 detections per image); FROC is the mean sensitivity "
        f"at {', '.join(_rate(r) for r in s.fp_rates)} false positives per image; image sensitivity and "
        "specificity count an image positive for a class when it has a box of it / a detection of it "
        "above the threshold. A dash means the class has no box here.",
        "",
        markdown_table(*per_class_rows(metrics)),
        "",
        "## FROC: sensitivity at false positives per image",
        "",
        markdown_table(*froc_rows(metrics)),
        "",
    ]


def _iobb_section(metrics: Metrics) -> list[str]:
    return [
        "## ChestX-ray8 localisation accuracy (T(IoBB)) beside Wang et al., CVPR 2017, Table 4",
        "",
        "A box is correctly localised when a detection of its class (score above the threshold) covers "
        "it with IoBB > T (intersection over the detected box's area); Acc. is the share of boxes "
        "correctly localised. AFP counts, as the paper does, the detections that localise no box on the "
        "images with boxes, over the annotated image-finding pairs (the paper's 984); the last row is a "
        "different figure, those detections on every evaluated image over the evaluated images. The "
        "paper's figures are for its weakly supervised ResNet-50 heatmap boxes on all 984 NIH boxes, not "
        "a detector on a held-out split: put them beside, not against, these.",
        "",
        markdown_table(*iobb_rows(metrics)),
        "",
        f"Source: {PAPER_CITATION}",
        "",
    ]


def _image_level_section(metrics: Metrics) -> list[str]:
    s = metrics.settings
    return [
        f"## Image level (score > {s.score_threshold:g})",
        "",
        "`ignored`: images whose only boxes of the class are difficult, counted neither positive nor negative.",
        "",
        markdown_table(*image_level_rows(metrics)),
        "",
        f"## Confusion matrix (IoU >= {s.confusion_iou:g}, score > {s.score_threshold:g})",
        "",
        "Rows are the true class, columns the predicted one; `background` collects missed boxes (column) "
        "and detections that match no box (row). Difficult boxes are not counted.",
        "",
        markdown_table(*confusion_rows(metrics)),
        "",
    ]


def gallery_section(gallery: Mapping[str, Mapping[str, Sequence[Path]]], output_dir: Path | None) -> list[str]:
    """Links to the error gallery's pictures, per class and kind."""

    def links(paths: Sequence[Path]) -> str:
        if not paths:
            return "none"
        return " ".join(f"[{k}]({_relative(path, output_dir)})" for k, path in enumerate(paths, start=1))

    rows = [[name, links(kinds.get(FALSE_POSITIVE_KIND, [])), links(kinds.get(MISSED_KIND, []))]
            for name, kinds in gallery.items()]
    return [
        "## Error gallery",
        "",
        "Per class, the highest-scoring false positives (any score) and the largest missed boxes (no "
        "detection above the threshold hits them), drawn with the ground truth dashed (green) and the "
        "detection solid (red); each caption gives the score, the IoU and the image.",
        "",
        markdown_table(["class", "false positives", "missed boxes"], rows),
        "",
    ]


def _relative(path: Path, output_dir: Path | None) -> str:
    if output_dir is not None:
        try:
            return Path(path).relative_to(output_dir).as_posix()
        except ValueError:
            pass
    return Path(path).as_posix()


HTML_STYLE = (
    "body{font-family:sans-serif;max-width:75em;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:.2em .5em}"
    "td{text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}"
)


def render_html(markdown_text: str, title: str = "Detection evaluation") -> str:
    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables"], output_format="html")
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
        f"<style>{HTML_STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def write_reports(
    metrics: Metrics, output_dir: Path, sources: dict[str, str], rejects: int = 0, plots: bool = True,
    gallery: Mapping[str, Mapping[str, Sequence[Path]]] | None = None,
) -> list[Path]:
    text = render_markdown(metrics, sources, rejects, plots, gallery, output_dir)
    atomic.write_text(output_dir / "report.md", text)
    atomic.write_text(output_dir / "report.html", render_html(text))
    return [output_dir / "report.md", output_dir / "report.html"]


# ---------------------------------------------------------------------------------------------
# Plots


def _figure(rows: int = 1, cols: int = 1, size: tuple[float, float] = (8, 6)):  # noqa: ANN202
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=100, layout="constrained")
    return figure, figure.subplots(rows, cols, squeeze=False)


def _save(figure, path: Path) -> Path:  # noqa: ANN001
    with atomic.atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path


def plot_pr_curves(metrics: Metrics, path: Path) -> Path:
    """Interpolated precision against recall per class at IoU 0.5 and 0.25 (COCOeval's arrays)."""
    return _save(pr_figure(metrics), path)


def pr_figure(metrics: Metrics):  # noqa: ANN201
    """The PR figure; one legend for all panels, below them, where it covers no curve."""
    figure, axes = _figure(2, 4, (14, 7.5))
    recall = metrics.coco.recall_thresholds
    for ax, name in zip(axes.flat, CLASS_NAMES, strict=True):
        ap = metrics.coco.per_class[name]
        ax.set_title(f"{name}  AP50 {number(ap.ap50)}", fontsize=10)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.grid(alpha=0.3)
        if ap.ap50 is None:
            ax.text(0.5, 0.5, "no boxes", ha="center", va="center", transform=ax.transAxes)
            continue
        ax.plot(recall, metrics.coco.precision50[name], color="C0", label="IoU 0.5")
        ax.plot(recall, metrics.coco.precision25[name], color="C1", linestyle="--", label="IoU 0.25")
    figure.suptitle("Precision-recall (COCOeval, interpolated)")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="C0", label="IoU 0.5"), Line2D([], [], color="C1", linestyle="--",
                                                                    label="IoU 0.25")]
    figure.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=9)
    return figure


def plot_froc(metrics: Metrics, path: Path) -> Path:
    """Sensitivity against false positives per image, log2 axis over the FROC rates."""
    return _save(froc_figure(metrics), path)


def froc_figure(metrics: Metrics):  # noqa: ANN201
    """The FROC figure; the legend sits outside the axes, right of them, where it covers no curve."""
    figure, axes = _figure(size=(10, 6))
    ax = axes[0, 0]
    rates = metrics.froc.fp_rates
    low, high = min(rates) / 2, max(rates) * 2
    curves = [(name, curve) for name, curve in metrics.froc.per_class.items() if curve.boxes]
    for name, curve in [*curves, ("all classes", metrics.froc.overall)]:
        if not curve.boxes:
            continue
        # the sensitivity reached holds for any larger false-positive budget: extend to the edge
        x = np.clip(np.r_[curve.fps_per_image, high], low, high)
        y = np.r_[curve.sensitivity, curve.sensitivity[-1]]
        bold = name == "all classes"
        ax.step(x, y, where="post", color="black" if bold else None,
                linewidth=2.5 if bold else 1.2, label=f"{name} ({number(curve.score)})")
    overall = metrics.froc.overall
    if overall.boxes:
        ax.plot(rates, overall.at_rates, "o", color="black")
    ax.set_xscale("log", base=2)
    ax.set_xlim(low, high)
    ax.set_xticks(list(rates), [_rate(r) for r in rates])
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("false positives per image")
    ax.set_ylabel("sensitivity")
    ax.grid(alpha=0.3)
    ax.set_title(f"FROC (hit at IoU >= {metrics.settings.hit_iou:g})")
    if curves or overall.boxes:
        figure.legend(loc="outside right upper", fontsize=8, title="class (FROC score)")
    return figure


def plot_confusion_matrix(metrics: Metrics, path: Path) -> Path:
    """Counts, coloured by the share of each true class's row."""
    labels, matrix = metrics.confusion.labels, metrics.confusion.matrix
    figure, axes = _figure(size=(9, 8))
    ax = axes[0, 0]
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=ax, label="share of the true class's row")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (row, col), count in np.ndenumerate(matrix):
        if count:
            ax.text(col, row, str(count), ha="center", va="center",
                    color="white" if shares[row, col] > 0.5 else "black", fontsize=8)
    s = metrics.settings
    ax.set_title(f"Confusion matrix (IoU >= {s.confusion_iou:g}, score > {s.score_threshold:g})")
    return _save(figure, path)


def write_plots(metrics: Metrics, output_dir: Path) -> list[Path]:
    return [
        plot_pr_curves(metrics, output_dir / "pr_curves.png"),
        plot_froc(metrics, output_dir / "froc.png"),
        plot_confusion_matrix(metrics, output_dir / "confusion_matrix.png"),
    ]
