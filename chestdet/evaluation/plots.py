"""The report's figures as PNG files (matplotlib, no display): precision-recall curves, FROC curves and
the confusion matrix."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from chestdet.core import atomic
from chestdet.evaluation.metrics import Metrics
from chestdet.evaluation.report_tables import number, rate_text

PR_CURVES_PNG, FROC_PNG, CONFUSION_PNG = "pr_curves.png", "froc.png", "confusion_matrix.png"
PLOT_FILES = (PR_CURVES_PNG, FROC_PNG, CONFUSION_PNG)
PR_COLUMNS = 4  # panels per row of the PR figure


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
    """The PR figure, a panel per class, four to a row; one legend for all panels, below them, where it covers
    no curve."""
    classes = metrics.settings.classes
    rows = math.ceil(len(classes) / PR_COLUMNS)
    figure, axes = _figure(rows, PR_COLUMNS, (14, 3.75 * rows))
    recall = metrics.coco.recall_thresholds
    for ax in axes.flat[len(classes):]:
        ax.set_axis_off()
    for ax, name in zip(axes.flat, classes, strict=False):
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
    ax.set_xticks(list(rates), [rate_text(r) for r in rates])
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
        plot_pr_curves(metrics, output_dir / PR_CURVES_PNG),
        plot_froc(metrics, output_dir / FROC_PNG),
        plot_confusion_matrix(metrics, output_dir / CONFUSION_PNG),
    ]
