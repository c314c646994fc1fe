"""The report: the paper's Table 4 data, Markdown/HTML tables, the one-screen summary and the plots."""

from __future__ import annotations

import struct
from collections import Counter

import pandas as pd
import pytest

from chestdet.core.labels import CLASS_NAMES
from chestdet.data.annotations import read_nih_csv
from chestdet.evaluation import paper, plots, report, report_tables
from chestdet.evaluation.boxes import BOX_COLUMNS, DETECTION_TABLE_COLUMNS, GROUND_TRUTH_COLUMNS
from chestdet.evaluation.metrics import compute_metrics
from tests.conftest import SAMPLE_CSV

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def is_count_over(value: float, denominator: int) -> bool:
    """True when value is some count / denominator to the paper's 4 decimals (it rounds some figures
    and cuts others: 30/180 is printed 0.1666, 787/984 0.7998)."""
    return abs(round(value * denominator) / denominator - value) < 1e-4


def test_paper_table4_figures_are_counts_over_the_nih_boxes():
    # A typing check of the bundled figures, and the basis of docs/evaluate.md's reading of the
    # definitions: every accuracy is (boxes found) / (the class's boxes in NIH's list), and every AFP
    # is (false positives) / 984, the number of annotated image-finding pairs.
    boxes, _ = read_nih_csv(SAMPLE_CSV)  # NIH's whole list: 984 boxes
    per_class = Counter(box.label for box in boxes)
    assert len(boxes) == 984
    assert sorted(paper.PAPER_TABLE4) == [0.1, 0.25, 0.5, 0.75, 0.9]
    for threshold, row in paper.PAPER_TABLE4.items():
        for name, accuracy, afp in zip(CLASS_NAMES, row["accuracy"], row["afp"], strict=True):
            assert is_count_over(accuracy, per_class[name]), (threshold, name, accuracy)
            assert is_count_over(afp, 984), (threshold, name, afp)
    for k, name in enumerate(CLASS_NAMES):  # a stricter threshold never finds more, never fewer FPs
        accuracies = [paper.PAPER_TABLE4[t]["accuracy"][k] for t in sorted(paper.PAPER_TABLE4)]
        afps = [paper.PAPER_TABLE4[t]["afp"][k] for t in sorted(paper.PAPER_TABLE4)]
        assert accuracies == sorted(accuracies, reverse=True), name
        assert afps == sorted(afps), name
    assert "CVPR 2017" in paper.PAPER_CITATION and "Table 4" in paper.PAPER_CITATION


@pytest.fixture
def small_metrics():
    truth = pd.DataFrame(
        [("A", "Mass", 0, 0, 100, 100), ("B", "Cardiomegaly", 300, 400, 700, 800)], columns=GROUND_TRUTH_COLUMNS
    ).astype({c: float for c in BOX_COLUMNS})
    found = pd.DataFrame(
        [("A", "Mass", 0.9, 0, 0, 100, 100), ("B", "Cardiomegaly", 0.8, 300, 400, 700, 700),
         ("C", "Nodule", 0.6, 10, 10, 30, 30)],
        columns=DETECTION_TABLE_COLUMNS,
    ).astype({c: float for c in ["score", *BOX_COLUMNS]})
    metrics = compute_metrics(truth, found, ["A", "B", "C"])
    metrics.notes.append("a note for the reader")
    return metrics


def test_markdown_puts_our_figures_beside_the_papers(small_metrics):
    text = report.render_markdown(small_metrics, {"detections": "d.csv", "ground_truth": "NIH CSV x", "split": "none"})
    lines = text.splitlines()
    # Mass box found exactly: IoBB 1 > every T. Cardiomegaly: the detection covers 3/4 of the box and
    # lies inside it: IoBB 1 too. The Nodule detection on C localises nothing, but C has no box: the
    # paper's AFP (boxed images, over the 2 image-finding pairs) is 0, the FP per evaluated image 1/3.
    ours = lines.index("| 0.5 | Acc. (this model) | – | 1.0000 | – | – | 1.0000 | – | – | – |")
    assert lines[ours + 1] == ("|  | Acc. (Wang et al.) | 0.2833 | 0.8767 | 0.3333 | 0.4227 | 0.1411 | 0.0126 "
                               "| 0.3833 | 0.1836 |")
    assert lines[ours + 2] == ("|  | AFP (this model) | 0.0000 | 0.0000 | 0.0000 | 0.0000 | 0.0000 | 0.0000 "
                               "| 0.0000 | 0.0000 |")
    assert lines[ours + 3].startswith("|  | AFP (Wang et al.) | 1.0203 | 0.5630 |")
    assert lines[ours + 4] == ("|  | FP per evaluated image (not AFP) | 0.0000 | 0.0000 | 0.0000 | 0.0000 | 0.0000 "
                               "| 0.3333 | 0.0000 | 0.0000 |")
    assert "- Difficult boxes ignored: 0 (a detection on one is neither a hit nor a false positive, missing one " \
           "is no miss)" in lines
    assert paper.PAPER_CITATION in text
    assert "| Mass | 1 | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 |" in lines
    assert "- a note for the reader" in lines
    assert "![FROC curves](froc.png)" in lines
    assert "![FROC curves](froc.png)" not in report.render_markdown(small_metrics, {}, plots=False)


