"""Classification and validation: real-data accuracy, no leakage, reproducibility, CIs, every bad input."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from Rad4XCNNLogic.classify.classifiers import (
    INTERNAL_TEST,
    classify,
    infer_feature_sets,
    permutation_importance_batched,
    read_explained,
    read_feature_tables,
    write_classification,
)
from Rad4XCNNLogic.classify.feature_filter import (
    TrainingFeatureFilter,
    near_zero_variance,
    univariate_pvalues,
)
from Rad4XCNNLogic.classify.metrics import (
    METRICS,
    evaluate_predictions,
    stratified_bootstrap_weights,
    weighted_metrics,
)
from Rad4XCNNLogic.classify.settings import ClassificationConfig
from Rad4XCNNLogic.cli import main
from Rad4XCNNLogic.cohort.manifest import Case, Cohort, assign_splits
from Rad4XCNNLogic.errors import Rad4XCNNError

# small but real: the default grids with fewer trees, one process
FAST = {"rf": {"n_estimators": [100]}, "xgb": {"n_estimators": [100]}}
QUICK = {"progress": False, "grids": FAST}
QUICK_SETTINGS = ClassificationConfig(n_bootstrap=200, jobs=1)


def _breast_cancer(n_external: int = 120, seed: int = 0):
    """Wisconsin diagnostic breast cancer (569 cases, 30 features): internal 70/10/20 + an external cohort."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    ids = [f"wdbc{i:03d}" for i in range(len(data.target))]
    frame = pd.DataFrame(data.data, index=ids, columns=[f"f{j:02d}" for j in range(data.data.shape[1])])
    labels = np.where(data.target == 0, "malignant", "benign")
    external = set(np.random.default_rng(seed).choice(len(ids), n_external, replace=False).tolist())
    cases = [
        Case(
            cid,
            image=Path("x"),
            masks=(),
            label=labels[k],
            cohort="external" if k in external else "internal",
        )
        for k, cid in enumerate(ids)
    ]
    return frame, Cohort(assign_splits(cases, seed=seed))


def _toy_cohort(labels, splits, cohorts=None):
    cohorts = cohorts or ["internal"] * len(labels)
    return Cohort(
        [
            Case(f"c{i:03d}", image=Path("x"), masks=(), label=lab, split=sp, cohort=co)
            for i, (lab, sp, co) in enumerate(zip(labels, splits, cohorts, strict=True))
        ]
    )


def _toy_features(cohort, seed=0, p=4):
    rng = np.random.default_rng(seed)
    y = np.array([c.label == "malignant" for c in cohort.cases], dtype=float)
    data = rng.normal(size=(len(cohort), p)) + y[:, None]
    return pd.DataFrame(data, index=cohort.case_ids, columns=[f"cnn_{j}" for j in range(p)])


@pytest.fixture(scope="module")
def bc():
    return _breast_cancer()


@pytest.fixture(scope="module")
def bc_result(bc):
    frame, cohort = bc
    return classify(frame, cohort, QUICK_SETTINGS, feature_sets={"all": list(frame.columns)}, **QUICK)


# ------------------------------------------------------------------------------------------ real data
def test_real_data_auc_in_line_with_published(bc_result):
    m = bc_result.metrics.set_index(["classifier", "evaluated_on"])
    assert sorted(bc_result.metrics["evaluated_on"].unique()) == ["external", INTERNAL_TEST]
    # published AUCs on this data set are about 0.99 for RF and SVM, ~0.99 for gradient boosting
    for clf in ("rf", "xgb", "svm"):
        for where in (INTERNAL_TEST, "external"):
            assert m.loc[(clf, where), "auc"] > 0.97, (clf, where)
            assert m.loc[(clf, where), "accuracy"] > 0.9, (clf, where)
        assert m.loc[(clf, INTERNAL_TEST), "cv_auc"] > 0.97
    assert bc_result.classes == ["benign", "malignant"]
    assert bc_result.counts == {
        "train": 359,
        f"evaluated_on:{INTERNAL_TEST}": 90,
        "evaluated_on:external": 120,
    }
    assert (m["n_cases"].xs(INTERNAL_TEST, level=1) == 90).all()


def test_intervals_bracket_the_estimates_on_a_large_test_set(bc_result):
    # not a rule (intervals are reported as computed, and may miss the estimate with very few cases), but
    # what 90-120 cases and 200 resamples must give
    m = bc_result.metrics
    for metric in METRICS:
        assert (m[f"{metric}_ci_low"] <= m[metric]).all(), metric
        assert (m[metric] <= m[f"{metric}_ci_high"]).all(), metric
        assert (m[f"{metric}_ci_high"] - m[f"{metric}_ci_low"] > 0).any(), metric


