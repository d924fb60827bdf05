"""Split luck and leakage, measured: the best classifier of each feature set scored again over repeated
train/test splits of the training cohort (README, "Classification and validation").

Each repeat re-splits the training cohort's cases (the headline split's train/val/test shares, stratified
by label, a new seed) and refits the chosen model with its selected hyper-parameters (no new search), then
scores its AUC on the new test split. ``grouped`` repeats keep split groups whole (patients joined by
near-duplicate images, :attr:`~Rad4XCNNLogic.cohort.manifest.Case.group`), as the headline split does;
when near-duplicates join patients, ``ungrouped`` repeats split the same cases by patient only, as if the
near-duplicates were unknown: the gap between the two is the leakage the grouping prevents, and the spread
of the grouped repeats is the split luck around the headline figure.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from Rad4XCNNLogic.classify.design import INTERNAL_TEST
from Rad4XCNNLogic.cohort.manifest import SPLITS, Case, assign_splits

log = logging.getLogger(__name__)

#: The columns of ``repeated_splits.csv``.
REPEATED_COLUMNS = ("feature_set", "classifier", "grouping", "seed", "auc", "n_train", "n_test")
GROUPED, UNGROUPED = "grouped", "as if ungrouped"


def duplicates_join_patients(cases: Sequence[Case]) -> bool:
    """Whether some split group holds cases of more than one patient (near-duplicates joined them)."""
    patients: dict[str, set[str]] = {}
    for c in cases:
        patients.setdefault(c.group, set()).add(c.patient)
    return any(len(p) > 1 for p in patients.values())


def _shares(cases: Sequence[Case]) -> list[float]:
    """The headline split's train/val/test shares of the cases (what each repeat reproduces)."""
    counts = [sum(c.split == s for c in cases) for s in SPLITS]
    return [n / max(1, sum(counts)) for n in counts]


def _auc(model, X, y, classes: Sequence[str]) -> float:
    from sklearn.metrics import roc_auc_score

    from Rad4XCNNLogic.classify.importance import ranking_score

    if len(np.unique(y)) < 2:
        return float("nan")
    if len(classes) == 2:
        # what the headline AUC ranks by: P(positive), or a two-class SVM's decision function
        score = ranking_score(model, X)
        return float(roc_auc_score(y, score if score.ndim == 1 else score[:, 1]))
    proba = model.predict_proba(X)
    present = np.unique(y)
    if len(present) < len(classes):
        return float("nan")
    return float(roc_auc_score(y, proba, multi_class="ovr", labels=list(range(len(classes)))))


