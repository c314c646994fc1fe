"""Evaluation follows the label map's classes (EvaluationSettings.classes): every metric, metrics.json, the
report, the plots, the gallery, the bootstrap, the operating points, the baseline and the cross-validation
tables; the ChestX-ray8 paper's table only for the classes the paper has."""

from __future__ import annotations

import json

import numpy as np
import pytest

from chestdet.core.labels import CLASS_NAMES
from chestdet.data.annotations import Box
from chestdet.evaluation import baseline, bootstrap, coco, gallery, operating_points, plots, report
from chestdet.evaluation.cv_evaluation import across_folds, figures, render_cv_markdown
from chestdet.evaluation.ground_truth import GroundTruth
from chestdet.evaluation.metrics import EvaluationSettings, compute_metrics, json_ready
from chestdet.evaluation.report_tables import iobb_rows, per_class_rows
from tests.support.metric_tables import det, gt

NINE = (*CLASS_NAMES, "Fibrosis")
TB = ("ActiveTuberculosis", "ObsoletePulmonaryTuberculosis")
IMAGES = ["a.png", "b.png", "c.png"]
# A Fibrosis box found (a.png), a Mass box found (b.png), a stray Fibrosis detection on c.png.
TRUTH = gt(("a.png", "Fibrosis", 100, 100, 300, 300), ("b.png", "Mass", 400, 400, 500, 500))
FOUND = det(("a.png", "Fibrosis", 0.9, 105, 100, 300, 305), ("b.png", "Mass", 0.8, 400, 400, 500, 500),
            ("c.png", "Fibrosis", 0.6, 10, 10, 60, 60))


@pytest.fixture(scope="module")
def nine():
    return compute_metrics(TRUTH, FOUND, IMAGES, EvaluationSettings(classes=NINE))


def test_every_metric_has_the_maps_ninth_class(nine):
    data = json_ready(nine.to_dict())
    assert list(data["boxes"]) == list(NINE) and data["boxes"]["Fibrosis"] == 1
    assert list(data["ignored_boxes"]) == list(NINE)
    assert data["coco"]["per_class"]["Fibrosis"]["ap50"] == pytest.approx(1.0)
    assert data["froc"]["per_class"]["Fibrosis"]["hits"] == 1
    assert data["froc"]["per_class"]["Fibrosis"]["false_positives"] == 1
    assert data["iobb"]["per_class"]["Fibrosis"]["accuracy"][0] == 1.0
    assert data["image_level"]["Fibrosis"] | {} == {"true_positives": 1, "false_positives": 1, "true_negatives": 1,
                                                     "false_negatives": 0, "sensitivity": 1.0, "specificity": 0.5,
                                                     "ignored": 0}
    assert data["confusion_matrix"]["labels"] == [*NINE, "background"]
    assert np.asarray(data["confusion_matrix"]["matrix"])[8, 8] == 1  # Fibrosis found as Fibrosis
    assert "classes" not in data["settings"]  # the per-class blocks name them, in id order


def test_coco_category_ids_are_the_maps_ids():
    dataset = coco.coco_ground_truth(TRUTH, IMAGES, NINE)
    assert dataset["categories"][-1] == {"id": 9, "name": "Fibrosis"}
    assert [a["category_id"] for a in dataset["annotations"]] == [9, 5]
    assert [r["category_id"] for r in coco.coco_results(FOUND, IMAGES, NINE)] == [9, 5, 9]


def test_a_class_outside_the_settings_is_refused():
    with pytest.raises(ValueError, match="labels outside CLASS_NAMES: \\['Fibrosis'\\]"):
        compute_metrics(TRUTH, FOUND, IMAGES)
    with pytest.raises(ValueError, match="labels outside the evaluated classes"):
        compute_metrics(TRUTH, FOUND, IMAGES, EvaluationSettings(classes=TB))


@pytest.mark.parametrize(("classes", "message"), [
    ((), "classes must be distinct names"),
    (("Mass", "mass"), "classes must be distinct names"),
    (("Mass", "All"), "a class may not be named 'all'"),
    (("background", "Mass"), "a class may not be named 'background'"),
])
def test_settings_refuse_classes_the_report_cannot_tell_apart(classes, message):
    with pytest.raises(ValueError, match=message):
        EvaluationSettings(classes=classes)


def test_report_lists_every_class_and_the_paper_table_only_the_papers(nine):
    header, rows = per_class_rows(nine)
    assert [row[0] for row in rows] == [*NINE, "all"]
    iobb_header, _ = iobb_rows(nine)
    assert iobb_header[2:] == list(CLASS_NAMES)
    text = report.render_markdown(nine, {}, plots=False)
    assert "beside Wang et al., CVPR 2017, Table 4" in text
    assert "The paper has no figures for Fibrosis; metrics.json holds their T(IoBB) figures." in text
    table = text.split("beside Wang et al., CVPR 2017, Table 4")[1].split("Source:")[0]
    assert "Fibrosis" not in table.split("metrics.json holds")[1]


