"""Classification and validation: RandomForest, XGBoost and SVM on deep, radiomic and combined features.

Each (feature set, classifier) pipeline learns its preprocessing and its hyper-parameters on the training
split only, is refitted on it, and is evaluated on the internal test split and on every other cohort
(external validation), with bootstrap confidence intervals, ROC points and feature importances.

Which cases are used
--------------------
* **Training**: the training cohort's (``internal`` by default) ``train`` and ``val`` splits together.
  Hyper-parameters are chosen by stratified k-fold cross-validation on them, so a separate validation
  split would only shrink the training data; pass ``train_splits=("train",)`` to keep ``val`` out.
* **Evaluation**: the training cohort's ``test`` split (``evaluated_on="internal-test"``), then the ``test``
  split of every other cohort (``evaluated_on`` = the cohort's name, e.g. ``external``) - all its cases
  when the manifest gives it no split, as :func:`~Rad4XCNNLogic.cohort.manifest.assign_splits` marks them
  ``test``.
  Cases of another cohort marked ``train`` or ``val`` (e.g. used to fine-tune the network) are not
  held-out data: they are left out and counted (``not_held_out``).
* Cases without a label, without features, or with a label the classifier was not trained on are left
  out, counted and recorded as :class:`~Rad4XCNNLogic.errors.CaseFailure` (stage ``classify``). Cases
  without a lesion (``has_lesion=false``) and without features are only counted (``no_lesion``): the
  feature stages leave them out by design. Cases that have features are used, lesion or not.

Preprocessing (:class:`TrainingFeatureFilter`, fitted on the training data of each fit, so inside every
cross-validation fold too): training medians replace missing values; near-zero-variance features are
dropped; of every group of features correlated above a threshold (|Spearman rho| 0.95 by default, None
turns it off) the one most associated with the label is kept; optionally, only the ``select_k`` features
with the smallest univariate p-value (Mann–Whitney U for two classes, Kruskal–Wallis for more) are kept.
The SVM also standardises. AUCs rank cases by P(positive), or by a two-class SVM's decision function.
"""

from __future__ import annotations

import logging
import os
import tempfile
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from Rad4XCNNLogic.classify.metrics import METRICS, auc_score, evaluate_predictions, predicted_classes
from Rad4XCNNLogic.cohort.manifest import DEFAULT_COHORT, Cohort
from Rad4XCNNLogic.errors import CaseFailure, Rad4XCNNError, first_line
from Rad4XCNNLogic.names import RADIOMIC_SET, deep_model, feature_set_name, is_radiomic_feature

log = logging.getLogger(__name__)

#: The classifiers, by the short name used in ``classification.csv``.
CLASSIFIERS = ("rf", "xgb", "svm")
#: ``evaluated_on`` value of the training cohort's test split.
INTERNAL_TEST = "internal-test"
STAGE = "classify"
#: Names that are taken as the positive class of a two-class problem when ``positive`` is not given.
POSITIVE_NAMES = (
    "malignant",
    "positive",
    "cancer",
    "tumor",
    "tumour",
    "abnormal",
    "disease",
    "yes",
    "true",
    "1",
)

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


# ------------------------------------------------------------------------------------------ feature sets
def infer_feature_sets(
    columns: Iterable[str], explained: Iterable[str] | None = None
) -> dict[str, list[str]]:
    """The default feature sets of a feature table, from its column names.

    With one backbone: ``deep``, ``radiomic``, ``deep+radiomic`` and ``explained-deep`` (the deep features
    in ``explained`` - those with a radiomic partner at M). With several backbones each gets its own sets:
    ``deep-<model>``, ``deep-<model>+radiomic``, ``explained-deep-<model>``. A set without features is not
    made; columns that are neither deep nor radiomic (e.g. PyRadiomics ``diagnostics_*``) are ignored.

    Examples
    --------
    >>> sets = infer_feature_sets(["resnet50_0", "resnet50_1", "original_glcm_Contrast"], ["resnet50_1"])
    >>> {name: len(cols) for name, cols in sets.items()}
    {'deep': 2, 'radiomic': 1, 'deep+radiomic': 3, 'explained-deep': 1}
    """
    columns = [str(c) for c in columns]
    radiomic = [c for c in columns if is_radiomic_feature(c)]
    by_model: dict[str, list[str]] = {}
    for c in columns:
        model = deep_model(c)
        if model is not None:
            by_model.setdefault(model, []).append(c)
    explained_set = None if explained is None else {str(e) for e in explained}
    sets: dict[str, list[str]] = {}
    single = len(by_model) == 1
    for model, deep in by_model.items():
        key = None if single else model
        sets[feature_set_name("deep", key)] = deep
        if radiomic:
            sets[feature_set_name("combined", key)] = deep + radiomic
        if explained_set is not None:
            kept = [c for c in deep if c in explained_set]
            if kept:
                sets[feature_set_name("explained", key)] = kept
            else:
                log.warning("no deep feature of %s is among the explained features: no explained set", model)
    if radiomic:
        # radiomic goes second, after the first deep set, as in the paper's tables
        ordered = dict(list(sets.items())[:1])
        ordered[RADIOMIC_SET] = radiomic
        ordered.update(sets)
        sets = ordered
    return sets


