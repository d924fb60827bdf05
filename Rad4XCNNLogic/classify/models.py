"""The classifiers as scikit-learn pipelines (feature filter, scaler, model), their hyper-parameter grids,
and the search: grid search by stratified (or, with patients, stratified group) cross-validation on the
training data, then a refit of the best setting on all of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from Rad4XCNNLogic.classify.importance import ranking_model
from Rad4XCNNLogic.classify.settings import CLASSIFIERS
from Rad4XCNNLogic.errors import Rad4XCNNError, first_line

#: The small hyper-parameter grid searched per classifier (scikit-learn / xgboost parameter names).
#: Single-value lists are fixed settings, listed so that a ``grids`` argument can override them.
DEFAULT_GRIDS: dict[str, dict[str, list]] = {
    # 300 trees; how many features a split may look at (sqrt or log2 of their number: a larger fraction
    # costs in proportion with thousands of deep features), and how small a leaf may be.
    "rf": {"n_estimators": [300], "max_features": ["sqrt", "log2"], "min_samples_leaf": [1, 5]},
    # 200 boosted trees of depth 2 or 4, learning rate 0.05 or 0.2 (fixed: 80% of the cases and 50% of the
    # features per tree, 64 histogram bins - ample for a few hundred cases, and 3x faster than 256).
    "xgb": {"n_estimators": [200], "max_depth": [2, 4], "learning_rate": [0.05, 0.2]},
    # RBF kernel on standardised inputs with gamma="scale" (1 / number of features); the margin's softness.
    "svm": {"C": [0.1, 1.0, 10.0, 100.0]},
}


def make_pipeline(
    classifier: str,
    *,
    seed: int = 0,
    correlation_threshold: float | None,
    select_k: int | None = None,
    balanced: bool = True,
    probability: bool = True,
    calibration_folds: int = 5,
    memory: Any = None,
):
    """The scikit-learn pipeline of one classifier: feature filter, (scaler,) classifier.

    ``rf``: RandomForestClassifier; ``xgb``: xgboost's XGBClassifier (``tree_method="hist"``, one thread,
    seeded); ``svm``: StandardScaler + SVC with an RBF kernel, whose probability outputs come from Platt
    scaling (``CalibratedClassifierCV(SVC(), method="sigmoid", ensemble=False)``, the replacement of the
    deprecated ``SVC(probability=True)``; ``probability=False`` gives the bare SVC). ``balanced``
    weights the classes inversely to their frequency (``class_weight="balanced"``; for XGBoost, pass
    :func:`class_weights` as ``clf__sample_weight`` to ``fit``). :func:`classifier_param_prefix` says
    how to address the classifier's parameters (those of :data:`DEFAULT_GRIDS`).

    Examples
    --------
    >>> pipe = make_pipeline("svm", seed=0, correlation_threshold=0.95)  # doctest: +SKIP
    >>> pipe.set_params(clf__estimator__C=10.0)  # doctest: +SKIP
    >>> pipe.fit(X_train, y_train).predict_proba(X_test)  # doctest: +SKIP
    """
    from sklearn.pipeline import Pipeline

    from Rad4XCNNLogic.classify.feature_filter import TrainingFeatureFilter

    filt = TrainingFeatureFilter(correlation_threshold=correlation_threshold, select_k=select_k)
    weight = "balanced" if balanced else None
    steps: list[tuple[str, Any]] = [("filter", filt)]
    if classifier == "rf":
        from sklearn.ensemble import RandomForestClassifier

        steps.append(("clf", RandomForestClassifier(class_weight=weight, random_state=seed, n_jobs=1)))
    elif classifier == "xgb":
        from xgboost import XGBClassifier

        steps.append(
            (
                "clf",
                XGBClassifier(
                    tree_method="hist",
                    subsample=0.8,
                    colsample_bytree=0.5,
                    max_bin=64,
                    importance_type="gain",
                    n_jobs=1,
                    random_state=seed,
                    verbosity=0,
                ),
            )
        )
    elif classifier == "svm":
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVC

        svc = SVC(kernel="rbf", gamma="scale", class_weight=weight, random_state=seed)
        steps.append(("scale", StandardScaler()))
        if probability:
            svc = CalibratedClassifierCV(svc, method="sigmoid", cv=calibration_folds, ensemble=False)
        steps.append(("clf", svc))
    else:
        raise Rad4XCNNError(f"unknown classifier {classifier!r} (expected one of {', '.join(CLASSIFIERS)})")
    return Pipeline(steps, memory=memory)


def classifier_param_prefix(pipeline) -> str:
    """Prefix of the classifier's parameters in a :func:`make_pipeline` pipeline (``clf__`` or, for the
    calibrated SVM, ``clf__estimator__``)."""
    clf = pipeline.named_steps["clf"]
    return "clf__estimator__" if hasattr(clf, "estimator") and hasattr(clf, "ensemble") else "clf__"


def class_weights(y: np.ndarray) -> np.ndarray:
    """Per-case weights that give every class the same total weight (scikit-learn's "balanced")."""
    y = np.asarray(y)
    classes, counts = np.unique(y, return_counts=True)
    per_class = len(y) / (len(classes) * counts)
    return per_class[np.searchsorted(classes, y)]


def fit_one(
    clf_name,
    X,
    y,
    *,
    grid,
    n_classes,
    seed,
    cv_folds,
    groups,
    correlation_threshold,
    select_k,
    balanced,
    jobs,
    cache_dir,
):
    """Grid search by stratified CV on the training data, then refit the best setting on all of it.

    When a patient has several training cases the folds are grouped by patient (StratifiedGroupKFold), so
    that no patient is on both sides of a fold; otherwise they are plain stratified folds.
    """
    from sklearn.model_selection import GridSearchCV

    binary = n_classes == 2
    # Platt's calibration needs a few cases of each class in each of its folds
    smallest = int(np.bincount(y).min())
    calibration_folds = int(max(2, min(5, smallest * (cv_folds - 1) // cv_folds)))
    options = {
        "seed": seed,
        "correlation_threshold": correlation_threshold,
        "select_k": select_k,
        "balanced": balanced,
        "calibration_folds": calibration_folds,
    }
    # Platt scaling is monotone, so a two-class SVM's CV AUC is the same from its decision function, at a
    # fraction of the cost; the memory caches the filter, fitted once per fold for every grid point.
    pipe = make_pipeline(clf_name, probability=not binary, memory=cache_dir, **options)
    prefix = classifier_param_prefix(pipe)
    fit_params = {"clf__sample_weight": class_weights(y)} if (clf_name == "xgb" and balanced) else {}
    splitter = cv_splitter(cv_folds, seed, groups)
    grouped = type(splitter).__name__ == "StratifiedGroupKFold"
    search = GridSearchCV(
        pipe,
        {f"{prefix}{k}": list(v) for k, v in grid.items()},
        scoring="roc_auc" if binary else "roc_auc_ovr",
        cv=splitter,
        n_jobs=jobs,
        refit=False,
        error_score="raise",
    )
    try:
        if grouped:
            search.fit(X, y, groups=np.asarray(groups), **fit_params)
        else:
            search.fit(X, y, **fit_params)
    except Rad4XCNNError:
        raise
    except ValueError as exc:
        raise Rad4XCNNError(f"fit failed: {first_line(exc)}") from None
    params = {k.removeprefix(prefix): _plain(v) for k, v in search.best_params_.items()}
    final = make_pipeline(clf_name, probability=True, **options)
    final.set_params(**{f"{classifier_param_prefix(final)}{k}": v for k, v in params.items()})
    final.fit(X, y, **fit_params)
    note = None
    if clf_name == "svm" and binary:
        model, method = ranking_model(final)
        Z = final[:-1].transform(X)
        if np.corrcoef(getattr(model, method)(Z), final.predict_proba(X)[:, 1])[0, 1] < 0:
            note = (
                "Platt scaling came out decreasing (cross-validated decision values anti-correlate with the "
                "label): AUC and ROC use the SVM's decision function, thresholded metrics the probabilities"
            )
    return final, params, float(search.best_score_), note


def cv_splitter(cv_folds: int, seed: int, groups: Sequence[str] | None = None):
    """The cross-validation of the hyper-parameter search: stratified k-fold, shuffled with the seed, or
    stratified *group* k-fold when some group (patient) holds more than one case.

    Examples
    --------
    >>> type(cv_splitter(5, 0, ["p1", "p1", "p2"])).__name__, type(cv_splitter(5, 0)).__name__
    ('StratifiedGroupKFold', 'StratifiedKFold')
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if groups is not None and len(set(groups)) < len(groups):
        return StratifiedGroupKFold(n_splits=cv_folds, shuffle=True, random_state=seed)
    return StratifiedKFold(n_splits=cv_folds, shuffle=True, random_state=seed)


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value
