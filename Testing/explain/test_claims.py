"""What the explanation's numbers are called: attenuated is not confounded, strata that disagree are
reversed, each count says which error it controls, the random-weights control's comparison has an interval
and a verdict, and the strata come from the cases used. Each test plants the situation."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from Rad4XCNNLogic.cli import main
from Rad4XCNNLogic.explain.claims import NOT_SPECIFIC, control_gain_bootstrap, control_verdicts
from Rad4XCNNLogic.explain.explanation import explain, load_explanation, write_explanation
from Rad4XCNNLogic.explain.heldout import coverage_against_control
from Rad4XCNNLogic.explain.settings import ExplainConfig
from Rad4XCNNLogic.explain.strata import spearman_within
from Rad4XCNNLogic.run.work import threshold_table

RADIOMIC = [
    "original_firstorder_Mean",
    "original_glcm_Contrast",
    "original_shape_Elongation",
    "original_glszm_ZoneEntropy",
]


def planted(n_per=60, seed=0):
    """Two classes. cnn_0: a real association with Mean, weaker within the classes (pooled 0.70, within
    0.52); cnn_1: only the class shift of Contrast (confounded); cnn_2: +Elongation in benign, -Elongation
    in malignant; cnn_3: noise."""
    rng = np.random.default_rng(seed)
    n = 2 * n_per
    label = np.repeat([0, 1], n_per)
    cases = [f"case{i:03d}" for i in range(n)]
    a, b, c, d = rng.normal(size=(4, n))
    rad = pd.DataFrame(
        {
            RADIOMIC[0]: a + 1.5 * label,
            RADIOMIC[1]: b + 3 * label,
            RADIOMIC[2]: c,
            RADIOMIC[3]: d,
        },
        index=cases,
    )
    deep = pd.DataFrame(
        {
            "cnn_0": a + 1.6 * rng.normal(size=n) + 2.5 * label,
            "cnn_1": 3 * label + 0.8 * rng.normal(size=n),
            "cnn_2": np.where(label == 0, c, -c) + 0.3 * rng.normal(size=n),
            "cnn_3": rng.normal(size=n),
        },
        index=cases,
    )
    strata = pd.Series(np.where(label == 0, "benign", "malignant"), index=cases, name="label")
    return deep, rad, strata


@pytest.fixture(scope="module")
def result():
    deep, rad, strata = planted()
    return explain(
        deep,
        rad,
        ExplainConfig(thresholds=[0.6], fdr=0.05, permutations=99, bootstrap=0, backend="numpy"),
        strata=strata,
    )


def _pair(result, deep, radiomic):
    pairs = result.correlations
    return pairs[(pairs["deep_feature"] == deep) & (pairs["radiomic_feature"] == radiomic)].iloc[0]


# ------------------------------------------------------------------------------ attenuated, confounded
def test_a_real_association_weaker_within_strata_is_attenuated_not_confounded(result):
    pair = _pair(result, "cnn_0", RADIOMIC[0])
    assert pair["rho"] >= 0.6 and 0.4 < pair["rho_within"] < 0.6 and pair["q_within"] < 1e-3
    assert pair["status"] == "attenuated"
    row = result.explanations.loc["cnn_0"]
    assert row["status"] == "attenuated" and row["n_attenuated"] == 1
    assert row["summary"].startswith("attenuated:") and "associated within label too" in row["summary"]
    summary = result.summary()
    assert summary["n_attenuated"] == 1 and summary["n_pairs_attenuated"] == 1


def test_a_class_driven_pair_is_confounded(result):
    pair = _pair(result, "cnn_1", RADIOMIC[1])
    assert pair["rho"] >= 0.6 and pair["q_within"] > 0.05 and pair["status"] == "confounded"
    row = result.explanations.loc["cnn_1"]
    assert row["status"] == "confounded" and "no significant association within label" in row["summary"]
    assert result.summary()["n_confounded"] == 1


# --------------------------------------------------------------------------------- strata that disagree
def test_a_sign_flip_between_strata_is_reversed_though_its_mean_is_near_zero(result):
    pair = _pair(result, "cnn_2", RADIOMIC[2])
    assert abs(pair["rho"]) < 0.2 and abs(pair["rho_within"]) < 0.2  # the mean hides it
    assert pair["rho_stratum_min"] < -0.85 and pair["rho_stratum_max"] > 0.85
    assert pair["p_heterogeneity"] < 1e-6 and pair["status"] == "reversed"
    row = result.explanations.loc["cnn_2"]
    assert row["status"] == "reversed" and "disagree in sign" in row["summary"]
    assert result.explanations.loc["cnn_3", "status"] == "unexplained"
    assert {"rho_stratum_min", "rho_stratum_max", "p_heterogeneity", "q_heterogeneity"} <= set(
        result.correlations.columns
    )


def test_heterogeneity_written_and_read_back(result, tmp_path):
    write_explanation(result, tmp_path)
    again = load_explanation(tmp_path)
    pd.testing.assert_frame_equal(again.correlations, result.correlations)
    assert (tmp_path / "p_heterogeneity_within.npy").is_file()


def test_pooled_and_within_of_opposite_sign_is_reversed():
    """Simpson's paradox: four strata shifted against the within-stratum relation."""
    rng = np.random.default_rng(3)
    group = np.repeat(np.arange(4), 30)
    cases = [f"c{i}" for i in range(len(group))]
    d = rng.normal(size=len(group))
    rad = pd.DataFrame({RADIOMIC[3]: d - 6 * group}, index=cases)
    deep = pd.DataFrame({"cnn_0": d + 0.3 * rng.normal(size=len(group)) + 6 * group}, index=cases)
    strata = pd.Series(group.astype(str), index=cases, name="site")
    out = explain(
        deep,
        rad,
        ExplainConfig(thresholds=[0.6], fdr=0.05, bootstrap=0, backend="numpy", permutations=0),
        strata=strata,
    )
    pair = out.correlations.iloc[0]
    assert pair["rho"] <= -0.6 and pair["rho_within"] >= 0.9 and pair["status"] == "reversed"
    assert out.explanations.loc["cnn_0", "status"] == "reversed" and out.n_explained == 0