def read_feature_tables(paths: Sequence[str | os.PathLike]) -> tuple[Any, list[CaseFailure]]:
    """Read feature CSVs (case_id first column) and join them on case_id.

    Cases missing from some of the files are left out and returned as failures; a column that appears in
    two files, a repeated case_id, or a file that cannot be read raises :class:`Rad4XCNNError`.

    Examples
    --------
    >>> frame, failures = read_feature_tables(["deep_features.csv", "radiomics.csv"])  # doctest: +SKIP
    """
    import pandas as pd

    if not paths:
        raise Rad4XCNNError("no feature table given")
    frames = []
    owner: dict[str, str] = {}
    for path in map(Path, paths):
        if not path.is_file():
            raise Rad4XCNNError(f"feature table not found: {path}")
        try:
            header = pd.read_csv(path, nrows=0, encoding="utf-8-sig")
            if len(header.columns) < 2:
                raise Rad4XCNNError(
                    f"feature table {path.name} has no feature column (expected case_id, ...)"
                )
            first = header.columns[0]
            frame = pd.read_csv(path, dtype={first: str}, encoding="utf-8-sig")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            text = first_line(exc)
            raise Rad4XCNNError(f"feature table {path.name} is not a readable CSV: {text}") from None
        frame = frame.set_index(first)
        frame.index = frame.index.astype(str).str.strip()
        frame.index.name = "case_id"
        duplicated = frame.index[frame.index.duplicated()].unique().tolist()
        if duplicated:
            raise Rad4XCNNError(
                f"feature table {path.name} repeats case_id {', '.join(map(repr, duplicated[:5]))}"
            )
        for column in frame.columns:
            if column in owner:
                raise Rad4XCNNError(f"feature column {column!r} is in both {owner[column]} and {path.name}")
            owner[column] = path.name
        frames.append((path.name, frame))
    everywhere = set.intersection(*(set(f.index) for _, f in frames))
    failures = []
    for case_id in sorted(set().union(*(set(f.index) for _, f in frames)) - everywhere):
        missing = [name for name, f in frames if case_id not in f.index]
        failures.append(CaseFailure(case_id, STAGE, f"no row in {', '.join(missing)}"))
    joined = pd.concat([f.loc[[i for i in f.index if i in everywhere]] for _, f in frames], axis=1)
    return joined, failures