def test_paper_columns_follow_the_papers_names_in_any_order_and_alias():
    metrics = compute_metrics(gt(), det(), ["a.png"], EvaluationSettings(classes=("Nodule", "Infiltration", "TB")))
    header, rows = iobb_rows(metrics)
    assert header[2:] == ["Nodule", "Infiltration"]
    papers = [row for row in rows if row[1] == "Acc. (Wang et al.)"]
    assert papers[0][2:] == ["0.1645", "0.7886"]  # Table 4's Nodule and Infiltration columns at T(IoBB) 0.1


def test_no_paper_section_without_any_of_the_papers_classes(tmp_path):
    truth = gt(("a.png", "ActiveTuberculosis", 10, 10, 200, 200))
    found = det(("a.png", "ActiveTuberculosis", 0.7, 10, 10, 200, 210))
    metrics = compute_metrics(truth, found, ["a.png", "b.png"], EvaluationSettings(classes=TB))
    text = report.render_markdown(metrics, {}, plots=False)
    assert "Wang et al." not in text and "ChestX-ray8" not in text
    assert "| ActiveTuberculosis | 1 |" in text
    assert "ChestX-ray8" not in report.summary_text(metrics)
    written = plots.write_plots(metrics, tmp_path)
    assert [path.name for path in written] == list(plots.PLOT_FILES)
    assert [ax.get_title().split()[0] for ax in plots.pr_figure(metrics).axes if ax.axison] == list(TB)


def test_pr_figure_has_a_panel_per_class(nine):
    figure = plots.pr_figure(nine)
    titles = [ax.get_title().split()[0] for ax in figure.axes if ax.axison]
    assert titles == list(NINE)
    assert len(figure.axes) == 12  # three rows of four, the last three empty


def test_gallery_bootstrap_and_operating_points_cover_the_ninth_class(nine, tmp_path):
    written, _ = gallery.write_gallery(TRUTH, FOUND, nine.settings, tmp_path, lambda key: None, 2)
    assert list(written) == list(NINE)
    (tmp_path / "gallery" / "Fibrosis").mkdir(parents=True)
    (tmp_path / "gallery" / "Fibrosis" / "missed-01.png").write_bytes(b"old")
    gallery.clear_gallery(tmp_path)  # an earlier report's pictures of any class go
    assert not (tmp_path / "gallery").exists()
    result = bootstrap.bootstrap_metrics(nine, TRUTH, FOUND, IMAGES, ["p1", "p2", "p3"], replicates=20, seed=0)
    data = result.to_dict()
    assert list(data["coco"]["per_class"]) == list(NINE)
    assert "Fibrosis" in data["froc"]["per_class"] and "Fibrosis" in data["image_level"]
    points = operating_points.operating_points(nine, "val")
    assert list(points.classes) == list(NINE)
    assert points.classes["Fibrosis"]["best_f1"].threshold == pytest.approx(0.9)
    with_ci = operating_points.with_intervals(points, TRUTH, FOUND, IMAGES, ["p1", "p2", "p3"], 20, 0, 0.5)
    assert with_ci.classes["Fibrosis"]["best_f1"].interval is not None


def test_baseline_has_a_prior_per_class_of_the_map(nine):
    source = GroundTruth([Box("t1.png", "Fibrosis", 100, 100, 300, 300)], [], None, "hand-made",
                         {"t1.png": (1000, 1000)})
    found = baseline.build_baseline(TRUTH, IMAGES, dict.fromkeys(IMAGES, (1000, 1000)), source, ["t1.png"],
                                    nine.settings)
    assert found is not None and list(found.priors) == list(NINE)
    assert found.priors["Fibrosis"].box == (0.1, 0.1, 0.3, 0.3)
    assert list(found.beaten(nine)) == [*NINE, "all"]
    assert json.dumps(json_ready(found.to_dict(nine)))  # metrics.json's block


def test_cross_validation_tables_follow_the_classes(nine):
    per_fold = [figures(nine), figures(nine)]
    assert list(per_fold[0]) == [*NINE, "all"]
    mean, sd = across_folds(per_fold)
    summary = {"folds": [1, 2], "missing_folds": [], "mean": mean, "sd": sd,
               "per_fold": [{"fold": k, "images": 3, "boxes": 2, **table, "baseline": None}
                            for k, table in enumerate(per_fold, start=1)],
               "pooled": {"images": 6, "boxes": 4, **per_fold[0]}}
    text = render_cv_markdown(summary, {})
    assert text.count("| Fibrosis |") == len([line for line in text.splitlines() if line.startswith("## ")
                                               and line not in ("## Overall", "## Full reports")])
