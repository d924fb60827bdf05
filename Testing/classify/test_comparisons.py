"""Paired comparisons of feature sets: DeLong against independent computations, the pairs derived from set
names, a set against itself, the table written by classify, and the choice of classifier by CV AUC."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from Rad4XCNNLogic.classify.classifiers import INTERNAL_TEST, classify, write_classification
from Rad4XCNNLogic.classify.comparisons import (
    COMPARISON_COLUMNS,
    ComparisonPair,
    backbone_family,
    choose_pairs,
    compare_feature_sets,
    comparison_pairs,
    delong_covariance,
    delong_test,
    holm,
    named_pairs,
    select_by_cv,
)
from Rad4XCNNLogic.classify.metrics import evaluation_rng, stratified_bootstrap_weights, weighted_metrics
from Rad4XCNNLogic.classify.settings import ClassificationConfig
from Rad4XCNNLogic.cohort.manifest import Case, Cohort, assign_splits
from Rad4XCNNLogic.errors import Rad4XCNNError

QUICK = {"progress": False, "grids": {"rf": {"n_estimators": [100]}}}
QUICK_SETTINGS = ClassificationConfig(n_bootstrap=200, jobs=1)


def _breast_cancer(n_external: int = 120):
    """Wisconsin diagnostic breast cancer: an internal cohort split 70/10/20 and an external cohort."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    ids = [f"wdbc{i:03d}" for i in range(len(data.target))]
    frame = pd.DataFrame(data.data, index=ids, columns=[f"f{j:02d}" for j in range(data.data.shape[1])])
    labels = np.where(data.target == 0, "malignant", "benign")
    external = set(np.random.default_rng(0).choice(len(ids), n_external, replace=False).tolist())
    cases = [
        Case(cid, Path("x"), (), label=labels[k], cohort="external" if k in external else "internal")
        for k, cid in enumerate(ids)
    ]
    return frame, Cohort(assign_splits(cases))


# ------------------------------------------------------------------------------------------ DeLong
def test_delong_small_example_by_hand():
    # positives score (0.4, 0.9) with a, (0.5, 0.8) with b; negatives (0.1, 0.6) with a, (0.2, 0.3) with b.
    # Structural components (DeLong 1988): V10 of a positive = share of negatives it outranks, V01 of a
    # negative = share of positives that outrank it.
    #   a: V10 = (1/2, 1), V01 = (1, 1/2), AUC 3/4;  b: V10 = (1, 1), V01 = (1, 1), AUC 1.
    #   var(AUC_a) = s10/m + s01/n = 0.125/2 + 0.125/2 = 0.125; b has no variance, no covariance with a.
    #   delta = -1/4, SE = sqrt(0.125), z = -0.7071, p = 2 (1 - Phi(0.7071)) = 0.4795
    y = np.array([0, 0, 1, 1])
    a = np.array([0.1, 0.6, 0.4, 0.9])
    b = np.array([0.2, 0.3, 0.5, 0.8])
    aucs, cov = delong_covariance(y, np.vstack([a, b]))
    np.testing.assert_allclose(aucs, [0.75, 1.0])
    np.testing.assert_allclose(cov, [[0.125, 0.0], [0.0, 0.0]], atol=1e-12)
    result = delong_test(y, a, b)
    assert result.delta == pytest.approx(-0.25)
    assert result.se == pytest.approx(np.sqrt(0.125))
    assert result.z == pytest.approx(-0.25 / np.sqrt(0.125))
    assert result.p == pytest.approx(0.4795, abs=1e-4)


def _delong_by_definition(y, scores):
    """DeLong's covariance from its O(m n) definition (kernel psi = 1, 1/2, 0), without ranks."""
    y = np.asarray(y).astype(bool)
    pos, neg = scores[:, y], scores[:, ~y]
    psi = (pos[:, :, None] > neg[:, None, :]) + 0.5 * (pos[:, :, None] == neg[:, None, :])
    v10, v01 = psi.mean(axis=2), psi.mean(axis=1)
    return psi.mean(axis=(1, 2)), np.cov(v10) / y.sum() + np.cov(v01) / (~y).sum()


def test_fast_delong_equals_the_definition_with_ties():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 80)
    scores = np.vstack([np.round(rng.normal(size=80) + y, 1), np.round(rng.normal(size=80) + 0.5 * y, 1)])
    aucs, cov = delong_covariance(y, scores)
    ref_aucs, ref_cov = _delong_by_definition(y, scores)
    np.testing.assert_allclose(aucs, ref_aucs, atol=1e-12)
    np.testing.assert_allclose(cov, ref_cov, atol=1e-12)
    from sklearn.metrics import roc_auc_score

    assert aucs[1] == pytest.approx(roc_auc_score(y, scores[1]))


