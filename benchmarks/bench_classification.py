"""Benchmark of the classification stage against plain scikit-learn, measured in the same run.

On a BUSI-sized feature table (647 lesion cases, 437 benign / 210 malignant; 2048 ReLU-like deep features
and 474 radiomic features sharing latent factors with a label), it times:

1. the stratified-bootstrap metrics (6 metrics, 1,000 resamples) against a loop of scikit-learn metric
   calls on the same resamples, and checks that the values agree;
2. the batched permutation importance of a random forest against
   ``sklearn.inspection.permutation_importance`` (AUC scoring, same repeats);
3. the whole :func:`classify` (4 feature sets x 3 classifiers, CV grid search, refit, evaluation on the
   internal test split and an external cohort, bootstrap CIs, importances) against a bare
   ``GridSearchCV`` of the same classifiers, grids and folds on the same data (no feature filter, no
   refit, no evaluation, no importances): the ratio is what everything around the model search costs;
4. the paired comparisons between feature sets (bootstrap differences of AUC on the draws of the per-set
   intervals, and DeLong's test; ``comparisons.csv``) beside the classification stage that produced their
   predictions (target: under 5% of it).

    python benchmarks/bench_classification.py           # BUSI-sized, minutes on 2 cores
    python benchmarks/bench_classification.py --quick   # 200 cases, 256 + 100 features, seconds
    python benchmarks/bench_classification.py --comparisons-only   # 4. alone
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import timed

from Rad4XCNNLogic.classify.classifiers import DEFAULT_GRIDS, classify, permutation_importance_batched
from Rad4XCNNLogic.classify.comparisons import compare_feature_sets
from Rad4XCNNLogic.classify.metrics import evaluate_predictions, stratified_bootstrap_weights
from Rad4XCNNLogic.classify.settings import ClassificationConfig
from Rad4XCNNLogic.cohort.manifest import Case, Cohort, assign_splits


def make_cohort(n: int, n_deep: int, n_rad: int, n_external: int, seed: int = 0):
    """Deep (ReLU-like) and radiomic features that share 16 latent factors, two of which carry the label."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n + n_external) < 210 / 647).astype(int)
    latent = rng.normal(size=(n + n_external, 16))
    latent[:, :2] += 0.8 * y[:, None]
    deep = latent @ rng.normal(size=(16, n_deep)) * 0.3 + rng.normal(size=(n + n_external, n_deep))
    np.maximum(deep, 0, out=deep)
    rad = latent @ rng.normal(size=(16, n_rad)) * 0.3 + rng.normal(size=(n + n_external, n_rad))
    ids = [f"case{i:05d}" for i in range(n + n_external)]
    frame = pd.concat(
        [
            pd.DataFrame(deep, index=ids, columns=[f"resnet50_{k}" for k in range(n_deep)]),
            pd.DataFrame(rad, index=ids, columns=[f"original_firstorder_F{k}" for k in range(n_rad)]),
        ],
        axis=1,
    )
    labels = np.array(["benign", "malignant"])[y]
    cases = [
        Case(cid, Path("x"), (), label=str(lab), cohort="internal" if i < n else "external")
        for i, (cid, lab) in enumerate(zip(ids, labels, strict=True))
    ]
    explained = [f"resnet50_{k}" for k in range(0, n_deep, 4)]
    return frame, Cohort(assign_splits(cases, seed=seed)), explained


def bench_bootstrap(n_test: int, n_bootstrap: int) -> None:
    from sklearn import metrics as skm

    rng = np.random.default_rng(0)
    y = (rng.random(n_test) < 0.33).astype(int)
    p = np.clip(0.3 * y + 0.7 * rng.random(n_test), 0, 1)
    proba = np.c_[1 - p, p]
    t_ours, ours = timed(lambda: evaluate_predictions(y, proba, n_bootstrap=n_bootstrap, rng=1), repeat=5)
    weights = stratified_bootstrap_weights(y, n_bootstrap, np.random.default_rng(1))

    def sklearn_loop():
        aucs = []
        for w in weights:
            idx = np.repeat(np.arange(n_test), w.astype(int))
            yy, pp = y[idx], p[idx]
            called = pp >= 0.5
            aucs.append(skm.roc_auc_score(yy, pp))
            skm.accuracy_score(yy, called)
            skm.balanced_accuracy_score(yy, called)
            skm.recall_score(yy, called)
            skm.recall_score(1 - yy, ~called)
            skm.f1_score(yy, called)
        return np.quantile(aucs, [0.025, 0.975])

    t_sk, (lo, hi) = timed(sklearn_loop)
    assert abs(lo - ours["auc"].ci_low) < 1e-9 and abs(hi - ours["auc"].ci_high) < 1e-9
    print(
        f"bootstrap metrics ({n_test} cases, {n_bootstrap} resamples, 6 metrics): ours {t_ours:.4f} s "
        "(best of 5), "
        f"scikit-learn loop {t_sk:.2f} s -> {t_sk / t_ours:.0f}x faster (same AUC interval)"
    )


