"""Reading a run folder back for the Slicer module, and one case against the cohort."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.run.results import RunResults, case_comparison, find_explanation_folder


def _pairs(*rows):
    return pd.DataFrame(rows, columns=["deep_feature", "radiomic_feature", "rho"])


def test_case_against_the_cohort():
    cohort = pd.DataFrame(
        {
            "original_firstorder_Mean": [10.0, 20.0, 30.0, 40.0, 50.0],
            "original_glcm_Contrast": [1.0, 1.0, 1.0, 1.0, 1.0],
        },
        index=[f"c{i}" for i in range(5)],
    )
    case = pd.Series({"original_firstorder_Mean": 30.0, "original_glcm_Contrast": 1.0})
    table = case_comparison(
        case,
        cohort,
        _pairs(("cnn_3", "original_firstorder_Mean", -0.7), ("cnn_3", "original_glcm_Contrast", 0.65)),
    )
    mean, contrast = table.iloc[0], table.iloc[1]
    assert mean["case_value"] == 30.0 and mean["cohort_median"] == 30.0
    assert (mean["cohort_q1"], mean["cohort_q3"]) == (20.0, 40.0)
    assert mean["percentile"] == 50.0  # 2 below, 1 equal (half) of 5
    assert mean["z"] == pytest.approx(0.0)
    assert mean["rho"] == -0.7
    assert contrast["percentile"] == 50.0 and np.isnan(contrast["z"])  # constant in the cohort


def test_case_values_outside_and_missing():
    cohort = pd.DataFrame({"a": [1.0, 2.0, np.nan, 3.0]})
    table = case_comparison(pd.Series({"a": 9.0}), cohort, _pairs(("d", "a", 0.9), ("d", "b", 0.8)))
    assert table.iloc[0]["percentile"] == 100.0  # NaN in the cohort left out
    assert table.iloc[0]["z"] == pytest.approx((9.0 - 2.0) / 1.0)
    assert np.isnan(table.iloc[1]["case_value"]) and np.isnan(table.iloc[1]["percentile"])


def test_run_folder_errors(tmp_path):
    with pytest.raises(Rad4XCNNError, match="run folder not found"):
        RunResults.load(tmp_path / "missing")
    with pytest.raises(Rad4XCNNError, match="no Rad4XCNN results in"):
        RunResults.load(tmp_path)
    (tmp_path / "radiomics.csv").write_text("case_id,a\nc1,not-a-number\n")
    results = RunResults.load(tmp_path)
    assert "1 cases with radiomic features (no correlations yet)" in results.summary()
    with pytest.raises(Rad4XCNNError, match="holds no correlations"):
        results.with_threshold(0.7)


def test_explanation_folder_is_found_below_the_run(tmp_path):
    assert find_explanation_folder(tmp_path) is None
    (tmp_path / "explanation").mkdir()
    (tmp_path / "explanation" / "correlation.json").write_text("{}")
    assert find_explanation_folder(tmp_path) == tmp_path / "explanation"
    (tmp_path / "correlation.json").write_text("{}")
    assert find_explanation_folder(tmp_path) == tmp_path


# ------------------------------------------------------------------------------------------- the case command
SMALL_PARAMS = """\
imageType:
  Original: {}
featureClass:
  firstorder: [Mean, Median]
setting:
  binCount: 16
  force2D: true
  force2Ddimension: 0
"""


def test_case_command_uses_the_run_radiomics_settings(tmp_path, make_case):
    import json

    pytest.importorskip("radiomics")

    from conftest import write_manifest_rows

    from Rad4XCNNLogic.cli import main

    manifest = write_manifest_rows(tmp_path / "case.csv", [make_case("us1")])
    run = tmp_path / "run"
    run.mkdir()
    (run / "radiomics_settings.json").write_text(
        json.dumps({"params": "small.yaml", "params_yaml": SMALL_PARAMS})
    )
    out = tmp_path / "out"
    assert main(["case", "--manifest", str(manifest), "--run", str(run), "--out", str(out)]) == 0
    features = pd.read_csv(out / "radiomics.csv", index_col=0)
    assert list(features.index) == ["us1"]
    assert list(features.columns) == ["original_firstorder_Mean", "original_firstorder_Median"]
    assert (out / "radiomics_params_small.yaml").read_text() == SMALL_PARAMS


def test_case_command_errors(tmp_path, make_case, capsys):
    from conftest import write_manifest_rows

    from Rad4XCNNLogic.cli import main

    two = write_manifest_rows(tmp_path / "two.csv", [make_case("a"), make_case("b")])
    assert main(["case", "--manifest", str(two), "--out", str(tmp_path / "o")]) == 1
    assert "a case manifest holds one case" in capsys.readouterr().err
    bad = write_manifest_rows(tmp_path / "bad.csv", [{**make_case("c"), "mask": "missing.png"}])
    assert main(["case", "--manifest", str(bad), "--out", str(tmp_path / "o")]) == 1
    assert "case c:" in capsys.readouterr().err