def test_delong_standard_error_agrees_with_the_bootstrap_on_large_n():
    rng = np.random.default_rng(0)
    n = 1500
    y = rng.integers(0, 2, n)
    shared = rng.normal(size=n)
    a = y + shared + rng.normal(size=n)
    b = 0.7 * y + shared + rng.normal(size=n)
    result = delong_test(y, a, b)
    weights = stratified_bootstrap_weights(y, 2000, np.random.default_rng(1))
    dummy = np.full((n, 2), 0.5)
    diff = (
        weighted_metrics(y, dummy, weights, score=a)["auc"]
        - weighted_metrics(y, dummy, weights, score=b)["auc"]
    )
    assert result.se == pytest.approx(diff.std(ddof=1), rel=0.08)
    # and the p-value is the normal tail at the bootstrap z, to the same precision
    assert result.p == pytest.approx(2 * norm.sf(abs(result.delta) / diff.std(ddof=1)), rel=0.5)
    assert result.p < 0.01


def test_delong_of_identical_scores_and_bad_input():
    y = np.array([0, 1, 0, 1, 1])
    s = np.array([0.3, 0.2, 0.1, 0.9, 0.5])
    same = delong_test(y, s, s)
    assert (same.delta, same.se, same.p) == (0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="positive and negative"):
        delong_covariance(np.ones(3), np.arange(3.0))
    with pytest.raises(ValueError, match="expected scores with 5 cases"):
        delong_covariance(y, np.arange(4.0))


# ------------------------------------------------------------------------------------------ pairs
def test_backbone_family_from_the_timm_name():
    assert [backbone_family(m) for m in ("resnet50", "densenet121", "efficientnet_b0", "convnext_tiny")] == [
        "cnn"
    ] * 4
    vits = ("vit_base_patch32_224", "deit_small_patch16_224", "swin_tiny_patch4_window7_224")
    assert [backbone_family(m) for m in vits] == ["vit"] * 3
    assert backbone_family("vit_base_patch32_224-random") == "vit"


def test_pairs_of_one_backbone():
    names = ["deep", "radiomic", "deep+radiomic", "explained-deep", "clinical"]
    assert comparison_pairs(names) == [
        ComparisonPair("deep", "radiomic", "deep-vs-radiomic"),
        ComparisonPair("deep+radiomic", "deep", "combined-vs-deep"),
        ComparisonPair("explained-deep", "deep", "explained-vs-deep"),
    ]
    assert comparison_pairs(["clinical", "radiomic"]) == []


def test_pairs_of_several_backbones_with_controls():
    names = [
        "deep-resnet50",
        "radiomic",
        "deep-resnet50+radiomic",
        "explained-deep-resnet50",
        "deep-vit_base_patch32_224",
        "deep-densenet121",
        "deep-resnet50-random",
        "deep-dn-imagenet",
    ]
    found = comparison_pairs(names, controls={"densenet121": "dn-imagenet"})
    pairs = {(p.set_a, p.set_b): p.kind for p in found}
    assert pairs == {
        ("deep-resnet50", "radiomic"): "deep-vs-radiomic",
        ("deep-vit_base_patch32_224", "radiomic"): "deep-vs-radiomic",
        ("deep-densenet121", "radiomic"): "deep-vs-radiomic",
        ("deep-resnet50", "deep-vit_base_patch32_224"): "cnn-vs-vit",
        ("deep-densenet121", "deep-vit_base_patch32_224"): "cnn-vs-vit",
        ("deep-resnet50+radiomic", "deep-resnet50"): "combined-vs-deep",
        ("explained-deep-resnet50", "deep-resnet50"): "explained-vs-deep",
        ("deep-densenet121", "deep-dn-imagenet"): "trained-vs-control",
        ("deep-resnet50", "deep-resnet50-random"): "trained-vs-control",
    }


# ------------------------------------------------------------------------------------------ tables
@pytest.fixture(scope="module")
def named_result():
    frame, cohort = _breast_cancer()
    named = frame.iloc[:, :12].copy()
    named.columns = [f"cnn_{j}" for j in range(6)] + [f"original_glcm_F{j}" for j in range(6)]
    result = classify(
        named,
        cohort,
        replace(QUICK_SETTINGS, classifiers=("svm", "rf")),
        explained=["cnn_0", "cnn_3"],
        **QUICK,
    )
    return result


