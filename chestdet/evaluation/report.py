"""Turn Metrics into what people read: report.md, report.html and the one-screen summary (the tables
come from report_tables, the plots from plots, the paper's figures from paper)."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path

from chestdet.core import atomic
from chestdet.core.contracts import REPORT_HTML, REPORT_MD
from chestdet.evaluation.baseline import Baseline
from chestdet.evaluation.gallery import FALSE_POSITIVE_KIND, MISSED_KIND
from chestdet.evaluation.metrics import Metrics
from chestdet.evaluation.paper import PAPER_CITATION, paper_columns
from chestdet.evaluation.plots import CONFUSION_PNG, FROC_PNG, PR_CURVES_PNG
from chestdet.evaluation.report_tables import (
    baseline_rows,
    confusion_rows,
    froc_rows,
    image_level_rows,
    iobb_rows,
    markdown_table,
    not_beaten,
    per_class_rows,
    rate_text,
    text_table,
)


def summary_text(metrics: Metrics, baseline: Baseline | None = None) -> str:
    """The one-screen summary the CLI ends with."""
    s = metrics.settings
    header, rows = per_class_rows(metrics, baseline)
    ignored = sum(metrics.ignored.values())
    lines = [
        f"{metrics.images} images ({metrics.images_with_boxes} with boxes), {sum(metrics.boxes.values())} boxes"
        + (f" ({ignored} difficult ones ignored)" if ignored else "")
        + f", {metrics.detections} detections; image-level at score > {s.score_threshold:g}, FROC hit at IoU >= "
        f"{s.hit_iou:g}" + (f"; {metrics.bootstrap.level:.0%} intervals" if metrics.bootstrap is not None else ""),
        text_table([cell.replace("**", "") for cell in header], [[c.replace("**", "") for c in r] for r in rows]),
    ]
    if baseline is not None:
        lines.append(baseline_verdict(metrics, baseline).replace("**", ""))
    return "\n".join(lines)


def baseline_verdict(metrics: Metrics, baseline: Baseline) -> str:
    """One sentence: which classes do not beat the trivial baseline on AP@0.5, or that every class does."""
    behind = not_beaten(metrics, baseline)
    if not behind:
        return "Every class with boxes here beats the trivial baseline on AP@0.5."
    return (f"**Not better than the trivial baseline on AP@0.5: {', '.join(behind)}.** For "
            f"{'this class' if len(behind) == 1 else 'these'} the model has not shown that it learned more than "
            "where the finding usually sits and how often it occurs.")


def render_markdown(
    metrics: Metrics, sources: dict[str, str], rejects: int = 0, plots: bool = True,
    gallery: Mapping[str, Mapping[str, Sequence[Path]]] | None = None, output_dir: Path | None = None,
    baseline: Baseline | None = None,
) -> str:
    parts = [
        *_header(metrics, sources, rejects),
        *_per_class_section(metrics, baseline),
        *(_baseline_section(metrics, baseline) if baseline is not None else []),
        *_iobb_section(metrics),
        *_image_level_section(metrics),
    ]
    if plots:
        parts += [
            "## Plots",
            "",
            f"![Precision-recall curves]({PR_CURVES_PNG})",
            "",
            f"![FROC curves]({FROC_PNG})",
            "",
            f"![Confusion matrix]({CONFUSION_PNG})",
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


def _per_class_section(metrics: Metrics, baseline: Baseline | None = None) -> list[str]:
    s = metrics.settings
    return [
        "## Per class",
        "",
        "AP from pycocotools COCOeval (area all, 100 detections per image); FROC is the mean sensitivity "
        f"at {', '.join(rate_text(r) for r in s.fp_rates)} false positives per image; image sensitivity and "
        "specificity count an image positive for a class when it has a box of it / a detection of it "
        "above the threshold. A dash means the class has no box here."
        + (" AP@0.5 baseline is the trivial baseline's (below)." if baseline is not None else ""),
        "",
        markdown_table(*per_class_rows(metrics, baseline)),
        "",
        *([baseline_verdict(metrics, baseline), ""] if baseline is not None else []),
        "## FROC: sensitivity at false positives per image",
        "",
        markdown_table(*froc_rows(metrics)),
        "",
    ]


def _baseline_section(metrics: Metrics, baseline: Baseline) -> list[str]:
    return [
        "## The trivial baseline",
        "",
        "What a model that learned nothing scores here: each class's median box over the training images' "
        f"boxes ({baseline.images} images, {baseline.source}), placed on every evaluated image with the class "
        "frequency (the share of training images with the class) as its score, and evaluated like the model. "
        "A class whose AP@0.5 is not above the baseline's is flagged **NO**.",
        "",
        markdown_table(*baseline_rows(baseline, metrics)),
        "",
    ]


def _iobb_section(metrics: Metrics) -> list[str]:
    """The paper's comparison for the classes it has; none evaluated, no section (metrics.json has every
    class's T(IoBB) figures)."""
    columns = paper_columns(metrics.settings.classes)
    if not columns:
        return []
    others = [name for name in metrics.settings.classes if name not in columns]
    return [
        "## ChestX-ray8 localisation accuracy (T(IoBB)) beside Wang et al., CVPR 2017, Table 4",
        "",
        "A box is correctly localised when a detection of its class (score above the threshold) covers "
        "it with IoBB > T (intersection over the detected box's area); Acc. is the share of boxes "
        "correctly localised. AFP counts, as the paper does, the detections that localise no box on the "
        "images with boxes, over the annotated image-finding pairs (the paper's 984); the last row is a "
        "different figure, those detections on every evaluated image over the evaluated images. The "
        "paper's figures are for its weakly supervised ResNet-50 heatmap boxes on all 984 NIH boxes, not "
        "a detector on a held-out split: put them beside, not against, these."
        + (f" The paper has no figures for {', '.join(others)}; metrics.json holds their T(IoBB) figures."
           if others else ""),
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
    gallery: Mapping[str, Mapping[str, Sequence[Path]]] | None = None, baseline: Baseline | None = None,
) -> list[Path]:
    text = render_markdown(metrics, sources, rejects, plots, gallery, output_dir, baseline)
    atomic.write_text(output_dir / REPORT_MD, text)
    atomic.write_text(output_dir / REPORT_HTML, render_html(text))
    return [output_dir / REPORT_MD, output_dir / REPORT_HTML]