def test_metrics_table_matches_sklearn_on_the_predictions(bc_result):
    from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score, roc_auc_score

    pred = bc_result.predictions
    rows = bc_result.metrics.set_index(["feature_set", "classifier", "evaluated_on"])
    for (fs, clf, where), group in pred.groupby(["feature_set", "classifier", "evaluated_on"]):
        y = (group["label"] == "malignant").to_numpy()
        called = (group["predicted"] == "malignant").to_numpy()
        row = rows.loc[(fs, clf, where)]
        assert row["auc"] == pytest.approx(roc_auc_score(y, group["score"]))
        if clf != "svm":  # the SVM ranks by its decision function, see test_svm_auc_...
            assert np.array_equal(group["score"], group["p_malignant"])
        assert row["sensitivity"] == pytest.approx(recall_score(y, called))
        assert row["specificity"] == pytest.approx(recall_score(~y, ~called))
        assert row["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, called))
        assert row["f1"] == pytest.approx(f1_score(y, called))
        assert np.array_equal(called, group["p_malignant"].to_numpy() >= 0.5)


def test_roc_points_and_importances(bc_result):
    roc = bc_result.roc
    assert set(roc["class"]) == {"malignant"}
    for _, curve in roc.groupby(["feature_set", "classifier", "evaluated_on"]):
        assert curve["fpr"].iloc[0] == 0 and curve["tpr"].iloc[-1] == 1
        assert curve["fpr"].is_monotonic_increasing and curve["tpr"].is_monotonic_increasing
    imp = bc_result.importances
    assert set(imp["method"]) == {"permutation", "model"}
    assert set(imp.loc[imp["method"] == "model", "classifier"]) == {"rf", "xgb"}  # SVM has no own importance
    perm = imp[(imp["method"] == "permutation")]
    assert set(perm["evaluated_on"]) == {INTERNAL_TEST}
    assert perm.groupby("classifier").size().to_dict() == {"rf": 30, "svm": 30, "xgb": 30}
    # every classifier relies on something: the strongest feature's AUC drop is clearly positive
    assert (perm.groupby("classifier")["importance_mean"].max() > 0.0).all()
    own = imp[(imp["method"] == "model") & (imp["classifier"] == "rf")]
    assert own["importance_mean"].sum() == pytest.approx(1.0)
    dropped = imp[~imp["selected"]]
    assert (dropped["importance_mean"] == 0).all()


def test_same_seed_same_results_and_jobs_do_not_matter(bc):
    frame, cohort = bc
    kw = {**QUICK, "feature_sets": {"all": list(frame.columns)}}
    a = classify(frame, cohort, QUICK_SETTINGS, seed=3, **kw)
    b = classify(frame, cohort, replace(QUICK_SETTINGS, jobs=2), seed=3, **kw)
    for name in ("metrics", "roc", "importances", "predictions"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    assert a.best_params == b.best_params
    c = classify(frame, cohort, replace(QUICK_SETTINGS, classifiers=["rf"]), seed=4, **kw)
    rf = a.predictions[a.predictions["classifier"] == "rf"].reset_index(drop=True)
    assert c.predictions["case_id"].equals(rf["case_id"])
    assert not np.array_equal(c.predictions["p_malignant"], rf["p_malignant"])
    ci_rf = a.metrics.loc[a.metrics["classifier"] == "rf", "auc_ci_low"]
    assert not np.array_equal(c.metrics["auc_ci_low"], ci_rf)


def test_write_classification(bc_result, tmp_path):
    paths = write_classification(bc_result, tmp_path / "run")
    table = pd.read_csv(paths["classification"], index_col=0)
    assert list(table.columns[:2]) == ["classifier", "evaluated_on"] and table.index.name == "feature_set"
    for metric in METRICS:
        assert {metric, f"{metric}_ci_low", f"{metric}_ci_high"} <= set(table.columns)
    assert len(table) == 6
    assert pd.read_csv(paths["roc"]).columns.tolist() == [
        "feature_set",
        "classifier",
        "evaluated_on",
        "class",
        "fpr",
        "tpr",
        "threshold",
    ]
    assert len(pd.read_csv(paths["importances"])) == len(bc_result.importances)
    assert pd.read_csv(paths["predictions"], index_col=0).index.name == "case_id"
    info = json.loads(paths["json"].read_text())
    assert info["best_params"]["all/svm"]["C"] in (0.1, 1.0, 10.0, 100.0)
    assert info["settings"]["seed"] == 0 and info["classes"] == ["benign", "malignant"]
    assert not list((tmp_path / "run").glob(".*tmp"))


# ------------------------------------------------------------------------------------------ leakage
WEAKER = ["f01", "f04", "f08", "f09", "f11", "f14", "f18", "f19", "f29"]  # texture, smoothness, symmetry...


def _planted(cohort, seed=1):
    """A feature that is pure noise on training cases and separates the classes on every held-out case
    (its sign is the class), with the same N(0, 1) distribution everywhere; and its control, which has the
    same values on training and the same magnitudes, with random signs, on held-out cases."""
    rng = np.random.default_rng(seed)
    y = np.array([c.label == "malignant" for c in cohort.cases])
    held_out = np.array([c.split == "test" for c in cohort.cases])
    noise, size, coin = rng.normal(size=len(y)), np.abs(rng.normal(size=len(y))), rng.random(len(y)) < 0.5
    leak = np.where(held_out, np.where(y, size, -size), noise)
    control = np.where(held_out, np.where(coin, size, -size), noise)
    return pd.Series(leak, index=cohort.case_ids), pd.Series(control, index=cohort.case_ids)


def _auc(result):
    return result.metrics.set_index(["classifier", "evaluated_on"])["auc"]


@pytest.fixture(scope="module")
def leak_runs(bc):
    frame, cohort = bc
    leak, control = _planted(cohort)
    sets = {"all": [*WEAKER, "planted"]}
    with_leak = frame[WEAKER].assign(planted=leak)
    return {
        "leak": classify(with_leak, cohort, QUICK_SETTINGS, feature_sets=sets, **QUICK),
        "control": classify(
            frame[WEAKER].assign(planted=control), cohort, QUICK_SETTINGS, feature_sets=sets, **QUICK
        ),
        "leak_selected": classify(
            with_leak, cohort, replace(QUICK_SETTINGS, select_k=5), feature_sets=sets, **QUICK
        ),
        # what the check must catch: held-out cases seen in training
        "cheat": classify(
            with_leak,
            cohort,
            QUICK_SETTINGS,
            feature_sets=sets,
            train_splits=("train", "val", "test"),
            **QUICK,
        ),
    }


def test_a_feature_predictive_only_on_held_out_data_does_not_help(bc, leak_runs):
    frame, cohort = bc
    leak, control = _auc(leak_runs["leak"]), _auc(leak_runs["control"])
    assert (leak - control).abs().max() < 0.03
    # the planted feature alone has AUC 1 on held-out data; the models do not get near it
    assert (leak < 0.98).all()
    # held-out values changed, training values did not: everything learnt must be the same
    held_out = frame.loc[[c.case_id for c in cohort.cases if c.split == "test"], WEAKER].assign(planted=0.5)
    for clf in ("rf", "xgb", "svm"):
        a, b = leak_runs["leak"].models[("all", clf)], leak_runs["control"].models[("all", clf)]
        np.testing.assert_array_equal(
            a.predict_proba(held_out.to_numpy()), b.predict_proba(held_out.to_numpy())
        )
        np.testing.assert_array_equal(a.named_steps["filter"].medians_, b.named_steps["filter"].medians_)
    assert leak_runs["leak"].best_params == leak_runs["control"].best_params
    assert np.array_equal(
        leak_runs["leak"].models[("all", "svm")].named_steps["scale"].mean_,
        leak_runs["control"].models[("all", "svm")].named_steps["scale"].mean_,
    )
    # a univariate selection learnt on training data never picks it
    imp = leak_runs["leak_selected"].importances
    assert not imp.loc[imp["feature"] == "planted", "selected"].any()
    # and the check has teeth: with the held-out cases in training, the models use the feature
    assert (_auc(leak_runs["cheat"]).xs(INTERNAL_TEST, level=1) > 0.99).all()


def test_univariate_selection_fitted_on_all_data_would_pick_the_planted_feature(bc):
    frame, cohort = bc
    y_all = np.array([c.label == "malignant" for c in cohort.cases], dtype=float)
    held_out = np.array([c.split == "test" for c in cohort.cases])
    strong = np.where(held_out, 6 * y_all - 3, np.random.default_rng(0).normal(size=len(y_all)))
    leaky = frame[WEAKER].assign(leak=pd.Series(strong, index=cohort.case_ids))
    y = np.array([c.label == "malignant" for c in cohort.cases], dtype=int)
    on_all = TrainingFeatureFilter(select_k=1).fit(leaky.loc[cohort.case_ids].to_numpy(), y)
    assert np.array(leaky.columns)[on_all.support_].tolist() == ["leak"]
    train = np.array([c.split != "test" for c in cohort.cases])
    on_train = TrainingFeatureFilter(select_k=1).fit(leaky.loc[cohort.case_ids].to_numpy()[train], y[train])
    assert np.array(leaky.columns)[on_train.support_].tolist() != ["leak"]


def test_variance_filter_imputation_and_scaler_are_learnt_on_training_only(bc, bc_result):
    frame, cohort = bc
    is_train = np.array([c.cohort == "internal" and c.split in ("train", "val") for c in cohort.cases])
    y = np.array([c.label == "malignant" for c in cohort.cases], dtype=float)
    # constant on training, perfectly predictive on every held-out case
    extra = frame.assign(flat=pd.Series(np.where(is_train, 0.0, y * 10), index=cohort.case_ids))
    # missing on every held-out case: filled with the training median
    extra["gappy"] = np.where(is_train, np.arange(len(y)) % 7, np.nan)
    result = classify(
        extra,
        cohort,
        replace(QUICK_SETTINGS, classifiers=("svm",)),
        feature_sets={"all": list(extra.columns)},
        **QUICK,
    )
    imp = result.importances
    assert not imp.loc[imp["feature"] == "flat", "selected"].any()
    pipe = result.models[("all", "svm")]
    support = pipe.named_steps["filter"].support_
    train_ids = [cid for cid, t in zip(cohort.case_ids, is_train, strict=True) if t]
    X_train = extra.loc[train_ids].to_numpy()
    np.testing.assert_allclose(pipe.named_steps["scale"].mean_, X_train[:, support].mean(axis=0))
    gappy = list(extra.columns).index("gappy")
    assert pipe.named_steps["filter"].medians_[gappy] == np.median(X_train[:, gappy])
    base = bc_result.metrics.set_index(["classifier", "evaluated_on"])["auc"].xs("svm")
    assert (result.metrics.set_index("evaluated_on")["auc"] - base).abs().max() < 0.01


def test_svm_auc_uses_its_decision_function_when_platt_scaling_reverses_it():
    # weak, noisy features: the SVM's cross-validated decision values anti-correlate with the label, so
    # Platt's sigmoid comes out decreasing; the SVM fitted on all training cases still ranks well
    rng = np.random.default_rng(0)
    n = 260
    y = (rng.random(n) < 210 / 647).astype(int)
    latent = rng.normal(size=(n, 16))
    latent[:, :2] += 0.8 * y[:, None]
    deep = np.maximum(latent @ rng.normal(size=(16, 256)) * 0.3 + rng.normal(size=(n, 256)), 0)[:, ::4]
    ids = [f"case{i:05d}" for i in range(n)]
    frame = pd.DataFrame(deep, index=ids, columns=[f"resnet50_{k}" for k in range(deep.shape[1])])
    labels = np.array(["benign", "malignant"])[y]
    cohort = Cohort(
        assign_splits(
            [
                Case(c, Path("x"), (), str(lab), cohort="internal" if i < 200 else "external")
                for i, (c, lab) in enumerate(zip(ids, labels, strict=True))
            ]
        )
    )
    result = classify(frame, cohort, replace(QUICK_SETTINGS, classifiers=("svm",)), **QUICK)
    assert [w["problem"].split(" (")[0] for w in result.warnings] == ["Platt scaling came out decreasing"]
    pipe = result.models[("deep", "svm")]
    svc = pipe.named_steps["clf"].calibrated_classifiers_[0].estimator
    from sklearn.metrics import roc_auc_score

    ext = [c.case_id for c in cohort.cases if c.cohort == "external"]
    decision = svc.decision_function(pipe[:-1].transform(frame.loc[ext].to_numpy()))
    auc = result.metrics.set_index("evaluated_on").loc["external", "auc"]
    assert auc == pytest.approx(roc_auc_score(y[200:], decision)) and auc > 0.7
    p_malignant = pipe.predict_proba(frame.loc[ext].to_numpy())[:, 1]
    assert roc_auc_score(y[200:], p_malignant) < 0.5  # what the reversed probabilities would have said


# ------------------------------------------------------------------------------------------ multi-class
@pytest.fixture(scope="module")
def wine():
    from sklearn.datasets import load_wine

    data = load_wine()
    ids = [f"w{i:03d}" for i in range(len(data.target))]
    frame = pd.DataFrame(data.data, index=ids, columns=[f"v{j}" for j in range(data.data.shape[1])])
    names = np.array(["barolo", "grignolino", "barbera"])[data.target]
    cases = [Case(cid, Path("x"), (), label=str(lab)) for cid, lab in zip(ids, names, strict=True)]
    return frame, Cohort(assign_splits(cases, seed=0))


def test_multiclass_one_vs_rest(wine):
    frame, cohort = wine
    result = classify(
        frame,
        cohort,
        replace(QUICK_SETTINGS, classifiers=("svm", "rf")),
        feature_sets={"all": list(frame.columns)},
        **QUICK,
    )
    assert result.classes == ["barbera", "barolo", "grignolino"]
    assert result.settings["task"].startswith("multiclass")
    assert (result.metrics["auc"] > 0.97).all()
    assert set(result.roc["class"]) == set(result.classes)
    assert {"p_barbera", "p_barolo", "p_grignolino"} <= set(result.predictions.columns)
    row = result.metrics.iloc[0]
    assert row["balanced_accuracy"] == pytest.approx(row["sensitivity"])


def test_multiclass_evaluation_set_lacking_a_class(wine):
    from sklearn.metrics import roc_auc_score

    frame, cohort = wine
    # 30 barolo / grignolino cases become an external cohort without barbera
    moved = [c.case_id for c in cohort.cases if c.label != "barbera" and c.split == "train"][::4][:30]
    cases = [Case(c.case_id, c.image, (), c.label, "test" if c.case_id in moved else c.split,
                  "external" if c.case_id in moved else "internal") for c in cohort.cases]  # fmt: skip
    result = classify(
        frame,
        Cohort(cases),
        replace(QUICK_SETTINGS, classifiers=("svm",)),
        feature_sets={"all": list(frame.columns)},
        **QUICK,
    )
    row = result.metrics.set_index("evaluated_on").loc["external"]
    pred = result.predictions[result.predictions["evaluated_on"] == "external"]
    expected = np.mean([roc_auc_score(pred["label"] == c, pred[f"p_{c}"]) for c in ("barolo", "grignolino")])
    assert row["auc"] == pytest.approx(expected)
    assert np.isfinite(row[[m for m in METRICS]].astype(float)).all()


def test_positive_class_by_name_makes_a_binary_task(wine):
    frame, cohort = wine
    result = classify(
        frame,
        cohort,
        replace(QUICK_SETTINGS, classifiers=("svm",), positive="barolo"),
        feature_sets={"all": list(frame.columns)},
        **QUICK,
    )
    assert result.classes == ["not-barolo", "barolo"]
    assert (result.metrics["auc"] > 0.97).all()
    with pytest.raises(Rad4XCNNError, match="positive class 'nebbiolo' is not a label"):
        classify(
            frame, cohort, replace(QUICK_SETTINGS, positive="nebbiolo"), feature_sets={"all": ["v0"]}, **QUICK
        )


# ------------------------------------------------------------------------------------------ metrics
def test_weighted_metrics_equal_sklearn_point_and_resample():
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 150)
    p = np.round(np.clip(0.35 * y + 0.65 * rng.random(150), 0, 1), 2)  # rounding makes ties
    proba = np.c_[1 - p, p]
    w = stratified_bootstrap_weights(y, 5, rng)
    assert (w @ (y == 1) == (y == 1).sum()).all()  # class sizes kept
    boot = weighted_metrics(y, proba, w)
    for b in range(5):
        idx = np.repeat(np.arange(150), w[b].astype(int))
        assert boot["auc"][b] == pytest.approx(roc_auc_score(y[idx], p[idx]))
        assert boot["accuracy"][b] == pytest.approx(accuracy_score(y[idx], p[idx] >= 0.5))
        assert boot["f1"][b] == pytest.approx(f1_score(y[idx], p[idx] >= 0.5))
    y3 = rng.integers(0, 3, 90)
    p3 = rng.dirichlet([1, 1, 1], 90)
    assert weighted_metrics(y3, p3, np.ones((1, 90)))["auc"][0] == pytest.approx(
        roc_auc_score(y3, p3, multi_class="ovr")
    )


def test_bootstrap_ci_is_seeded_and_reported_as_computed():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(8, int), np.ones(4, int)]
    p = rng.random(12)
    a = evaluate_predictions(y, np.c_[1 - p, p], n_bootstrap=300, rng=5)
    b = evaluate_predictions(y, np.c_[1 - p, p], n_bootstrap=300, rng=5)
    assert a == b
    # the bounds are the percentiles of the resampled metric, exactly: never widened towards the estimate
    boot = weighted_metrics(
        y, np.c_[1 - p, p], stratified_bootstrap_weights(y, 300, np.random.default_rng(5))
    )
    for name, est in a.items():
        expected = np.nanquantile(boot[name], [0.025, 0.975])
        assert (est.ci_low, est.ci_high) == pytest.approx(tuple(expected), abs=1e-12), name
    none = evaluate_predictions(y, np.c_[1 - p, p], n_bootstrap=0)
    assert np.isnan(none["auc"].ci_low) and none["auc"].value == a["auc"].value