def test_the_heterogeneity_test_is_cochrans_q_on_fisher_z():
    deep, rad, strata = planted(n_per=30, seed=5)
    within = spearman_within(deep, rad, strata, backend="numpy")
    from scipy import stats

    i, j = 2, 2
    rhos, sizes = [], []
    for name in ("benign", "malignant"):
        cases = strata.index[strata == name]
        rhos.append(stats.spearmanr(deep.loc[cases].iloc[:, i], rad.loc[cases].iloc[:, j])[0])
        sizes.append(len(cases))
    z, w = np.arctanh(rhos), (np.array(sizes) - 3) / 1.06
    q = (w * (z - (w * z).sum() / w.sum()) ** 2).sum()
    assert within.rho_min[i, j] == pytest.approx(min(rhos)) and within.rho_max[i, j] == pytest.approx(
        max(rhos)
    )
    assert within.p_heterogeneity[i, j] == pytest.approx(stats.chi2.sf(q, 1), rel=1e-6)


def test_small_strata_left_out_below_min_stratum():
    deep, rad, strata = planted(n_per=30)
    strata = strata.copy()
    strata.iloc[:4] = "tiny"
    default = spearman_within(deep, rad, strata, backend="numpy")
    assert default.small_strata == {"tiny": 4} and default.n_cases == 56
    loose = spearman_within(deep, rad, strata, backend="numpy", min_stratum=3)
    assert loose.small_strata == {} and loose.n_cases == 60


# ---------------------------------------------------------------------------------- which error, which count
def test_each_count_says_which_error_it_controls_and_the_fwer_count_is_given(caplog):
    rng = np.random.default_rng(0)
    cases = [f"c{i}" for i in range(60)]
    deep = pd.DataFrame(rng.normal(size=(60, 30)), index=cases, columns=[f"cnn_{i}" for i in range(30)])
    names = [f"original_firstorder_F{i}" for i in range(20)]
    rad = pd.DataFrame(rng.normal(size=(60, 20)), index=cases, columns=names)
    with caplog.at_level(logging.WARNING):
        out = explain(
            deep,
            rad,
            ExplainConfig(thresholds=[0.3], fdr=None, permutations=99, bootstrap=0, backend="numpy"),
        )
    summary = out.summary()
    # Pure noise: M = 0.3 is below the permutation threshold and "explains" many features by chance ...
    assert summary["M_below_permutation_threshold"] == ["cnn"] and summary["n_explained"] >= 5
    assert "not above the permutation threshold" in caplog.text
    # ... while the count under the permutation threshold holds the feature-level family-wise error.
    assert summary["n_explained_fwer"] <= 1 and set(summary["n_explained_fwer_by_model"]) <= {"cnn"}
    control = summary["error_control"]
    assert "no feature-level error control" in control["n_explained"]
    assert "pair-level false discovery rate" in control["n_pairs_kept"]
    assert "family-wise error" in control["n_explained_fwer"]


def test_one_denominator_for_the_fraction_explained(result):
    deep, rad, strata = planted()
    deep = deep.assign(cnn_9=1.0)  # a constant feature: counted apart, out of the fraction
    out = explain(
        deep,
        rad,
        ExplainConfig(thresholds=[0.6], fdr=0.05, bootstrap=0, backend="numpy", permutations=0),
        strata=strata,
    )
    by_m = threshold_table(out, [0.6]).iloc[0]
    coverage = out.coverage.set_index("M").loc[0.6]
    assert by_m["n_constant"] == 1 and by_m["n_varying"] == 4
    assert (by_m["n_reversed"], by_m["n_confounded"], by_m["n_attenuated"]) == (1, 1, 1)
    assert by_m["fraction_explained"] == pytest.approx(coverage["fraction"])