def test_html_renders_the_tables_and_plots(small_metrics):
    page = report.render_html(report.render_markdown(small_metrics, {"detections": "a <b> & c.csv"}))
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<table>") == 5  # per class, FROC, T(IoBB), image level, confusion
    assert '<img alt="Confusion matrix" src="confusion_matrix.png"' in page
    assert ">Acc. (Wang et al.)</td>" in page and ">0.2833</td>" in page
    assert "a &lt;b&gt; &amp; c.csv" in page  # file names are escaped


def test_summary_fits_one_screen(small_metrics):
    text = report.summary_text(small_metrics)
    lines = text.splitlines()
    assert len(lines) <= 24 and max(len(line) for line in lines) <= 120
    assert lines[1].split() == ["class", "boxes", "AP@[.5:.95]", "AP@0.5", "AP@0.25", "FROC", "sens@1FP/img",
                                "img", "sens", "img", "spec"]
    assert lines[3 + CLASS_NAMES.index("Nodule")].split() == ["Nodule", "0", "–", "–", "–", "–", "–", "–", "0.667"]
    assert lines[-1].split()[:2] == ["all", "2"]


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    return struct.unpack(">II", data[16:24])


def test_plots_are_pngs(tmp_path, small_metrics):
    paths = plots.write_plots(small_metrics, tmp_path)
    assert [p.name for p in paths] == list(plots.PLOT_FILES)
    assert png_size(tmp_path / "pr_curves.png") == (1400, 750)
    assert png_size(tmp_path / "froc.png") == (1000, 600)
    assert png_size(tmp_path / "confusion_matrix.png") == (900, 800)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(plots.PLOT_FILES)  # no temporary left


def test_plots_without_any_box_or_detection(tmp_path):
    empty = compute_metrics(
        pd.DataFrame(columns=GROUND_TRUTH_COLUMNS),
        pd.DataFrame(columns=DETECTION_TABLE_COLUMNS).astype({"score": float}),
        ["A"],
    )
    plots.write_plots(empty, tmp_path)
    assert all(png_size(tmp_path / name)[0] > 0 for name in plots.PLOT_FILES)
    assert "| all | 0 | – |" in report.render_markdown(empty, {})


def test_intervals_print_as_estimate_low_high(small_metrics):
    from chestdet.evaluation import bootstrap

    assert report_tables.with_interval(0.4213, [0.3104, 0.5511]) == "0.42 [0.31, 0.55]"
    assert report_tables.with_interval(None, [0.1, 0.2]) == "–" and report_tables.with_interval(0.5, None) == "0.50 [–]"
    truth = pd.DataFrame([("A", "Mass", 0, 0, 100, 100), ("B", "Cardiomegaly", 300, 400, 700, 800)],
                         columns=GROUND_TRUTH_COLUMNS).astype({c: float for c in BOX_COLUMNS})
    found = pd.DataFrame([("A", "Mass", 0.9, 0, 0, 100, 100), ("B", "Cardiomegaly", 0.8, 300, 400, 700, 700),
                          ("C", "Nodule", 0.6, 10, 10, 30, 30)], columns=DETECTION_TABLE_COLUMNS)
    small_metrics.bootstrap = bootstrap.bootstrap_metrics(small_metrics, truth, found, ["A", "B", "C"],
                                                          ["p1", "p2", "p3"], replicates=50, seed=2)
    text = report.render_markdown(small_metrics, {})
    mass = next(line for line in text.splitlines() if line.startswith("| Mass |"))
    cells = [cell.strip() for cell in mass.strip("|").split("|")]
    ap50 = small_metrics.bootstrap.coco["per_class"]["Mass"]["ap50"]
    assert cells[3] == f"1.00 [{ap50[0]:.2f}, {ap50[1]:.2f}]"
    assert "50 replicates resampling the 3 patients with replacement (seed 2)" in text
    summary = next(line for line in report.summary_text(small_metrics).splitlines() if line.startswith("Mass "))
    assert f"[{ap50[0]:.2f}, {ap50[1]:.2f}]" in summary
    assert report.summary_text(small_metrics).splitlines()[0].endswith("FROC hit at IoU >= 0.5; 95% intervals")


def overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.parametrize("build", [plots.froc_figure, plots.pr_figure])
def test_legends_cover_no_axes(small_metrics, build):
    figure = build(small_metrics)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    legends = [*figure.legends, *(ax.get_legend() for ax in figure.axes if ax.get_legend() is not None)]
    assert legends, "the figure has a legend"
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in figure.axes:
            if ax.get_label() == "<colorbar>":
                continue
            assert not overlaps(box, ax.get_window_extent(renderer)), ax.get_title()


def test_report_links_the_gallery_and_counts_ignored_boxes(tmp_path, small_metrics):
    small_metrics.ignored = {**dict.fromkeys(CLASS_NAMES, 0), "Mass": 2}
    pictures = {"Mass": {"false-positive": [tmp_path / "gallery" / "Mass" / "false-positive-01.png"],
                         "missed": []}}
    text = report.render_markdown(small_metrics, {}, gallery=pictures, output_dir=tmp_path)
    assert "| Mass | [1](gallery/Mass/false-positive-01.png) | none |" in text.splitlines()
    assert "- Difficult boxes ignored: 2 (Mass 2) (a detection on one" in text
    summary = report.summary_text(small_metrics)
    assert summary.startswith("3 images (2 with boxes), 2 boxes (2 difficult ones ignored)")
    page = report.render_html(text)
    assert '<a href="gallery/Mass/false-positive-01.png">1</a>' in page