# ------------------------------------------------------------------------------------------ pieces
def test_feature_names_and_default_sets():
    one = infer_feature_sets(["resnet50_0", "resnet50_1", "original_firstorder_Mean", "diagnostics_x"])
    assert one == {
        "deep": ["resnet50_0", "resnet50_1"],
        "radiomic": ["original_firstorder_Mean"],
        "deep+radiomic": ["resnet50_0", "resnet50_1", "original_firstorder_Mean"],
    }
    two = infer_feature_sets(
        ["resnet50_0", "densenet121_0", "densenet121_1", "original_glcm_Contrast"],
        explained=["densenet121_1"],
    )
    assert list(two) == [
        "deep-resnet50",
        "radiomic",
        "deep-resnet50+radiomic",
        "deep-densenet121",
        "deep-densenet121+radiomic",
        "explained-deep-densenet121",
    ]
    assert two["explained-deep-densenet121"] == ["densenet121_1"]


def test_default_sets_inferred_in_classify(bc):
    frame, cohort = bc
    named = frame.iloc[:, :8].copy()
    named.columns = [f"cnn_{j}" for j in range(4)] + [f"original_firstorder_F{j}" for j in range(4)]
    result = classify(
        named, cohort, replace(QUICK_SETTINGS, classifiers=("svm",)), explained=["cnn_1", "cnn_3"], **QUICK
    )
    assert list(result.feature_sets) == ["deep", "radiomic", "deep+radiomic", "explained-deep"]
    assert result.metrics.groupby("feature_set")["n_features"].first().to_dict() == {
        "deep": 4,
        "radiomic": 4,
        "deep+radiomic": 8,
        "explained-deep": 2,
    }