# ------------------------------------------------------------------------------------------- the control
CONTROL_RADIOMIC = [
    "original_firstorder_Mean",
    "original_firstorder_Median",
    "original_glcm_Contrast",
    "original_glcm_Idm",
    "original_glszm_ZoneEntropy",
    "original_glrlm_RunEntropy",
]


def control_tables(n=80, seed=0, control_like_trained=False):
    rng = np.random.default_rng(seed)
    cases = [f"c{i}" for i in range(n)]
    rad = pd.DataFrame(rng.normal(size=(n, 6)), index=cases, columns=CONTROL_RADIOMIC)
    trained = {f"cnn_{i}": rad.iloc[:, i] + 0.4 * rng.normal(size=n) for i in range(6)}
    trained.update({f"cnn_{i}": rng.normal(size=n) for i in range(6, 8)})
    if control_like_trained:
        control = {f"cnn-random_{i}": rad.iloc[:, i] + 0.4 * rng.normal(size=n) for i in range(6)}
    else:
        control = {f"cnn-random_{i}": rng.normal(size=n) for i in range(6)}
    control.update({f"cnn-random_{i}": rng.normal(size=n) for i in range(6, 8)})
    return pd.DataFrame({**trained, **control}, index=cases), rad


@pytest.mark.parametrize("like", [False, True])
def test_the_control_comparison_has_an_interval_and_a_verdict(like):
    deep, rad = control_tables(control_like_trained=like)
    out = explain(
        deep, rad, ExplainConfig(thresholds=[0.6], fdr=0.05, bootstrap=0, backend="numpy", permutations=0)
    )
    pairs = {"cnn": "cnn-random"}
    table = coverage_against_control(out.coverage, pairs)
    intervals = control_gain_bootstrap(out, deep, rad, pairs, [0.6], n_boot=60)
    table = table.merge(intervals, on=["model", "control", "M"])
    row = table.iloc[0]
    assert row["gain_ci_low"] <= row["gain_ci_high"] and row["n_boot"] == 60
    (verdict,) = control_verdicts(table, 0.6)
    if like:  # the control is explained as often: the interval includes zero
        assert row["gain"] == pytest.approx(0, abs=0.2) and row["gain_ci_low"] <= 0 <= row["gain_ci_high"]
        assert not verdict["specific"] and NOT_SPECIFIC in verdict["text"]
    else:
        assert row["gain"] == pytest.approx(0.75) and row["gain_ci_low"] > 0.4
        assert verdict["specific"] and "training added explanations" in verdict["text"]


# --------------------------------------------------------------------------------------- the command
def _write(tmp_path, deep, rad, manifest, m="0.6"):
    deep.to_csv(tmp_path / "deep.csv", index_label="case_id")
    rad.to_csv(tmp_path / "rad.csv", index_label="case_id")
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    return [
        "explain",
        "--deep",
        str(tmp_path / "deep.csv"),
        "--radiomics",
        str(tmp_path / "rad.csv"),
        "--manifest",
        str(tmp_path / "manifest.csv"),
        "-M",
        m,
        "--permutations",
        "0",
        "--bootstrap",
        "0",
        "--backend",
        "numpy",
        "--no-progress",
        "--stratify",
        "label",
    ]


def _manifest(cases, labels, cohort="internal", split="train"):
    return pd.DataFrame(
        {
            "case_id": cases,
            "image": "none.png",
            "mask": "none_mask.png",
            "label": labels,
            "cohort": cohort,
            "split": split,
        }
    )


def test_an_unused_unlabelled_case_does_not_stop_explain(tmp_path, capsys):
    deep, rad, strata = planted()
    manifest = pd.concat(
        [
            _manifest(list(deep.index), list(strata)),
            # An external case without a label and without features: never used.
            _manifest(["ext_001"], [""], cohort="external", split="test"),
        ]
    )
    argv = _write(tmp_path, deep, rad, manifest)
    assert main([*argv, "--cases", "all", "--out", str(tmp_path / "o")]) == 0
    summary = json.loads((tmp_path / "o" / "explanation.json").read_text())
    assert summary["strata"]["sizes"] == {"benign": 60, "malignant": 60} and summary["n_attenuated"] == 1
    printed = capsys.readouterr().out
    assert "1 reversed, 1 confounded, 1 attenuated" in printed and "n_explained: " in printed
    # explain.cases all: said in the log, the terminal and explanation.json
    assert "test cases are among the cases explained" in summary["test_cases_warning"]
    assert "warning: explain.cases all" in printed