def test_classify_writes_the_comparisons(named_result, tmp_path):
    table = named_result.comparisons
    assert list(table.columns) == list(COMPARISON_COLUMNS)
    assert set(zip(table["set_a"], table["set_b"], strict=True)) == {
        ("deep", "radiomic"),
        ("deep+radiomic", "deep"),
        ("explained-deep", "deep"),
    }
    assert len(table) == 3 * 2 * 2  # pairs x classifiers x evaluation sets
    metrics = named_result.metrics.set_index(["feature_set", "classifier", "evaluated_on"])
    for row in table.itertuples():
        assert row.auc_a == pytest.approx(metrics.loc[(row.set_a, row.classifier, row.evaluated_on), "auc"])
        assert row.auc_b == pytest.approx(metrics.loc[(row.set_b, row.classifier, row.evaluated_on), "auc"])
        assert row.delta_auc == pytest.approx(row.auc_a - row.auc_b)
        assert row.ci_low < row.ci_high and 0 <= row.p_delong <= 1
    paths = write_classification(named_result, tmp_path)
    written = pd.read_csv(paths["comparisons"])
    assert list(written.columns) == list(COMPARISON_COLUMNS)
    assert len(written) == len(table)


def test_comparison_uses_the_draws_of_the_per_set_intervals(named_result):
    # the per-set AUC interval of classification.csv is recovered from the same draws the delta used
    preds = named_result.predictions
    part = preds.query("feature_set == 'deep' and classifier == 'svm' and evaluated_on == 'external'")
    y = (part["label"] == "malignant").to_numpy().astype(int)
    weights = stratified_bootstrap_weights(y, QUICK_SETTINGS.n_bootstrap, evaluation_rng(0, "external"))
    boot = weighted_metrics(y, np.full((len(y), 2), 0.5), weights, score=part["score"].to_numpy())["auc"]
    row = named_result.metrics.set_index(["feature_set", "classifier", "evaluated_on"]).loc[
        ("deep", "svm", "external")
    ]
    assert row["auc_ci_low"] == pytest.approx(np.quantile(boot, 0.025))
    assert row["auc_ci_high"] == pytest.approx(np.quantile(boot, 0.975))


def test_a_set_compared_with_itself(named_result):
    same = compare_feature_sets(
        named_result.predictions,
        classes=named_result.classes,
        pairs=[ComparisonPair("deep", "deep", "self")],
        n_bootstrap=300,
    )
    assert len(same) == 4
    assert (same["delta_auc"] == 0).all()
    assert ((same["ci_low"] <= 0) & (same["ci_high"] >= 0)).all()
    assert (same["p_delong"] == 1).all()


def test_multiclass_comparison_has_no_delong_p():
    from sklearn.datasets import load_wine

    data = load_wine()
    ids = [f"w{i:03d}" for i in range(len(data.target))]
    frame = pd.DataFrame(
        data.data[:, :6],
        index=ids,
        columns=[f"cnn_{j}" for j in range(3)] + [f"original_firstorder_F{j}" for j in range(3)],
    )
    cohort = Cohort(
        assign_splits([Case(i, Path("x"), (), label=f"c{k}") for i, k in zip(ids, data.target, strict=True)])
    )
    result = classify(frame, cohort, replace(QUICK_SETTINGS, classifiers=("svm",), cv_folds=3), **QUICK)
    table = result.comparisons
    assert table[["set_a", "set_b"]].values.tolist() == [["deep", "radiomic"], ["deep+radiomic", "deep"]]
    assert table["p_delong"].isna().all() and (table["ci_low"] < table["ci_high"]).all()


def test_no_pairs_gives_an_empty_table(named_result):
    preds = named_result.predictions
    only = compare_feature_sets(
        preds[preds["feature_set"] == "deep"], classes=named_result.classes, n_bootstrap=300
    )
    assert list(only.columns) == list(COMPARISON_COLUMNS) and only.empty


def test_select_by_cv_never_looks_at_test_auc(named_result):
    metrics = named_result.metrics
    chosen = select_by_cv(metrics)
    assert chosen["feature_set"].tolist() == ["deep", "radiomic", "deep+radiomic", "explained-deep"]
    for row in chosen.itertuples():
        cvs = metrics[metrics["feature_set"] == row.feature_set].groupby("classifier")["cv_auc"].first()
        assert row.cv_auc == cvs.max() and row.classifier == cvs.idxmax()
    # a classifier with the better test AUC but the worse CV AUC is not chosen
    rigged = pd.DataFrame(
        {
            "feature_set": ["deep"] * 4,
            "classifier": ["rf", "rf", "svm", "svm"],
            "evaluated_on": [INTERNAL_TEST, "external"] * 2,
            "cv_auc": [0.91, 0.91, 0.80, 0.80],
            "auc": [0.70, 0.70, 0.99, 0.99],
        }
    )
    assert select_by_cv(rigged)[["classifier", "cv_auc"]].values.tolist() == [["rf", 0.91]]