def test_near_zero_variance_and_univariate_p():
    X = np.c_[np.arange(50.0), np.r_[np.zeros(48), 1, 2], np.full(50, 3.0), np.r_[np.zeros(25), np.ones(25)]]
    assert near_zero_variance(X).tolist() == [False, True, True, False]
    y = np.r_[np.zeros(25, int), np.ones(25, int)]
    p = univariate_pvalues(X, y)
    assert p[3] < 1e-6 and p[2] == 1.0


def test_filter_drops_the_weaker_of_two_correlated_features():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 30)
    strong = y + 0.3 * rng.normal(size=60)
    X = np.c_[2 * strong + 1e-3 * rng.normal(size=60), strong, rng.normal(size=60)]
    f = TrainingFeatureFilter(correlation_threshold=0.95).fit(X, y)
    assert f.support_.sum() == 2 and f.support_[2]
    f_off = TrainingFeatureFilter(correlation_threshold=None).fit(X, y)
    assert f_off.support_.all()
    f_k = TrainingFeatureFilter(correlation_threshold=None, select_k=1).fit(X, y)
    assert f_k.transform(X).shape == (60, 1) and not f_k.support_[2]


def test_batched_permutation_importance_agrees_with_sklearn():
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.inspection import permutation_importance

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 6))
    y = (X[:, 0] + 0.5 * X[:, 1] + 0.3 * rng.normal(size=200) > 0).astype(int)
    model = RandomForestClassifier(50, random_state=0).fit(X[:120], y[:120])
    mine, _ = permutation_importance_batched(model, X[120:], y[120:], n_repeats=20, rng=0, batch_bytes=10_000)
    theirs = permutation_importance(model, X[120:], y[120:], scoring="roc_auc", n_repeats=20, random_state=0)
    np.testing.assert_allclose(mine, theirs.importances_mean, atol=0.02)
    assert mine[0] > mine[1] > max(mine[2:])
    masked, _ = permutation_importance_batched(
        model, X[120:], y[120:], n_repeats=3, columns=np.r_[True, False, True, True, True, True]
    )
    assert masked[1] == 0