def read_explained(path: str | os.PathLike) -> list[str]:
    """The explained deep features listed by an ``explanations.csv``: rows with ``n_partners > 0``.

    The file needs a ``deep_feature`` column (or the deep feature names as its first column) and an
    ``n_partners`` column, as written by the explanation stage.

    Examples
    --------
    >>> explained = read_explained("run/explanations.csv")  # doctest: +SKIP
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise Rad4XCNNError(f"explanations table not found: {path}")
    try:
        frame = pd.read_csv(path, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        raise Rad4XCNNError(f"explanations table {path.name} is not a readable CSV") from None
    if "n_partners" not in frame.columns:
        raise Rad4XCNNError(f"explanations table {path.name} lacks the column n_partners")
    names = frame["deep_feature"] if "deep_feature" in frame.columns else frame.iloc[:, 0]
    counts = pd.to_numeric(frame["n_partners"], errors="coerce").fillna(0)
    return [str(n) for n, k in zip(names, counts, strict=True) if k > 0]


def make_pipeline(
    classifier: str,
    *,
    seed: int = 0,
    correlation_threshold: float | None = 0.95,
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
    >>> pipe = make_pipeline("svm", seed=0).set_params(clf__estimator__C=10.0)  # doctest: +SKIP
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


# ------------------------------------------------------------------------------------------ importances
def _used_features(classifier: str, estimator, n_features: int) -> np.ndarray:
    """Columns a fitted model can react to (trees: those used in a split); the others have importance 0."""
    if classifier == "rf":
        used = np.zeros(n_features, dtype=bool)
        for tree in estimator.estimators_:
            nodes = tree.tree_.feature
            used[nodes[nodes >= 0]] = True
        return used
    if classifier == "xgb":
        used = np.zeros(n_features, dtype=bool)
        for key in estimator.get_booster().get_score(importance_type="weight"):
            used[int(key.lstrip("f"))] = True
        return used
    return np.ones(n_features, dtype=bool)


def ranking_model(pipeline) -> tuple[Any, str]:
    """The estimator and method whose output ranks cases for AUCs, ROC curves and permutation importance.

    For a two-class SVM, its own decision function: Platt's sigmoid is fitted on cross-validated decision
    values, and when those happen to anti-correlate with the label (a weak, unstable SVM) the sigmoid
    comes out decreasing and would reverse the ranking of the SVM fitted on all the training data. When
    it does not, the two rank alike and give the same AUC. For every other model, ``predict_proba``.
    Its input is the pipeline's transformed features (``pipeline[:-1].transform(X)``).
    """
    clf = pipeline.steps[-1][1]
    if hasattr(clf, "calibrated_classifiers_") and len(clf.classes_) == 2:
        return clf.calibrated_classifiers_[0].estimator, "decision_function"
    return clf, "predict_proba"


def ranking_score(pipeline, X: np.ndarray) -> np.ndarray:
    """The AUC's score of each case: (n,) for a two-class SVM's decision function, else (n, K)."""
    model, method = ranking_model(pipeline)
    return getattr(model, method)(pipeline[:-1].transform(X))


def permutation_importance_batched(
    estimator,
    X: np.ndarray,
    y: np.ndarray,
    *,
    n_repeats: int = 5,
    rng: np.random.Generator | int | None = 0,
    columns: np.ndarray | None = None,
    method: str = "predict_proba",
    batch_bytes: int = 64 * 2**20,
) -> tuple[np.ndarray, np.ndarray]:
    """Drop in AUC when each column of ``X`` is permuted: (mean, std) over ``n_repeats`` permutations.

    The same quantity as :func:`sklearn.inspection.permutation_importance` with AUC scoring, computed
    with many permuted copies of ``X`` stacked into one ``predict_proba`` call: with thousands of deep
    features, one call per feature and repeat spends most of its time in per-call overhead. Columns not
    in ``columns`` (a boolean mask) are not permuted and get 0. ``method`` names the estimator's scoring
    method (``predict_proba``, or ``decision_function`` for a two-class SVM).

    Examples
    --------
    >>> mean, std = permutation_importance_batched(model, X_test, y_test, n_repeats=5)  # doctest: +SKIP
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    X = np.asarray(X)
    n, p = X.shape
    respond = getattr(estimator, method)
    base = auc_score(y, respond(X))
    perms = rng.permuted(np.broadcast_to(np.arange(n), (p, n_repeats, n)), axis=-1)
    todo = np.flatnonzero(np.ones(p, dtype=bool) if columns is None else columns)
    drops = np.zeros((p, n_repeats))
    rbf = _rbf_decision_terms(estimator, X) if method == "decision_function" else None
    if rbf is not None:
        # an RBF SVM's squared distances change in one coordinate only: an O(n x support vectors) update
        # per permuted copy instead of the whole kernel, thousands of times fewer operations
        distances, support, coef, intercept, gamma = rbf
        for j in todo:
            before = (X[:, j, None] - support[None, :, j]) ** 2
            after = (X[perms[j], j][:, :, None] - support[None, None, :, j]) ** 2  # (repeats, n, n_sv)
            changed = np.maximum(distances[None] - before[None] + after, 0.0)
            decision = np.exp(-gamma * changed) @ coef + intercept
            drops[j] = base - _auc_rows(y, decision)
        return drops.mean(axis=1), drops.std(axis=1)
    forest = _forest_terms(estimator, X) if method == "predict_proba" else None
    if forest is not None:
        # a random forest averages its trees, and permuting one column changes only the trees that split on
        # it (a few percent of them with thousands of features): re-predict those, keep the others' sum
        trees, per_tree, total, users = forest
        buffer = np.tile(X.astype(np.float32), (n_repeats, 1))
        for j in todo:
            original = buffer[:, j].copy()
            buffer[:, j] = X[perms[j].ravel(), j]
            proba = np.repeat(total[None], n_repeats, axis=0)
            for t in users[j]:
                change = trees[t].predict_proba(buffer, check_input=False).reshape(n_repeats, n, -1)
                proba += change - per_tree[t][None]
            buffer[:, j] = original
            drops[j] = base - _auc_rows(y, proba / len(trees))
        return drops.mean(axis=1), drops.std(axis=1)
    per_feature = max(1, n_repeats * n * p * X.itemsize)
    chunk = max(1, batch_bytes // per_feature)
    for start in range(0, len(todo), chunk):
        cols = todo[start : start + chunk]
        block = np.tile(X, (len(cols) * n_repeats, 1))
        for a, j in enumerate(cols):
            for r in range(n_repeats):
                offset = (a * n_repeats + r) * n
                block[offset : offset + n, j] = X[perms[j, r], j]
        scores = np.asarray(respond(block))
        scores = scores.reshape(len(cols), n_repeats, n, *scores.shape[1:])
        for a, j in enumerate(cols):
            drops[j] = base - _auc_rows(y, scores[a])
    return drops.mean(axis=1), drops.std(axis=1)


def _auc_rows(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUC of each row of scores: (R, n) positive-class scores or (R, n, K) class scores or probabilities."""
    from scipy.stats import rankdata

    if scores.ndim == 3 and scores.shape[2] == 2:
        scores = scores[..., 1]
    if scores.ndim == 3:
        return np.array([auc_score(y, s) for s in scores])
    positive = np.asarray(y) == 1
    n_pos, n_neg = positive.sum(), (~positive).sum()
    ranks = rankdata(scores, axis=1)  # ties get their average rank: they count one half, as in the AUC
    return (ranks[:, positive].sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _forest_terms(estimator, X: np.ndarray):
    """(trees, per-tree probabilities, their sum, trees using each column) of a fitted scikit-learn forest
    whose predict_proba is the mean of its trees' on ``X``; otherwise None."""
    trees = getattr(estimator, "estimators_", None)
    if not isinstance(trees, list) or not trees or not all(hasattr(t, "tree_") for t in trees):
        return None
    X32 = np.ascontiguousarray(X, dtype=np.float32)
    per_tree = np.stack([t.predict_proba(X32, check_input=False) for t in trees])
    total = per_tree.sum(axis=0)
    if not np.allclose(total / len(trees), estimator.predict_proba(X), atol=1e-9):
        return None
    users: list[list[int]] = [[] for _ in range(X.shape[1])]
    for t, tree in enumerate(trees):
        for j in np.unique(tree.tree_.feature[tree.tree_.feature >= 0]):
            users[j].append(t)
    return trees, per_tree, total, users


def _rbf_decision_terms(estimator, X: np.ndarray):
    """(squared distances to the support vectors, support vectors, dual coefficients, intercept, gamma) of a
    fitted two-class RBF SVC, when they reproduce its decision function on ``X``; otherwise None."""
    if (
        getattr(estimator, "kernel", None) != "rbf"
        or getattr(estimator, "dual_coef_", np.empty((2, 0))).shape[0] != 1
    ):
        return None
    gamma = getattr(estimator, "_gamma", None)  # the number gamma="scale" resolved to at fit time
    if gamma is None:
        return None
    support = np.asarray(estimator.support_vectors_, dtype=float)
    coef = np.asarray(estimator.dual_coef_[0], dtype=float)
    intercept = float(estimator.intercept_[0])
    distances = ((X**2).sum(axis=1)[:, None] + (support**2).sum(axis=1)[None, :] - 2.0 * X @ support.T).clip(
        min=0.0
    )
    if not np.allclose(
        np.exp(-gamma * distances) @ coef + intercept, estimator.decision_function(X), atol=1e-6
    ):
        return None
    return distances, support, coef, intercept, gamma


# ------------------------------------------------------------------------------------------ result
@dataclass
class ClassificationResult:
    """What :func:`classify` returns; :func:`write_classification` writes it.

    Attributes
    ----------
    metrics : the ``classification.csv`` table: one row per feature set x classifier x evaluation set,
        with ``n_cases``, ``n_features`` (in the set), ``n_features_used`` (after the training filter),
        ``cv_auc`` (best cross-validated AUC on the training data) and every metric of
        :data:`~Rad4XCNNLogic.classify.metrics.METRICS` with ``<metric>_ci_low`` / ``<metric>_ci_high``.
    roc : ROC points: feature_set, classifier, evaluated_on, class (the positive class, or each class
        one-vs-rest), fpr, tpr, threshold.
    importances : feature_set, classifier, feature, importance_mean, importance_std, method
        (``permutation``: drop in AUC on held-out data; ``model``: impurity / gain importance of RF and
        XGBoost), selected (kept by the training filter; others have importance 0), evaluated_on
        (the held-out set for ``permutation``, ``training`` for ``model``).
    predictions : per case: case_id, feature_set, classifier, evaluated_on, label, predicted,
        ``p_<class>`` for every class, and for two classes ``score``, what the AUC ranks by (P(positive),
        or the SVM's decision function: see :func:`ranking_model`).
    best_params : ``"<feature_set>/<classifier>"`` -> the chosen hyper-parameters.
    failures : cases left out (no label, no features, unknown class, not in the manifest).
    counts : number of cases used per role, and left out per reason.
    task_failures : (feature set, classifier) fits that failed, with the reason; the others went on.
    warnings : (feature set, classifier) results to read with care, with the reason.
    classes : the class names; for two classes, [negative, positive].
    feature_sets : the feature sets used, name -> columns.
    settings : every setting, for ``run.json``.
    models : the fitted pipelines, ``(feature_set, classifier)`` -> Pipeline (not written to disk).
    """

    metrics: Any
    roc: Any
    importances: Any
    predictions: Any
    best_params: dict[str, dict]
    failures: list[CaseFailure]
    counts: dict[str, int]
    task_failures: list[dict[str, str]]
    warnings: list[dict[str, str]]
    classes: list[str]
    feature_sets: dict[str, list[str]]
    settings: dict[str, Any]
    models: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)


@dataclass
class _Design:
    """Cases, labels and evaluation groups after matching the features to the manifest."""

    classes: list[str]
    y: dict[str, int]  # case_id -> class index
    train: list[str]
    evaluations: dict[str, list[str]]
    failures: list[CaseFailure]
    counts: dict[str, int]
    positive: str | None
    train_cohort: str


def _choose_positive(labels: Sequence[str], positive: str | None) -> str | None:
    if positive is not None:
        if positive not in labels:
            raise Rad4XCNNError(
                f"positive class {positive!r} is not a label of the cohort (labels: {', '.join(labels)})"
            )
        return positive
    if len(labels) != 2:
        return None
    for name in POSITIVE_NAMES:
        for label in labels:
            if label.lower() == name:
                return label
    log.info("positive class not given: taking %r (the second label in sorted order)", labels[1])
    return labels[1]


def _design(
    feature_ids: Sequence[str],
    cohort: Cohort,
    *,
    positive: str | None,
    train_cohort: str | None,
    train_splits: Sequence[str],
    cv_folds: int,
    feature_failures: Sequence[CaseFailure] = (),
) -> _Design:
    failures: list[CaseFailure] = []
    reasons: Counter[str] = Counter()
    manifest_ids = set(cohort.case_ids)
    partial = {f.case_id: f for f in feature_failures}
    for case_id, failure in partial.items():
        if case_id not in manifest_ids:
            failures.append(failure)
            reasons["missing_from_a_feature_table"] += 1
    have = set(feature_ids)
    unknown = [i for i in feature_ids if i not in manifest_ids]
    if len(unknown) == len(feature_ids):
        raise Rad4XCNNError(
            f"none of the {len(feature_ids)} case ids of the feature table is in the manifest "
            f"(e.g. {', '.join(map(repr, list(feature_ids)[:3]))}; the manifest has e.g. "
            f"{', '.join(map(repr, cohort.case_ids[:3]))}): are the features from another cohort?"
        )
    for case_id in unknown:
        failures.append(CaseFailure(case_id, STAGE, "has features but is not in the manifest"))
        reasons["not_in_manifest"] += 1
    if unknown:
        log.warning("%d case(s) of the feature table are not in the manifest; left out", len(unknown))

    cohorts = cohort.cohorts
    if train_cohort is None:
        if DEFAULT_COHORT in cohorts:
            train_cohort = DEFAULT_COHORT
        elif len(cohorts) == 1:
            train_cohort = cohorts[0]
        else:
            raise Rad4XCNNError(
                f"no cohort is named {DEFAULT_COHORT!r}: name the training cohort "
                f"(one of {', '.join(cohorts)})"
            )
    elif train_cohort not in cohorts:
        raise Rad4XCNNError(f"training cohort {train_cohort!r} is not in the manifest ({', '.join(cohorts)})")

    usable = []
    for case in cohort.cases:
        if case.case_id in partial:
            failures.append(partial[case.case_id])
            reasons["missing_from_a_feature_table"] += 1
        elif case.case_id not in have and not case.has_lesion:
            reasons["no_lesion"] += 1  # expected: lesion features are not computed without a lesion
        elif case.case_id not in have:
            failures.append(CaseFailure(case.case_id, STAGE, "no features (not in the feature table)"))
            reasons["no_features"] += 1
        elif case.label is None:
            failures.append(CaseFailure(case.case_id, STAGE, "no label"))
            reasons["no_label"] += 1
        elif case.cohort == train_cohort and case.split is None:
            failures.append(CaseFailure(case.case_id, STAGE, "no split"))
            reasons["no_split"] += 1
        else:
            usable.append(case)
    for key, text in (("no_label", "without a label"), ("no_features", "without features")):
        if reasons[key]:
            log.warning("%d case(s) %s left out of classification", reasons[key], text)

    train_cases = [c for c in usable if c.cohort == train_cohort and c.split in train_splits]
    train_name = f"training split (cohort {train_cohort}, {'+'.join(train_splits)})"
    train_labels = sorted({c.label for c in train_cases})
    if not train_cases:
        raise Rad4XCNNError(f"the {train_name} has no labelled case with features")
    if len(train_labels) < 2:
        raise Rad4XCNNError(
            f"the {train_name} has a single class ({train_labels[0]!r}, {len(train_cases)} cases); "
            "classification needs at least two"
        )
    all_labels = sorted({c.label for c in usable})
    positive = _choose_positive(all_labels, positive)
    if positive is not None:
        others = [lab for lab in all_labels if lab != positive]
        classes = [others[0] if len(others) == 1 else f"not-{positive}", positive]

        def index(label: str) -> int | None:
            return int(label == positive)
    else:
        classes = train_labels

        def index(label: str) -> int | None:
            return classes.index(label) if label in classes else None

    y: dict[str, int] = {}
    kept = []
    for case in usable:
        k = index(case.label)
        if k is None:
            failures.append(
                CaseFailure(case.case_id, STAGE, f"label {case.label!r} is not a training class ({classes})")
            )
            reasons["unseen_class"] += 1
            continue
        y[case.case_id] = k
        kept.append(case)

    train = [c.case_id for c in kept if c.cohort == train_cohort and c.split in train_splits]
    train_counts = Counter(y[i] for i in train)
    if len(train_counts) < 2:
        raise Rad4XCNNError(f"the {train_name} has a single class ({classes[next(iter(train_counts))]!r})")
    if cv_folds < 2:
        raise Rad4XCNNError(f"cross-validation needs at least 2 folds, got {cv_folds}")
    smallest, n_small = min(train_counts.items(), key=lambda kv: (kv[1], kv[0]))
    if n_small < cv_folds:
        raise Rad4XCNNError(
            f"too few cases for {cv_folds}-fold cross-validation: the {train_name} has {n_small} "
            f"{classes[smallest]!r} case(s), at least {cv_folds} are needed; lower the number of folds "
            f"(--cv-folds) or add cases"
        )
    evaluations: dict[str, list[str]] = {}
    internal_test = [c.case_id for c in kept if c.cohort == train_cohort and c.split == "test"]
    if internal_test:
        evaluations[INTERNAL_TEST] = internal_test
    for name in cohorts:
        if name != train_cohort:
            members = [c.case_id for c in kept if c.cohort == name and c.split in ("test", None)]
            reasons["not_held_out"] += sum(c.cohort == name and c.split not in ("test", None) for c in kept)
            if members:
                evaluations[name] = members
    if not evaluations:
        raise Rad4XCNNError(
            f"no held-out case to evaluate on: cohort {train_cohort} has no test split "
            "and there is no other cohort"
        )
    for name, members in evaluations.items():
        present = {y[i] for i in members}
        if len(present) < 2:
            where = f"the test split of cohort {train_cohort}" if name == INTERNAL_TEST else f"cohort {name}"
            raise Rad4XCNNError(
                f"evaluation set {name} ({where}) has a single class ({classes[present.pop()]!r}, "
                f"{len(members)} cases): AUC, sensitivity and specificity need both classes"
            )
    counts = {"train": len(train), **{f"evaluated_on:{k}": len(v) for k, v in evaluations.items()}}
    counts.update({f"left_out:{k}": v for k, v in sorted(reasons.items()) if v})
    return _Design(classes, y, train, evaluations, failures, counts, positive, train_cohort)


# ------------------------------------------------------------------------------------------ main entry
def classify(
    features,
    cohort: Cohort,
    *,
    feature_sets: Mapping[str, Sequence[str]] | None = None,
    explained: Iterable[str] | None = None,
    feature_failures: Iterable[CaseFailure] = (),
    classifiers: Sequence[str] = CLASSIFIERS,
    positive: str | None = None,
    seed: int = 0,
    cv_folds: int = 5,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    correlation_threshold: float | None = 0.95,
    select_k: int | None = None,
    balanced: bool = True,
    grids: Mapping[str, Mapping[str, Sequence]] | None = None,
    importance_repeats: int = 5,
    train_cohort: str | None = None,
    train_splits: Sequence[str] = ("train", "val"),
    jobs: int | None = None,
    progress: bool = True,
) -> ClassificationResult:
    """Train and validate every classifier on every feature set.

    Parameters
    ----------
    features : pandas DataFrame indexed by case_id (e.g. from :func:`read_feature_tables`).
    cohort : the manifest's cohort: labels, splits and cohort names.
    feature_sets : name -> columns. Default: :func:`infer_feature_sets` on the columns.
    explained : deep features with a radiomic partner at M (e.g. :func:`read_explained`), for the
        ``explained-deep`` set of the default feature sets. Ignored when ``feature_sets`` is given.
    feature_failures : the failures returned by :func:`read_feature_tables` (cases missing from one of
        the joined tables), added to the result's failures and counts.
    classifiers : some of ``rf``, ``xgb``, ``svm``.
    positive : the positive class's name. With two labels it defaults to a name such as ``malignant``
        (:data:`POSITIVE_NAMES`), else the second label; with more labels, giving it makes the task
        positive-vs-rest, leaving it out makes it multi-class (one-vs-rest AUC).
    seed : seeds the folds, the models, the bootstrap and the permutations; same seed, same result.
    cv_folds : stratified folds of the hyper-parameter search on the training data.
    n_bootstrap, confidence : stratified bootstrap resamples and level of the intervals. Every model is
        resampled with the same draws on a given evaluation set, so the intervals are paired.
    correlation_threshold, select_k : see :class:`TrainingFeatureFilter` (None turns either off).
    balanced : weight classes inversely to their frequency in training.
    grids : per classifier, parameter name -> values; overrides :data:`DEFAULT_GRIDS` key by key.
    importance_repeats : permutations per feature for the permutation importance (0: skip it). It is
        measured on the internal test split, or on the first other cohort when there is none.
    train_cohort, train_splits : which cases train (default: cohort ``internal``, splits train + val).
    jobs : parallel cross-validation fits (None: all cores). Results do not depend on it.
    progress : show a progress bar on stderr.

    Raises
    ------
    Rad4XCNNError
        for a training or evaluation set with a single class, too few cases for ``cv_folds``, features
        that match no case of the manifest, an unknown classifier or feature column.

    Examples
    --------
    >>> frame, missing = read_feature_tables(["deep_features.csv", "radiomics.csv"])  # doctest: +SKIP
    >>> result = classify(frame, read_manifest("manifest.csv"), positive="malignant")  # doctest: +SKIP
    >>> result.metrics[["feature_set", "classifier", "evaluated_on", "auc"]]  # doctest: +SKIP
    """
    import pandas as pd

    unknown = [c for c in classifiers if c not in CLASSIFIERS]
    if unknown or not classifiers:
        raise Rad4XCNNError(
            f"unknown classifier {', '.join(map(repr, unknown)) or '(none given)'} "
            f"(expected some of {', '.join(CLASSIFIERS)})"
        )
    if not isinstance(features, pd.DataFrame):
        raise Rad4XCNNError(
            f"features must be a pandas DataFrame indexed by case_id, got {type(features).__name__}"
        )
    if select_k is not None and select_k < 1:
        raise Rad4XCNNError(f"select_k must be at least 1, got {select_k}")
    if correlation_threshold is not None and not 0 < correlation_threshold <= 1:
        raise Rad4XCNNError(f"correlation threshold must be in (0, 1], got {correlation_threshold}")
    features = features.copy()
    features.index = features.index.astype(str)
    if features.index.duplicated().any():
        dup = features.index[features.index.duplicated()].unique().tolist()
        raise Rad4XCNNError(f"the feature table repeats case_id {', '.join(map(repr, dup[:5]))}")

    sets = _resolve_feature_sets(features, feature_sets, explained)
    design = _design(
        list(features.index),
        cohort,
        positive=positive,
        train_cohort=train_cohort,
        train_splits=tuple(train_splits),
        cv_folds=cv_folds,
        feature_failures=list(feature_failures),
    )
    grid_by_clf = {c: {**DEFAULT_GRIDS[c], **dict((grids or {}).get(c, {}))} for c in classifiers}
    n_jobs = os.cpu_count() if jobs is None else jobs
    importance_on = INTERNAL_TEST if INTERNAL_TEST in design.evaluations else next(iter(design.evaluations))
    settings = {
        "classifiers": list(classifiers),
        "feature_sets": {k: len(v) for k, v in sets.items()},
        "classes": design.classes,
        "positive": design.positive,
        "task": "binary" if len(design.classes) == 2 else "multiclass (one-vs-rest AUC)",
        "seed": seed,
        "cv_folds": cv_folds,
        "cv": "stratified k-fold, shuffled with the seed, on the training data",
        "n_bootstrap": n_bootstrap,
        "confidence": confidence,
        "ci_method": "stratified percentile bootstrap, widened to include the point estimate if needed",
        "threshold": "P(positive) >= 0.5 for two classes, else the most probable class",
        "correlation_threshold": correlation_threshold,
        "select_k": select_k,
        "near_zero_variance": "caret rule: freq ratio > 19 and unique values <= 10% of cases, or constant",
        "balanced": balanced,
        "grids": grid_by_clf,
        "importance_repeats": importance_repeats,
        "importance_evaluated_on": importance_on,
        "train_cohort": design.train_cohort,
        "train_splits": list(train_splits),
        "versions": _versions(),
    }
    log.info(
        "classification: %d training cases, evaluation on %s; %d feature set(s) x %d classifier(s)",
        len(design.train),
        ", ".join(f"{k} ({len(v)})" for k, v in design.evaluations.items()),
        len(sets),
        len(classifiers),
    )

    rows, roc_rows, imp_frames, pred_frames = [], [], [], []
    best_params: dict[str, dict] = {}
    task_failures: list[dict[str, str]] = []
    warnings: list[dict[str, str]] = []
    models: dict[tuple[str, str], Any] = {}
    y_train = np.array([design.y[i] for i in design.train])
    tasks = [(s, c) for s in sets for c in classifiers]
    from Rad4XCNNLogic.infra.progress import ProgressBar

    with (
        tempfile.TemporaryDirectory(prefix="rad4xcnn-classify-") as cache_dir,
        ProgressBar(len(tasks), desc="classify", stage="classify", unit="model", enabled=progress) as bar,
    ):
        for set_name, clf_name in tasks:
            bar.set_postfix(model=f"{set_name}/{clf_name}")
            columns = sets[set_name]
            X_train = features.loc[design.train, columns].to_numpy(dtype=float)
            try:
                fitted, params, cv_auc, note = _fit_one(
                    clf_name,
                    X_train,
                    y_train,
                    grid=grid_by_clf[clf_name],
                    n_classes=len(design.classes),
                    seed=seed,
                    cv_folds=cv_folds,
                    correlation_threshold=correlation_threshold,
                    select_k=select_k,
                    balanced=balanced,
                    jobs=n_jobs,
                    cache_dir=cache_dir,
                )
            except Rad4XCNNError as exc:
                log.warning("feature set %s, classifier %s: %s", set_name, clf_name, exc)
                task_failures.append({"feature_set": set_name, "classifier": clf_name, "problem": str(exc)})
                bar.update(1)
                continue
            models[(set_name, clf_name)] = fitted
            best_params[f"{set_name}/{clf_name}"] = params
            if note:
                log.warning("feature set %s, classifier %s: %s", set_name, clf_name, note)
                warnings.append({"feature_set": set_name, "classifier": clf_name, "problem": note})
            for eval_name, ids in design.evaluations.items():
                row, points, pred = _evaluate(
                    fitted,
                    (set_name, clf_name, eval_name),
                    features.loc[ids, columns],
                    np.array([design.y[i] for i in ids]),
                    design.classes,
                    n_bootstrap=n_bootstrap,
                    confidence=confidence,
                    seed=seed,
                )
                rows.append({**row, "n_features": len(columns), "cv_auc": cv_auc})
                roc_rows.extend(points)
                pred_frames.append(pred)
            ids = design.evaluations[importance_on]
            imp_frames.append(
                _importances(
                    fitted,
                    clf_name,
                    set_name,
                    columns,
                    features.loc[ids, columns].to_numpy(dtype=float),
                    np.array([design.y[i] for i in ids]),
                    importance_on,
                    importance_repeats,
                    seed,
                )
            )
            bar.update(1)

    metric_columns = [
        "feature_set",
        "classifier",
        "evaluated_on",
        "n_cases",
        "n_features",
        "n_features_used",
        "cv_auc",
    ]
    for metric in METRICS:
        metric_columns += [metric, f"{metric}_ci_low", f"{metric}_ci_high"]
    metrics = pd.DataFrame(rows, columns=metric_columns)
    roc = pd.DataFrame(
        roc_rows, columns=["feature_set", "classifier", "evaluated_on", "class", "fpr", "tpr", "threshold"]
    )
    imp_columns = [
        "feature_set",
        "classifier",
        "feature",
        "importance_mean",
        "importance_std",
        "method",
        "selected",
        "evaluated_on",
    ]
    importances = (
        pd.concat(imp_frames, ignore_index=True) if imp_frames else pd.DataFrame(columns=imp_columns)
    )
    predictions = pd.concat(pred_frames, ignore_index=True) if pred_frames else pd.DataFrame()
    if not rows:
        raise Rad4XCNNError(
            "every classifier failed: "
            + "; ".join(f"{t['feature_set']}/{t['classifier']}: {t['problem']}" for t in task_failures)
        )
    return ClassificationResult(
        metrics=metrics,
        roc=roc,
        importances=importances[imp_columns],
        predictions=predictions,
        best_params=best_params,
        failures=design.failures,
        counts=design.counts,
        task_failures=task_failures,
        warnings=warnings,
        classes=design.classes,
        feature_sets={k: list(v) for k, v in sets.items()},
        settings=settings,
        models=models,
    )


def _resolve_feature_sets(features, feature_sets, explained) -> dict[str, list[str]]:
    import pandas as pd

    numeric = [c for c in features.columns if pd.api.types.is_numeric_dtype(features[c])]
    if feature_sets is None:
        sets = infer_feature_sets(numeric, explained)
        if not sets:
            raise Rad4XCNNError(
                "no feature column recognised: expected deep features named <model>_<index> "
                "(e.g. resnet50_17) or PyRadiomics names (e.g. original_glcm_Contrast); "
                "pass the feature sets explicitly"
            )
        ignored = [c for c in features.columns if not any(c in cols for cols in sets.values())]
        if ignored:
            log.info(
                "%d column(s) neither deep nor radiomic, not used: %s",
                len(ignored),
                ", ".join(map(str, ignored[:5])),
            )
        return sets
    sets = {}
    columns = set(features.columns)
    for name, cols in feature_sets.items():
        cols = [str(c) for c in cols]
        if not cols:
            raise Rad4XCNNError(f"feature set {name!r} is empty")
        missing = [c for c in cols if c not in columns]
        if missing:
            raise Rad4XCNNError(
                f"feature set {name!r}: {len(missing)} column(s) not in the feature table, e.g. "
                f"{', '.join(map(repr, missing[:3]))}"
            )
        text = [c for c in cols if c not in numeric]
        if text:
            raise Rad4XCNNError(
                f"feature set {name!r}: column(s) not numeric, e.g. {', '.join(map(repr, text[:3]))}"
            )
        sets[str(name)] = cols
    if not sets:
        raise Rad4XCNNError("no feature set given")
    return sets


def _fit_one(
    clf_name,
    X,
    y,
    *,
    grid,
    n_classes,
    seed,
    cv_folds,
    correlation_threshold,
    select_k,
    balanced,
    jobs,
    cache_dir,
):
    """Grid search by stratified CV on the training data, then refit the best setting on all of it."""
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

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
    search = GridSearchCV(
        pipe,
        {f"{prefix}{k}": list(v) for k, v in grid.items()},
        scoring="roc_auc" if binary else "roc_auc_ovr",
        cv=StratifiedKFold(n_splits=cv_folds, shuffle=True, random_state=seed),
        n_jobs=jobs,
        refit=False,
        error_score="raise",
    )
    try:
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


def _evaluate(fitted, key, X_eval, y_eval, classes, *, n_bootstrap, confidence, seed):
    """Metrics row, ROC points and per-case predictions of one fitted pipeline on one evaluation set."""
    import pandas as pd

    set_name, clf_name, eval_name = key
    X = X_eval.to_numpy(dtype=float)
    proba = fitted.predict_proba(X)
    score = ranking_score(fitted, X)
    # the same draws for every model on this evaluation set: paired intervals
    estimates = evaluate_predictions(
        y_eval,
        proba,
        n_bootstrap=n_bootstrap,
        confidence=confidence,
        rng=_eval_rng(seed, eval_name),
        score=score,
    )
    row: dict[str, Any] = {
        "feature_set": set_name,
        "classifier": clf_name,
        "evaluated_on": eval_name,
        "n_cases": len(y_eval),
        "n_features_used": int(fitted.named_steps["filter"].support_.sum()),
    }
    for metric in METRICS:
        est = estimates[metric]
        row.update({metric: est.value, f"{metric}_ci_low": est.ci_low, f"{metric}_ci_high": est.ci_high})
    pred = pd.DataFrame(
        {
            "case_id": list(X_eval.index),
            "feature_set": set_name,
            "classifier": clf_name,
            "evaluated_on": eval_name,
            "label": [classes[k] for k in y_eval],
            "predicted": [classes[k] for k in predicted_classes(proba)],
            **{f"p_{c}": proba[:, k] for k, c in enumerate(classes)},
        }
    )
    if len(classes) == 2:
        pred["score"] = score if score.ndim == 1 else score[:, 1]
    return row, _roc_points(set_name, clf_name, eval_name, y_eval, score, classes), pred


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _eval_rng(seed: int, eval_name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(eval_name.encode("utf-8"))])


