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
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))


def test_claims_are_counted_from_the_intervals():
    lines = claims_as_measured(_table())
    cnn = next(line for line in lines if line.startswith("CNN-derived deep features"))
    assert "on external: 2 comparison(s) (rf, svm)" in cnn
    assert "from +0.010 to +0.100; interval above 0 in 1, below 0 in 0, across 0 in 1." in cnn
    radiomic = next(line for line in lines if line.startswith("deep features classify better than radiomic"))
    assert "on internal-test" in radiomic and "above 0 in 0, below 0 in 0, across 0 in 1" in radiomic
    explained = next(line for line in lines if line.startswith("keeping only the explained"))
    assert "below 0 in 1" in explained  # explanation did cost accuracy here, and the report says so
    assert claims_as_measured(_table().iloc[:0]) == []
    only_radiomic = claims_as_measured(_table().iloc[3:])
    assert only_radiomic[0].startswith("CNN-derived") and "not measured" in only_radiomic[0]


def test_forest_plot_is_a_png_and_names_are_escaped():
    png = base64.b64decode(forest_figure(_table()))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    hostile = _table().assign(set_a="<img src=x onerror=alert(1)>")
    html = str(html_table(hostile))
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