def test_svm_permutation_shortcut_equals_the_generic_computation():
    from sklearn.svm import SVC

    rng = np.random.default_rng(0)
    X = rng.normal(size=(160, 40))
    y = (X[:, 0] + X[:, 1] + rng.normal(size=160) > 0).astype(int)
    svm = SVC(gamma="scale", class_weight="balanced").fit(X[:100], y[:100])

    class Opaque:  # only the decision function shows: the generic, copy-and-predict path runs
        def decision_function(self, Z):
            return svm.decision_function(Z)

    kw = {"n_repeats": 4, "rng": 3, "method": "decision_function"}
    fast = permutation_importance_batched(svm, X[100:], y[100:], **kw)
    generic = permutation_importance_batched(Opaque(), X[100:], y[100:], **kw)
    np.testing.assert_allclose(fast, generic, atol=1e-12)
    assert fast[0][:2].min() > max(fast[0][2:])


def test_forest_permutation_shortcut_equals_the_generic_computation():
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(1)
    X = rng.normal(size=(160, 60))
    y = (X[:, 0] + X[:, 1] + rng.normal(size=160) > 0).astype(int)
    forest = RandomForestClassifier(40, min_samples_leaf=3, class_weight="balanced", random_state=0)
    forest.fit(X[:100], y[:100])

    class Opaque:  # only predict_proba shows: the generic, copy-and-predict path runs
        def predict_proba(self, Z):
            return forest.predict_proba(Z)

    kw = {"n_repeats": 3, "rng": 5}
    fast = permutation_importance_batched(forest, X[100:], y[100:], **kw)
    generic = permutation_importance_batched(Opaque(), X[100:], y[100:], **kw)
    # the same up to the order of floating-point sums, which can break an exact tie between two cases
    np.testing.assert_allclose(fast, generic, atol=1e-3)
    assert fast[0][:2].min() > np.percentile(fast[0][2:], 90)


