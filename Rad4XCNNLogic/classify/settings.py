"""The settings of the classify part: the shallow classifiers on deep, radiomic and combined features.
Light: no numpy, scikit-learn or xgboost.
"""

from __future__ import annotations

from dataclasses import dataclass

from Rad4XCNNLogic.infra.interval import Interval
from Rad4XCNNLogic.infra.settings import option
from Rad4XCNNLogic.names import FEATURE_SET_KINDS

#: The classifiers, by the short name used in ``classification.csv``.
CLASSIFIERS = ("rf", "xgb", "svm")


@dataclass
class ClassificationConfig:
    """Shallow classifiers on deep, radiomic and combined features."""

    enabled: bool = option(True, "train and validate the classifiers")
    classifiers: list[str] = option(list(CLASSIFIERS), "classifiers to train", choices=CLASSIFIERS)
    feature_sets: list[str] = option(
        list(FEATURE_SET_KINDS), "feature sets to compare", choices=FEATURE_SET_KINDS
    )
    positive: str | None = option(
        None, "the positive class name (null: 'malignant' if present, else the last)"
    )
    cv_folds: int = option(5, "stratified cross-validation folds for the hyper-parameter search", minimum=2)
    n_bootstrap: int = option(1000, "bootstrap resamples for the metrics' 95% intervals", minimum=0)
    correlation_threshold: float | None = option(
        0.95,
        "drop features correlated above this |Spearman rho| with a stronger one (null: keep all)",
        interval=Interval(0, 1, low_open=True),
    )
    select_k: int | None = option(None, "keep the k features with the smallest Mann-Whitney p", minimum=1)
    jobs: int | None = option(None, "parallel fits (null: all cores)", minimum=1)
    repeated_splits: int = option(
        10,
        "new train/test splits on which the best classifier of each feature set is refitted (its chosen "
        "hyper-parameters), grouped and, with near-duplicates, as if ungrouped: split luck and leakage "
        "(0: none)",
        minimum=0,
    )
    evaluate_on: list[str] | None = option(
        None,
        "external cohorts to validate on (their test or unassigned cases; null: every cohort that "
        "trains neither the network nor the classifiers)",
    )
    compare: list[str] | None = option(
        None,
        "pairs of feature sets to compare, A:B each (difference of AUC A - B); null: the pairs the set "
        "names imply (deep vs radiomic, CNN vs ViT, explained vs deep, ...), else every pair",
    )