def test_a_held_out_case_without_a_label_is_left_out_of_the_re_measurement(tmp_path, capsys):
    deep, rad, strata = planted()
    split = np.where(np.arange(len(deep)) % 4 == 0, "test", "train")
    labels = list(strata)
    labels[0] = ""  # a test case (held out) without a label
    argv = _write(tmp_path, deep, rad, _manifest(list(deep.index), labels, split=split), m="0.4")
    assert main([*argv, "--cases", "train", "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "case(s) without a value in the stratum column(s) label are left out: case000" in err
    held = pd.read_csv(tmp_path / "o" / "heldout.csv")
    assert held["n_cases"].tolist() == [29]
    summary = json.loads((tmp_path / "o" / "explanation.json").read_text())
    assert summary["n_cases"] == 90 and summary.get("test_cases_warning") is None


def test_the_command_writes_the_control_interval_and_verdict(tmp_path, capsys):
    deep, rad = control_tables()
    cases = list(deep.index)
    labels = ["benign" if i % 2 else "malignant" for i in range(len(cases))]
    argv = _write(tmp_path, deep, rad, _manifest(cases, labels))
    out = tmp_path / "o"
    assert main([*argv, "--cases", "all", "--control-bootstrap", "30", "--out", str(out)]) == 0
    control = pd.read_csv(out / "control_coverage.csv")
    assert {"gain", "gain_ci_low", "gain_ci_high", "n_boot"} <= set(control.columns)
    (verdict,) = json.loads((out / "explanation.json").read_text())["control_verdicts"]
    assert verdict["specific"] and verdict["model"] == "cnn" and verdict["M"] == 0.6
    assert "control: cnn: training added explanations" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------- the report
def _report(out):
    from Rad4XCNNLogic.run.config import config_from_dict
    from Rad4XCNNLogic.run.report import write_report

    return write_report(out, config_from_dict({}), {}, []).read_text(encoding="utf-8")


def test_the_report_names_attenuated_and_reversed_pairs_and_each_counts_error(tmp_path):
    pytest.importorskip("jinja2")  # the report's template engine (not in the light Python 3.12 set)
    deep, rad, strata = planted()
    argv = _write(tmp_path, deep, rad, _manifest(list(deep.index), list(strata)))
    out = tmp_path / "o"
    assert main([*argv, "--cases", "all", "--permutations", "99", "--out", str(out)]) == 0
    html = _report(out)
    assert "Attenuated pairs (1;" in html and "Reversed pairs: strata that disagree (1;" in html
    assert "smallest rho in a stratum" in html and "no significant association" in html
    assert "Which error each count controls" in html and "no feature-level error control" in html
    assert "left out and counted apart (cnn 0)" in html
    assert "explain.cases all: the test cases are among the cases explained" in html
    assert "is not above the max-|rho| permutation threshold" not in html
    argv[argv.index("-M") + 1] = "0.2"  # below the permutation threshold (about 0.26 on 120 cases)
    assert main([*argv, "--cases", "all", "--permutations", "99", "--out", str(out)]) == 0
    assert "is not above the max-|rho| permutation threshold" in _report(out)


@pytest.mark.parametrize("like", [False, True])
def test_the_report_opens_with_the_control_verdict(tmp_path, like):
    pytest.importorskip("jinja2")  # the report's template engine (not in the light Python 3.12 set)
    deep, rad = control_tables(control_like_trained=like)
    cases = list(deep.index)
    labels = ["benign" if i % 2 else "malignant" for i in range(len(cases))]
    argv = _write(tmp_path, deep, rad, _manifest(cases, labels))
    out = tmp_path / "o"
    assert main([*argv, "--cases", "all", "--control-bootstrap", "30", "--out", str(out)]) == 0
    html = _report(out)
    verdict = html.index("training added explanations" if not like else NOT_SPECIFIC)
    assert verdict < html.index("How to read this report")
    assert ('class="bad"><b>cnn: ' + NOT_SPECIFIC in html) == like
    assert "gain_ci_low" in html


def test_the_verdict_is_at_the_primary_m_even_off_the_coverage_grid(tmp_path):
    deep, rad = control_tables()
    cases = list(deep.index)
    labels = ["benign" if i % 2 else "malignant" for i in range(len(cases))]
    argv = _write(tmp_path, deep, rad, _manifest(cases, labels), m="0.62")
    out = tmp_path / "o"
    assert main([*argv, "--cases", "all", "--control-bootstrap", "20", "--out", str(out)]) == 0
    (verdict,) = json.loads((out / "explanation.json").read_text())["control_verdicts"]
    assert verdict["M"] == 0.62 and verdict["specific"]
    control = pd.read_csv(out / "control_coverage.csv")
    assert 0.62 in set(control["M"]) and len(control) == 14