def test_read_feature_tables_joins_on_case_id(tmp_path):
    pd.DataFrame({"case_id": ["001", "002", "003"], "resnet50_0": [1.0, 2.0, 3.0]}).to_csv(
        tmp_path / "deep.csv", index=False
    )
    pd.DataFrame({"case_id": ["003", "001", "004"], "original_glcm_Contrast": [5.0, 6.0, 7.0]}).to_csv(
        tmp_path / "rad.csv", index=False
    )
    frame, failures = read_feature_tables([tmp_path / "deep.csv", tmp_path / "rad.csv"])
    assert sorted(frame.index) == ["001", "003"]  # ids stay strings: "001" is not 1
    assert frame.loc["003"].tolist() == [3.0, 5.0]
    assert {f.case_id: f.problem for f in failures} == {
        "002": "no row in rad.csv",
        "004": "no row in deep.csv",
    }
    with pytest.raises(Rad4XCNNError, match=r"'resnet50_0' is in both deep\.csv and deep\.csv"):
        read_feature_tables([tmp_path / "deep.csv", tmp_path / "deep.csv"])
    pd.DataFrame({"case_id": ["1", "1"], "a": [1, 2]}).to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(Rad4XCNNError, match=r"dup\.csv repeats case_id '1'"):
        read_feature_tables([tmp_path / "dup.csv"])
    with pytest.raises(Rad4XCNNError, match="feature table not found"):
        read_feature_tables([tmp_path / "nope.csv"])