# ------------------------------------------------------------------------------------------ multiplicity
def _null_predictions(rng, n_sets: int = 5, n_cases: int = 80, classifiers=("rf", "svm")) -> pd.DataFrame:
    """Predictions of ``n_sets`` feature sets unrelated to the labels (a global null), two classifiers."""
    labels = np.where(np.arange(n_cases) < n_cases // 2, "benign", "malignant")
    rows = []
    for clf in classifiers:
        for k in range(n_sets):
            score = rng.random(n_cases)
            rows.append(
                pd.DataFrame(
                    {
                        "case_id": [f"c{i:03d}" for i in range(n_cases)],
                        "feature_set": f"set{k}",
                        "classifier": clf,
                        "evaluated_on": INTERNAL_TEST,
                        "label": labels,
                        "p_benign": 1 - score,
                        "p_malignant": score,
                        "score": score,
                    }
                )
            )
    return pd.concat(rows, ignore_index=True)


def test_family_adjustment_controls_the_family_wise_rate_under_a_global_null():
    # features unrelated to labels, five sets: every pair (10) x 2 classifiers = one family of 20 comparisons.
    # Read one by one, some interval leaves 0 in far more than 5% of the runs; the simultaneous band and
    # Holm's p keep the chance of any false claim near 5%.
    rng = np.random.default_rng(7)
    runs, any_raw, any_band, any_holm = 40, 0, 0, 0
    for _ in range(runs):
        table = compare_feature_sets(
            _null_predictions(rng),
            classes=["benign", "malignant"],
            n_bootstrap=200,
            seed=int(rng.integers(1e6)),
        )
        assert list(table.columns) == list(COMPARISON_COLUMNS)
        assert (table["family"] == "all-pairs").all() and (table["family_size"] == 20).all()
        any_raw += bool(((table["ci_low"] > 0) | (table["ci_high"] < 0)).any())
        any_band += bool(((table["sim_ci_low"] > 0) | (table["sim_ci_high"] < 0)).any())
        any_holm += bool((table["p_holm"] < 0.05).any())
    assert any_raw / runs >= 0.3
    assert any_band / runs <= 0.15 and any_holm / runs <= 0.15


def test_holm_and_the_band_are_never_narrower_than_one_comparison():
    table = compare_feature_sets(
        _null_predictions(np.random.default_rng(1), n_sets=3),
        classes=["benign", "malignant"],
        n_bootstrap=300,
    )
    assert (table["p_holm"] >= table["p_delong"] - 1e-12).all() and (table["p_holm"] <= 1).all()
    half = (table["sim_ci_high"] - table["sim_ci_low"]) / 2
    assert np.allclose(table["sim_ci_low"] + half, table["delta_auc"])  # centred on the difference
    # the band's half-width is at least each comparison's own 95% quantile of |d_b - delta|
    preds = _null_predictions(np.random.default_rng(1), n_sets=3)
    y = (preds.query("feature_set == 'set0' and classifier == 'rf'")["label"] == "malignant").to_numpy(int)
    weights = stratified_bootstrap_weights(y, 300, evaluation_rng(0, INTERNAL_TEST))

    def boot(name, clf):
        part = preds.query("feature_set == @name and classifier == @clf")
        return weighted_metrics(y, np.full((len(y), 2), 0.5), weights, score=part["score"].to_numpy())["auc"]

    for row, h in zip(table.itertuples(), half, strict=True):
        own = np.quantile(
            np.abs(boot(row.set_a, row.classifier) - boot(row.set_b, row.classifier) - row.delta_auc), 0.95
        )
        assert h >= own - 1e-9
    # Holm by hand on one small family
    assert holm([0.01, 0.04, 0.03]).tolist() == pytest.approx([0.03, 0.06, 0.06])


def test_families_are_claims_per_evaluation_set(named_result):
    table = named_result.comparisons
    # deep-vs-radiomic, combined-vs-deep, explained-vs-deep, each on two evaluation sets, two classifiers
    sizes = table.groupby(["family", "evaluated_on"])["family_size"].agg(["first", "size"])
    assert len(sizes) == 6 and (sizes["first"] == sizes["size"]).all() and (sizes["size"] == 2).all()
    assert ((table["sim_ci_low"] <= table["ci_low"] + 0.05) & (table["p_holm"] >= table["p_delong"])).all()


# ------------------------------------------------------------------------------------------ named pairs
def test_named_pairs_and_every_pair_when_no_rule_applies():
    assert [(p.set_a, p.set_b, p.kind) for p in choose_pairs(["means", "worst", "error"])] == [
        ("means", "worst", "all-pairs"),
        ("means", "error", "all-pairs"),
        ("worst", "error", "all-pairs"),
    ]
    assert [(p.set_a, p.set_b, p.kind) for p in choose_pairs(["deep", "radiomic"], ["radiomic:deep"])] == [
        ("radiomic", "deep", "named")
    ]
    with pytest.raises(Rad4XCNNError, match=r"no feature set 'wrst'; the sets are means, worst$"):
        named_pairs(["means:wrst"], ["means", "worst"])
    with pytest.raises(Rad4XCNNError, match="is not A:B"):
        named_pairs(["means-worst"], ["means", "worst"])