def _roc_points(set_name, clf_name, eval_name, y, score, classes) -> list[tuple]:
    from sklearn.metrics import roc_curve

    if score.ndim == 1:
        score = np.c_[-score, score]
    targets = [1] if len(classes) == 2 else [k for k in range(len(classes)) if (y == k).any()]
    out = []
    for k in targets:
        fpr, tpr, thr = roc_curve(y == k, score[:, k])
        out.extend(
            (set_name, clf_name, eval_name, classes[k], float(a), float(b), float(t))
            for a, b, t in zip(fpr, tpr, thr, strict=True)
        )
    return out


def _importances(fitted, clf_name, set_name, columns, X_eval, y_eval, eval_name, repeats, seed):
    import pandas as pd

    support = fitted.named_steps["filter"].support_
    estimator = fitted.steps[-1][1]
    ranker, method = ranking_model(fitted)
    Z = fitted[:-1].transform(X_eval)
    kept = np.asarray(columns, dtype=object)[support]
    frames = []

    def frame(values_mean, values_std, method, where):
        mean = np.zeros(len(columns))
        std = np.zeros(len(columns))
        mean[support] = values_mean
        std[support] = values_std
        return pd.DataFrame(
            {
                "feature_set": set_name,
                "classifier": clf_name,
                "feature": list(columns),
                "importance_mean": mean,
                "importance_std": std,
                "method": method,
                "selected": support,
                "evaluated_on": where,
            }
        ).sort_values("importance_mean", ascending=False, kind="stable")

    if repeats > 0:
        mean, std = permutation_importance_batched(
            ranker,
            Z,
            y_eval,
            n_repeats=repeats,
            rng=np.random.default_rng([seed, zlib.crc32(f"{set_name}/{clf_name}".encode())]),
            columns=_used_features(clf_name, estimator, len(kept)),
            method=method,
        )
        frames.append(frame(mean, std, "permutation", eval_name))
    if hasattr(estimator, "feature_importances_"):
        own = np.asarray(estimator.feature_importances_, dtype=float)
        frames.append(frame(own, np.zeros_like(own), "model", "training"))
    return pd.concat(frames, ignore_index=True) if frames else None


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("scikit-learn", "xgboost", "numpy", "scipy", "pandas"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


# ------------------------------------------------------------------------------------------ output
def write_classification(result: ClassificationResult, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``classification.csv``, ``roc.csv``, ``importances.csv``, ``predictions.csv`` and
    ``classification.json`` (settings, best parameters, counts, failures) into ``out_dir``, atomically.

    Examples
    --------
    >>> paths = write_classification(result, "run")  # doctest: +SKIP
    >>> pd.read_csv(paths["classification"], index_col=0).loc["deep"]  # doctest: +SKIP
    """
    from Rad4XCNNLogic.infra.storage import write_csv_atomic, write_json_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "classification": write_csv_atomic(out / "classification.csv", result.metrics, index=False),
        "roc": write_csv_atomic(out / "roc.csv", result.roc, index=False),
        "importances": write_csv_atomic(out / "importances.csv", result.importances, index=False),
        "predictions": write_csv_atomic(out / "predictions.csv", result.predictions, index=False),
    }
    paths["json"] = write_json_atomic(
        out / "classification.json",
        {
            "settings": result.settings,
            "classes": result.classes,
            "best_params": result.best_params,
            "counts": result.counts,
            "feature_sets": result.feature_sets,
            "task_failures": result.task_failures,
            "warnings": result.warnings,
            "failures": [f.to_dict() for f in result.failures],
        },
    )
    return paths