def test_read_explained(tmp_path):
    path = tmp_path / "explanations.csv"
    pd.DataFrame(
        {"deep_feature": ["resnet50_0", "resnet50_1", "resnet50_2"], "n_partners": [3, 0, 1]}
    ).to_csv(path, index=False)
    assert read_explained(path) == ["resnet50_0", "resnet50_2"]
    pd.DataFrame({"deep_feature": ["a"]}).to_csv(path, index=False)
    with pytest.raises(Rad4XCNNError, match="lacks the column n_partners"):
        read_explained(path)


# ------------------------------------------------------------------------------------------ bad input
BINARY = ["benign", "malignant"]


def _balanced(n_train=20, n_test=10, n_ext=0):
    labels = [BINARY[i % 2] for i in range(n_train + n_test + n_ext)]
    splits = ["train"] * n_train + ["test"] * (n_test + n_ext)
    cohorts = ["internal"] * (n_train + n_test) + ["external"] * n_ext
    return _toy_cohort(labels, splits, cohorts)


TOY = {"progress": False}
TOY_SETTINGS = ClassificationConfig(n_bootstrap=50, jobs=1, classifiers=["svm"], cv_folds=3)


def test_single_class_split_is_an_error_naming_it():
    cohort = _toy_cohort(["benign"] * 20 + BINARY * 5, ["train"] * 20 + ["test"] * 10)
    with pytest.raises(
        Rad4XCNNError, match=r"training split \(cohort internal, train\+val\) has a single class"
    ):
        classify(_toy_features(cohort), cohort, TOY_SETTINGS, **TOY)
    cohort = _toy_cohort(BINARY * 10 + ["benign"] * 6, ["train"] * 20 + ["test"] * 6)
    with pytest.raises(
        Rad4XCNNError, match=r"evaluation set internal-test .* single class \('benign', 6 cases\)"
    ):
        classify(_toy_features(cohort), cohort, TOY_SETTINGS, **TOY)
    cohort = _toy_cohort(
        BINARY * 15 + ["malignant"] * 4, ["train"] * 20 + ["test"] * 14, ["internal"] * 30 + ["external"] * 4
    )
    with pytest.raises(
        Rad4XCNNError, match="evaluation set external \\(cohort external\\) has a single class"
    ):
        classify(_toy_features(cohort), cohort, TOY_SETTINGS, **TOY)


def test_missing_labels_are_left_out_and_counted():
    cohort = _balanced(n_ext=10)
    features = _toy_features(cohort)
    unlabelled = {"c001", "c025", "c033"}
    cohort = Cohort(
        [
            Case(c.case_id, c.image, (), None if c.case_id in unlabelled else c.label, c.split, c.cohort)
            for c in cohort.cases
        ]
    )
    cohort.cases.append(Case("normal1", Path("x"), (), "normal", "train", has_lesion=False))
    # an external case used elsewhere for training (e.g. fine-tuning the network) is not held out
    cohort.cases[-2] = Case(
        cohort.cases[-2].case_id, Path("x"), (), cohort.cases[-2].label, "train", "external"
    )
    result = classify(features, cohort, TOY_SETTINGS, **TOY)
    assert result.counts["left_out:no_lesion"] == 1  # no features, as expected: counted, not a failure
    assert result.counts["left_out:no_label"] == 3
    assert result.counts["left_out:not_held_out"] == 1
    assert {f.case_id for f in result.failures} == unlabelled
    assert all(f.problem == "no label" and f.stage == "classify" for f in result.failures)
    assert result.counts["train"] == 19
    n = result.metrics.set_index("evaluated_on")["n_cases"]
    assert n[INTERNAL_TEST] == 9 and n["external"] == 8


def test_too_few_cases_for_the_folds():
    cohort = _toy_cohort(["benign"] * 16 + ["malignant"] * 4 + BINARY * 5, ["train"] * 20 + ["test"] * 10)
    with pytest.raises(
        Rad4XCNNError, match=r"too few cases for 5-fold cross-validation: .* 4 'malignant' case"
    ):
        classify(_toy_features(cohort), cohort, replace(TOY_SETTINGS, cv_folds=5), **TOY)
    result = classify(_toy_features(cohort), cohort, replace(TOY_SETTINGS, cv_folds=4), **TOY)
    assert len(result.metrics) == 1