def bench_permutation(frame, cohort, repeats: int) -> None:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.inspection import permutation_importance

    deep = [c for c in frame.columns if c.startswith("resnet50_")]
    train = [c.case_id for c in cohort.cases if c.cohort == "internal" and c.split != "test"]
    test = [c.case_id for c in cohort.cases if c.cohort == "internal" and c.split == "test"]
    y = {c.case_id: int(c.label == "malignant") for c in cohort.cases}
    X_tr, X_te = frame.loc[train, deep].to_numpy(), frame.loc[test, deep].to_numpy()
    y_tr, y_te = np.array([y[i] for i in train]), np.array([y[i] for i in test])
    model = RandomForestClassifier(300, max_features="sqrt", random_state=0, n_jobs=1).fit(X_tr, y_tr)
    t_ours, (mean, _) = timed(lambda: permutation_importance_batched(model, X_te, y_te, n_repeats=repeats))
    t_sk, theirs = timed(
        lambda: permutation_importance(
            model, X_te, y_te, scoring="roc_auc", n_repeats=repeats, random_state=0
        )
    )
    agree = np.corrcoef(mean, theirs.importances_mean)[0, 1]
    print(
        f"permutation importance (RF, 300 trees, {len(deep)} features, {len(test)} test cases, "
        f"{repeats} repeats): "
        f"ours {t_ours:.1f} s, sklearn {t_sk:.1f} s -> {t_sk / t_ours:.1f}x faster "
        f"(Pearson r between the two = {agree:.2f}; they differ only by the random permutations)"
    )


def bench_classify(frame, cohort, explained, jobs: int, n_bootstrap: int) -> None:
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import Pipeline

    from Rad4XCNNLogic.classify.classifiers import class_weights, classifier_param_prefix, make_pipeline

    t_ours, result = timed(
        lambda: classify(
            frame,
            cohort,
            ClassificationConfig(jobs=jobs, n_bootstrap=n_bootstrap),
            explained=explained,
            progress=False,
        )
    )
    train = [c.case_id for c in cohort.cases if c.cohort == "internal" and c.split != "test"]
    y = np.array([int(cohort[i].label == "malignant") for i in train])

    def anchor():
        # the same classifiers, grids and folds, without the filter, the refit, the evaluation and importances
        for cols in result.feature_sets.values():
            X = frame.loc[train, cols].to_numpy()
            for name in ("rf", "xgb", "svm"):
                full = make_pipeline(name, correlation_threshold=None, probability=False)
                pipe = Pipeline(full.steps[1:])
                grid = {f"{classifier_param_prefix(full)}{k}": v for k, v in DEFAULT_GRIDS[name].items()}
                cv = StratifiedKFold(5, shuffle=True, random_state=0)
                fit = {"clf__sample_weight": class_weights(y)} if name == "xgb" else {}
                GridSearchCV(pipe, grid, scoring="roc_auc", cv=cv, n_jobs=jobs, refit=False).fit(X, y, **fit)

    t_anchor, _ = timed(anchor)
    sets = ", ".join(f"{k} ({len(v)})" for k, v in result.feature_sets.items())
    print(
        f"classify ({len(result.feature_sets)} sets: {sets}; 3 classifiers; {n_bootstrap} bootstrap; "
        f"jobs={jobs}): {t_ours:.1f} s; bare GridSearchCV of the same classifiers and grids {t_anchor:.1f} s "
        f"-> ratio {t_ours / t_anchor:.2f}"
    )
    table = result.metrics.pivot_table(
        index=["feature_set", "classifier"], columns="evaluated_on", values="auc"
    )
    print(table.round(3).to_string())


def bench_comparisons(frame, cohort, explained, jobs: int, n_bootstrap: int) -> None:
    t_stage, result = timed(
        lambda: classify(
            frame,
            cohort,
            ClassificationConfig(jobs=jobs, n_bootstrap=n_bootstrap),
            explained=explained,
            progress=False,
            comparisons=False,
        )
    )
    t_cmp, table = timed(
        lambda: compare_feature_sets(
            result.predictions, classes=result.classes, n_bootstrap=n_bootstrap, seed=0
        ),
        repeat=3,
    )
    print(
        f"comparisons ({len(table)} rows: {table[['set_a', 'set_b']].drop_duplicates().shape[0]} pairs x "
        f"{table['classifier'].nunique()} classifiers x {table['evaluated_on'].nunique()} evaluation sets; "
        f"{n_bootstrap} bootstrap + DeLong): {t_cmp:.3f} s (best of 3) beside the classification stage "
        f"{t_stage:.1f} s -> {100 * t_cmp / t_stage:.2f}% of it"
    )
    print(table.round(3).to_string(index=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run (seconds)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count(), help="parallel fits (default: all cores)")
    parser.add_argument("--skip-classify", action="store_true", help="only the two component benchmarks")
    parser.add_argument(
        "--comparisons-only", action="store_true", help="only the comparisons beside the classify stage"
    )
    args = parser.parse_args()
    import sklearn
    import xgboost

    print(
        f"python {platform.python_version()}, numpy {np.__version__}, scikit-learn {sklearn.__version__}, "
        f"xgboost {xgboost.__version__}, {os.cpu_count()} cores"
    )
    if args.quick:
        n, n_deep, n_rad, n_ext, n_boot = 200, 256, 100, 60, 200
    else:
        n, n_deep, n_rad, n_ext, n_boot = 647, 2048, 474, 150, 1000
    frame, cohort, explained = make_cohort(n, n_deep, n_rad, n_ext)
    if args.comparisons_only:
        bench_comparisons(frame, cohort, explained, args.jobs, n_boot)
        return
    bench_bootstrap(n_test=130, n_bootstrap=n_boot)
    bench_permutation(frame, cohort, repeats=5)
    if not args.skip_classify:
        bench_classify(frame, cohort, explained, args.jobs, n_boot)
        bench_comparisons(frame, cohort, explained, args.jobs, n_boot)


if __name__ == "__main__":
    main()