def _refit_and_score(model, X_train, y_train, X_test, y_test, classes, weighted: bool):
    """(AUC of ``model`` refitted on the training cases, scored on the test cases; the problem, if any)."""
    from Rad4XCNNLogic.classify.models import class_weights

    fit_params = {"clf__sample_weight": class_weights(y_train)} if weighted else {}
    try:
        model.fit(X_train, y_train, **fit_params)
        return _auc(model, X_test, y_test, classes), None
    except ValueError as exc:  # a split with a single class in training, a filter that keeps nothing
        return float("nan"), str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def repeated_splits(
    features,
    cohort,
    result,
    *,
    repeats: int,
    seed: int = 0,
    train_cohort: str | None = None,
    jobs: int | None = None,
):
    """``repeated_splits.csv``: per feature set, its classifier of best CV AUC refitted on ``repeats`` new
    splits, grouped and (when near-duplicates join patients) as if ungrouped.

    Parameters
    ----------
    features : the feature table (case_id index) that :func:`~Rad4XCNNLogic.classify.classifiers.classify`
        was given.
    cohort : the cohort it was given (its training cohort is re-split).
    result : what ``classify`` returned (its metrics, fitted models and classes).
    repeats : the number of new splits per grouping (seeds ``seed + 1`` ... ``seed + repeats``).
    train_cohort : the training cohort (default: the one ``classify`` used).
    jobs : parallel refits (None: all cores).

    Returns
    -------
    pandas DataFrame with :data:`REPEATED_COLUMNS` (empty with ``repeats`` 0).

    Examples
    --------
    >>> table = repeated_splits(features, cohort, result, repeats=10)  # doctest: +SKIP
    """
    import pandas as pd
    from sklearn.base import clone

    from Rad4XCNNLogic.classify.comparisons import select_by_cv

    rows: list[dict] = []
    if repeats <= 0 or result.metrics is None or not len(result.metrics):
        return pd.DataFrame(rows, columns=list(REPEATED_COLUMNS))
    train_cohort = train_cohort or result.settings.get("train_cohort")
    classes = list(result.classes)
    index = {str(i) for i in features.index}
    cases = [
        c
        for c in cohort.cases
        if c.cohort == train_cohort and c.label in classes and c.case_id in index and c.split in SPLITS
    ]
    shares = _shares(cases)
    groupings = [GROUPED] + ([UNGROUPED] if duplicates_join_patients(cases) else [])
    splits: dict[tuple[str, int], tuple[list[str], list[str]]] = {}
    for grouping in groupings:
        base = [
            replace(c, split=None, split_assigned=False, split_group=c.group if grouping == GROUPED else None)
            for c in cases
        ]
        for r in range(1, repeats + 1):
            new = assign_splits(base, fractions=shares, seed=seed + r, train_cohort=train_cohort)
            train = [c.case_id for c in new if c.split in ("train", "val")]
            test = [c.case_id for c in new if c.split == "test"]
            splits[(grouping, seed + r)] = (train, test)
    label = {c.case_id: classes.index(c.label) for c in cases}
    balanced = bool(result.settings.get("balanced", True))
    specs = []  # light: the matrices are cut as the refits are dispatched
    for row in select_by_cv(result.metrics).itertuples():
        fitted = result.models.get((row.feature_set, row.classifier))
        if fitted is None:
            continue
        columns = result.feature_sets[row.feature_set]
        for (grouping, s), (train, test) in splits.items():
            key = {
                "feature_set": row.feature_set,
                "classifier": row.classifier,
                "grouping": grouping,
                "seed": s,
            }
            specs.append((key, fitted, columns, train, test))
    from joblib import Parallel, delayed

    def matrix(ids, columns):
        return features.loc[ids, columns].to_numpy(dtype=float)

    outcomes = Parallel(n_jobs=jobs or -1)(
        delayed(_refit_and_score)(
            clone(fitted),
            matrix(train, columns),
            np.array([label[i] for i in train]),
            matrix(test, columns),
            np.array([label[i] for i in test]),
            classes,
            balanced and key["classifier"] == "xgb",
        )
        for key, fitted, columns, train, test in specs
    )
    for (key, _, _, train, test), (auc, problem) in zip(specs, outcomes, strict=True):
        if problem:
            log.warning(
                "repeated split %s seed %d, %s/%s: %s",
                key["grouping"],
                key["seed"],
                key["feature_set"],
                key["classifier"],
                problem,
            )
        rows.append({**key, "auc": auc, "n_train": len(train), "n_test": len(test)})
    return pd.DataFrame(rows, columns=list(REPEATED_COLUMNS))


def summarise_repeats(table, metrics):
    """Per feature set, classifier and grouping: the mean, standard deviation, range and number of the
    repeated AUCs, the headline split's AUC (internal test) and its place among the repeats (the share of
    repeats at or below it)."""
    import pandas as pd

    columns = ["feature_set", "classifier", "grouping", "repeats", "mean_auc", "sd_auc", "min_auc", "max_auc"]
    columns += ["headline_auc", "headline_rank"]
    if table is None or not len(table):
        return pd.DataFrame(columns=columns)
    headline = {}
    if metrics is not None and len(metrics):
        internal = metrics[metrics["evaluated_on"] == INTERNAL_TEST]
        headline = {(r.feature_set, r.classifier): float(r.auc) for r in internal.itertuples()}
    rows = []
    for (fs, clf, grouping), part in table.groupby(["feature_set", "classifier", "grouping"], sort=False):
        aucs = part["auc"].to_numpy(dtype=float)
        aucs = aucs[np.isfinite(aucs)]
        head = headline.get((fs, clf), float("nan"))
        rows.append(
            {
                "feature_set": fs,
                "classifier": clf,
                "grouping": grouping,
                "repeats": len(aucs),
                "mean_auc": float(aucs.mean()) if len(aucs) else float("nan"),
                "sd_auc": float(aucs.std(ddof=1)) if len(aucs) > 1 else float("nan"),
                "min_auc": float(aucs.min()) if len(aucs) else float("nan"),
                "max_auc": float(aucs.max()) if len(aucs) else float("nan"),
                "headline_auc": head,
                "headline_rank": float((aucs <= head).mean())
                if len(aucs) and np.isfinite(head)
                else float("nan"),
            }
        )
    return pd.DataFrame(rows, columns=columns)
