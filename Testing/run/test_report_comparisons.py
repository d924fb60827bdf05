"""The report's paired comparisons: the paper's claims as measured (counted from the intervals), the forest
plot, and set names escaped in the HTML."""

from __future__ import annotations

import base64

import pandas as pd

from Rad4XCNNLogic.classify.comparisons import COMPARISON_COLUMNS
from Rad4XCNNLogic.run.report import claims_as_measured, forest_figure, html_table


def _table():
    rows = [
        # evaluated_on, classifier, set_a, set_b, auc_a, auc_b, delta, low, high, p
        ("external", "rf", "deep-resnet50", "deep-vit_base_patch32_224", 0.85, 0.75, 0.10, 0.04, 0.16, 0.001),
        ("external", "svm", "deep-resnet50", "deep-vit_base_patch32_224", 0.80, 0.79, 0.01, -0.03, 0.05, 0.6),
        ("external", "rf", "explained-deep-resnet50", "deep-resnet50", 0.80, 0.85, -0.05, -0.09, -0.01, 0.02),
        ("internal-test", "rf", "deep-resnet50", "radiomic", 0.90, 0.88, 0.02, -0.02, 0.06, 0.3),
    ]
    table = pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS[:10]))
    # a comparisons.csv as written before the family adjustment: judged on the per-comparison intervals
    return table


def _adjusted():
    """The same comparisons, adjusted: the simultaneous band moves the rf CNN-vs-ViT claim across 0."""
    table = _table().assign(
        p_holm=[0.002, 0.6, 0.02, 0.3],
        sim_ci_low=[-0.01, -0.06, -0.11, -0.05],
        sim_ci_high=[0.21, 0.08, -0.001, 0.09],
        family=["cnn-vs-vit", "cnn-vs-vit", "explained-vs-deep", "deep-vs-radiomic"],
        family_size=[2, 2, 1, 1],
    )
    return table[list(COMPARISON_COLUMNS)]


def test_claims_are_counted_from_the_intervals():
    lines = claims_as_measured(_table())
    cnn = next(line for line in lines if line.startswith("CNN-derived deep features"))
    assert "on external: 2 comparison(s) (rf, svm)" in cnn
    assert "from +0.010 to +0.100; 95% interval above 0 in 1, below 0 in 0, across 0 in 1." in cnn
    radiomic = next(line for line in lines if line.startswith("deep features classify better than radiomic"))
    assert "on internal-test" in radiomic and "above 0 in 0, below 0 in 0, across 0 in 1" in radiomic
    explained = next(line for line in lines if line.startswith("keeping only the explained"))
    assert "below 0 in 1" in explained  # explanation did cost accuracy here, and the report says so
    assert claims_as_measured(_table().iloc[:0]) == []
    only_radiomic = claims_as_measured(_table().iloc[3:])
    assert only_radiomic[1].startswith("CNN-derived") and "not measured" in only_radiomic[1]


def test_claims_are_judged_on_the_family_adjusted_values():
    lines = claims_as_measured(_adjusted())
    assert lines[0].startswith("4 paired comparison(s) in 3 famil(ies) of claim x evaluation set")
    assert "simultaneous 95% band and Holm-adjusted DeLong p" in lines[0]
    cnn = next(line for line in lines if line.startswith("CNN-derived deep features"))
    # the rf interval alone is above 0 (0.04 to 0.16), its family's band is not
    assert "simultaneous 95% band above 0 in 0, below 0 in 0, across 0 in 2; Holm p < 0.05 in 1." in cnn
    explained = next(line for line in lines if line.startswith("keeping only the explained"))
    assert "below 0 in 1" in explained
    named = claims_as_measured(_adjusted().assign(family="named"))
    assert any(
        line.startswith("the pairs named in classification.compare differ - on external") for line in named
    )
    assert base64.b64decode(forest_figure(_adjusted()))[:4] == b"\x89PNG"


def test_forest_plot_is_a_png_and_names_are_escaped():
    png = base64.b64decode(forest_figure(_table()))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    hostile = _table().assign(set_a="<img src=x onerror=alert(1)>")
    html = str(html_table(hostile))
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