def test_feature_ids_that_do_not_match_the_manifest():
    cohort = _balanced(n_ext=6)
    features = _toy_features(cohort)
    other = features.set_axis([f"x{i}" for i in range(len(features))])
    with pytest.raises(
        Rad4XCNNError, match="none of the 36 case ids of the feature table is in the manifest"
    ):
        classify(other, cohort, TOY_SETTINGS, **TOY)
    # some extra rows, some cases without features: left out and counted
    partial = pd.concat([features.drop(["c002", "c031"]), other.iloc[:2]])
    result = classify(partial, cohort, TOY_SETTINGS, **TOY)
    assert result.counts["left_out:not_in_manifest"] == 2
    assert result.counts["left_out:no_features"] == 2
    problems = {f.case_id: f.problem for f in result.failures}
    assert problems["x0"] == "has features but is not in the manifest"
    assert problems["c031"] == "no features (not in the feature table)"


def test_other_bad_arguments():
    cohort = _balanced()
    features = _toy_features(cohort)
    with pytest.raises(
        Rad4XCNNError,
        match=r"^classification\.classifiers\[0\]: 'knn' is not allowed; allowed values: rf, xgb, svm",
    ):
        classify(features, cohort, replace(TOY_SETTINGS, classifiers=("knn",)), **TOY)
    with pytest.raises(
        Rad4XCNNError, match=r"feature set 'a': 1 column\(s\) not in the feature table, e\.g\. 'zz'"
    ):
        classify(features, cohort, TOY_SETTINGS, feature_sets={"a": ["cnn_0", "zz"]}, **TOY)
    generic = classify(
        features.set_axis(["age", "size", "depth", "site"], axis=1), cohort, TOY_SETTINGS, **TOY
    )
    assert generic.feature_sets == {"other": ["age", "size", "depth", "site"]}
    with pytest.raises(Rad4XCNNError, match="no numeric feature column in the feature table"):
        classify(features.astype(str), cohort, TOY_SETTINGS, **TOY)
    with pytest.raises(Rad4XCNNError, match=r"^classification\.cv_folds: must be at least 2, got 1"):
        classify(features, cohort, replace(TOY_SETTINGS, cv_folds=1), **TOY)


def test_a_failing_feature_set_does_not_stop_the_others():
    cohort = _balanced()
    features = _toy_features(cohort).assign(flat=1.0)
    result = classify(
        features, cohort, TOY_SETTINGS, feature_sets={"good": ["cnn_0", "cnn_1"], "flat": ["flat"]}, **TOY
    )
    assert result.metrics["feature_set"].tolist() == ["good"]
    assert result.task_failures == [
        {
            "feature_set": "flat",
            "classifier": "svm",
            "problem": "none of the 1 features varies on the training data (all near-constant)",
        }
    ]


# ------------------------------------------------------------------------------------------ CLI
def test_cli_classify(tmp_path, capsys, bc):
    frame, cohort = bc
    deep = frame.iloc[:, :6].set_axis([f"cnn_{j}" for j in range(6)], axis=1)
    rad = frame.iloc[:, 6:12].set_axis([f"original_glcm_F{j}" for j in range(6)], axis=1)
    deep.drop(index="wdbc005").rename_axis("case_id").to_csv(tmp_path / "deep_features.csv")
    rad.rename_axis("case_id").to_csv(tmp_path / "radiomics.csv")
    rows = [
        {
            "case_id": c.case_id,
            "image": "x.png",
            "mask": "x_mask.png",
            "label": c.label,
            "split": c.split,
            "cohort": c.cohort,
        }
        for c in cohort.cases
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    pd.DataFrame({"deep_feature": ["cnn_0", "cnn_1", "cnn_2"], "n_partners": [2, 0, 1]}).to_csv(
        tmp_path / "explanations.csv", index=False
    )
    args = ["classify", "--features", str(tmp_path / "deep_features.csv"), str(tmp_path / "radiomics.csv"),
            "--manifest", str(tmp_path / "manifest.csv"), "--out", str(tmp_path / "out"),
            "--explained", str(tmp_path / "explanations.csv"), "--classifiers", "svm", "--cv-folds", "3",
            "--bootstrap", "50", "--jobs", "1"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "classes: benign / malignant" in out and "left_out:missing_from_a_feature_table 1" in out
    table = pd.read_csv(tmp_path / "out" / "classification.csv", index_col=0)
    assert sorted(set(table.index)) == ["deep", "deep+radiomic", "explained-deep", "radiomic"]
    assert (table["auc"] > 0.85).all()
    info = json.loads((tmp_path / "out" / "classification.json").read_text())
    assert info["failures"] == [
        {"case_id": "wdbc005", "stage": "classify", "problem": "no row in deep_features.csv"}
    ]


def test_cli_classify_bad_input_is_one_line(tmp_path, capsys):
    pd.DataFrame({"case_id": ["a", "b"], "resnet50_0": [1, 2]}).to_csv(tmp_path / "f.csv", index=False)
    pd.DataFrame(
        {"case_id": ["x", "y"], "image": ["i", "i"], "mask": ["m", "m"], "label": ["0", "1"]}
    ).to_csv(tmp_path / "m.csv", index=False)
    code = main(["classify", "--features", str(tmp_path / "f.csv"), "--manifest", str(tmp_path / "m.csv"),
                 "--out", str(tmp_path / "o")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and "none of the 2 case ids of the feature table is in the manifest" in err
