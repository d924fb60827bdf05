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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# the feature tables, the design and the importances live in their own modules; their public names are
# also reachable from here, where the callers of the classification stage have always found them
from Rad4XCNNLogic.classify.comparisons import choose_pairs, compare_feature_sets
from Rad4XCNNLogic.classify.design import INTERNAL_TEST, POSITIVE_NAMES, STAGE, training_design
from Rad4XCNNLogic.classify.importance import (
    compute_importances,
    permutation_importance_batched,
    ranking_model,
    ranking_score,
)
from Rad4XCNNLogic.classify.metrics import (
    METRICS,
    evaluate_predictions,
    evaluation_rng,
    predicted_classes,
)
from Rad4XCNNLogic.classify.models import (
    CLASSIFIERS,
    DEFAULT_GRIDS,
    class_weights,
    classifier_param_prefix,
    cv_splitter,
    fit_one,
    make_pipeline,
)
from Rad4XCNNLogic.classify.settings import ClassificationConfig
from Rad4XCNNLogic.classify.tables import (
    infer_feature_sets,
    is_radiomic_feature,
    read_explained,
    read_feature_tables,
    resolve_feature_sets,
)
from Rad4XCNNLogic.cohort.manifest import Cohort
from Rad4XCNNLogic.errors import CaseFailure, Rad4XCNNError
from Rad4XCNNLogic.infra.progress import ProgressBar
from Rad4XCNNLogic.infra.settings import check_section

log = logging.getLogger(__name__)

__all__ = [
    "CLASSIFIERS",
    "DEFAULT_GRIDS",
    "INTERNAL_TEST",
    "POSITIVE_NAMES",
    "STAGE",
    "ClassificationResult",
    "class_weights",
    "classifier_param_prefix",
    "classify",
    "cv_splitter",
    "infer_feature_sets",
    "is_radiomic_feature",
    "make_pipeline",
    "permutation_importance_batched",
    "ranking_model",
    "ranking_score",
    "read_explained",
    "read_feature_tables",
    "resolve_feature_sets",
    "write_classification",
]


# ------------------------------------------------------------------------------------------ importances
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
        or the SVM's decision function: see :func:`ranking_model`), ``split_group`` (what the bootstrap
        draws whole).
    best_params : ``"<feature_set>/<classifier>"`` -> the chosen hyper-parameters.
    failures : cases left out (no label, no features, unknown class, not in the manifest).
    counts : number of cases used per role, and left out per reason.
    task_failures : (feature set, classifier) fits that failed, with the reason; the others went on.
    warnings : (feature set, classifier) results to read with care, with the reason.
    classes : the class names; for two classes, [negative, positive].
    feature_sets : the feature sets used, name -> columns.
    settings : every setting, for ``run.json``.
    models : the fitted pipelines, ``(feature_set, classifier)`` -> Pipeline (not written to disk).
    comparisons : the ``comparisons.csv`` table of paired AUC differences between feature sets
        (:func:`~Rad4XCNNLogic.classify.comparisons.compare_feature_sets`), or None when not computed.
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
    comparisons: Any = None


# ------------------------------------------------------------------------------------------ main entry
def _checked_inputs(features):
    """The feature table indexed by text case ids, after refusing repeated cases (the settings are checked
    by their section's rules)."""
    import pandas as pd

    if not isinstance(features, pd.DataFrame):
        raise Rad4XCNNError(
            f"features must be a pandas DataFrame indexed by case_id, got {type(features).__name__}"
        )
    features = features.copy()
    features.index = features.index.astype(str)
    if features.index.duplicated().any():
        dup = features.index[features.index.duplicated()].unique().tolist()
        raise Rad4XCNNError(f"the feature table repeats case_id {', '.join(map(repr, dup[:5]))}")

    return features


@dataclass(frozen=True)
class _Fit:
    """How each (feature set, classifier) task is fitted and evaluated."""

    seed: int
    cv_folds: int
    correlation_threshold: float | None
    select_k: int | None
    balanced: bool
    jobs: int | None
    n_bootstrap: int
    confidence: float
    importance_repeats: int
    importance_on: str
    grids: dict


@dataclass
class _Collected:
    """What the tasks give: metric rows, ROC points, importances, predictions, fitted models, failures."""

    rows: list = field(default_factory=list)
    roc_rows: list = field(default_factory=list)
    imp_frames: list = field(default_factory=list)
    pred_frames: list = field(default_factory=list)
    best_params: dict = field(default_factory=dict)
    task_failures: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    models: dict = field(default_factory=dict)


def _run_task(fit: _Fit, set_name: str, clf_name: str, columns, features, design, cache_dir, out: _Collected):
    """Fit one classifier on one feature set, evaluate it on every evaluation set and measure its
    importances; a task that cannot be fitted is recorded in ``out.task_failures`` and the others go on."""
    X_train = features.loc[design.train, columns].to_numpy(dtype=float)
    y_train = np.array([design.y[i] for i in design.train])
    try:
        fitted, params, cv_auc, note = fit_one(
            clf_name,
            X_train,
            y_train,
            grid=fit.grids[clf_name],
            n_classes=len(design.classes),
            seed=fit.seed,
            cv_folds=fit.cv_folds,
            groups=[design.groups[i] for i in design.train],
            correlation_threshold=fit.correlation_threshold,
            select_k=fit.select_k,
            balanced=fit.balanced,
            jobs=fit.jobs,
            cache_dir=cache_dir,
        )
    except Rad4XCNNError as exc:
        log.warning("feature set %s, classifier %s: %s", set_name, clf_name, exc)
        out.task_failures.append({"feature_set": set_name, "classifier": clf_name, "problem": str(exc)})
        return
    out.models[(set_name, clf_name)] = fitted
    out.best_params[f"{set_name}/{clf_name}"] = params
    if note:
        log.warning("feature set %s, classifier %s: %s", set_name, clf_name, note)
        out.warnings.append({"feature_set": set_name, "classifier": clf_name, "problem": note})
    for eval_name, ids in design.evaluations.items():
        row, points, pred = _evaluate(
            fitted,
            (set_name, clf_name, eval_name),
            features.loc[ids, columns],
            np.array([design.y[i] for i in ids]),
            design.classes,
            n_bootstrap=fit.n_bootstrap,
            confidence=fit.confidence,
            seed=fit.seed,
            groups=[design.groups[i] for i in ids],
        )
        out.rows.append({**row, "n_features": len(columns), "cv_auc": cv_auc})
        out.roc_rows.extend(points)
        out.pred_frames.append(pred)
    ids = design.evaluations[fit.importance_on]
    out.imp_frames.append(
        compute_importances(
            fitted,
            clf_name,
            set_name,
            columns,
            features.loc[ids, columns].to_numpy(dtype=float),
            np.array([design.y[i] for i in ids]),
            fit.importance_on,
            fit.importance_repeats,
            fit.seed,
        )
    )


def _tables(out: _Collected):
    """(metrics, roc, importances, predictions) of the tasks collected, with their documented columns."""
    import pandas as pd

    rows, roc_rows, imp_frames, pred_frames = out.rows, out.roc_rows, out.imp_frames, out.pred_frames
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
    return metrics, roc, importances[imp_columns], predictions


def _settings(fit: _Fit, classifiers, sets, design, train_splits) -> dict:
    """The settings of a classification, as ``classification.json`` records them."""
    grouped = len(set(design.groups[i] for i in design.train)) < len(design.train)
    return {
        "classifiers": list(classifiers),
        "feature_sets": {k: len(v) for k, v in sets.items()},
        "classes": design.classes,
        "positive": design.positive,
        "task": "binary" if len(design.classes) == 2 else "multiclass (one-vs-rest AUC)",
        "seed": fit.seed,
        "cv_folds": fit.cv_folds,
        "cv": ("stratified group k-fold by split group" if grouped else "stratified k-fold")
        + ", shuffled with the seed, on the training data",
        "n_bootstrap": fit.n_bootstrap,
        "confidence": fit.confidence,
        "ci_method": "stratified percentile bootstrap (whole split groups drawn), as computed (not widened "
        "to contain the estimate)",
        "threshold": "P(positive) >= 0.5 for two classes, else the most probable class",
        "correlation_threshold": fit.correlation_threshold,
        "select_k": fit.select_k,
        "near_zero_variance": "caret rule: freq ratio > 19 and unique values <= 10% of cases, or constant",
        "balanced": fit.balanced,
        "grids": fit.grids,
        "importance_repeats": fit.importance_repeats,
        "importance_evaluated_on": fit.importance_on,
        "train_cohort": design.train_cohort,
        "train_splits": list(train_splits),
        "evaluate_on": list(design.evaluations),
        "versions": _versions(),
    }


def classify(
    features,
    cohort: Cohort,
    settings: ClassificationConfig | None = None,
    *,
    feature_sets: Mapping[str, Sequence[str]] | None = None,
    explained: Iterable[str] | None = None,
    feature_failures: Iterable[CaseFailure] = (),
    seed: int = 0,
    confidence: float = 0.95,
    balanced: bool = True,
    grids: Mapping[str, Mapping[str, Sequence]] | None = None,
    importance_repeats: int = 5,
    train_cohort: str | None = None,
    train_splits: Sequence[str] = ("train", "val"),
    progress: bool = True,
    controls: Mapping[str, str] | None = None,
    comparisons: bool = True,
) -> ClassificationResult:
    """Train and validate every classifier on every feature set.

    Parameters
    ----------
    features : pandas DataFrame indexed by case_id (e.g. from :func:`read_feature_tables`).
    cohort : the manifest's cohort: labels, splits and cohort names.
    settings : the ``classification`` section (:class:`~Rad4XCNNLogic.classify.settings.ClassificationConfig`;
        None: its defaults), the one statement of these values: ``classifiers`` (some of ``rf``, ``xgb``,
        ``svm``); ``positive``, the positive class's name (with two labels it defaults to a name such as
        ``malignant``, :data:`POSITIVE_NAMES`, else the second label; with more labels, giving it makes the
        task positive-vs-rest, leaving it out makes it multi-class, one-vs-rest AUC); ``cv_folds``, the
        stratified folds of the hyper-parameter search on the training data (grouped by patient when the
        manifest's ``patient_id`` gives a patient several cases); ``n_bootstrap``, the stratified bootstrap
        resamples of the intervals (every model is resampled with the same draws on a given evaluation
        set, so the intervals are paired); ``correlation_threshold`` and ``select_k`` (see
        :class:`TrainingFeatureFilter`; None turns either off); ``jobs``, parallel cross-validation fits
        (None: all cores; results do not depend on it); ``evaluate_on``, the other cohorts evaluated
        (external validation; None: every other cohort; a cohort that trained the network should be left
        out: its cases are counted ``not_evaluated``). ``enabled`` and ``feature_sets`` (kinds) are the
        caller's (:func:`~Rad4XCNNLogic.run.work.classify_stage`).
    feature_sets : name -> columns. Default: :func:`infer_feature_sets` on the columns.
    explained : deep features with a radiomic partner at M (e.g. :func:`read_explained`), for the
        ``explained-deep`` set of the default feature sets. Ignored when ``feature_sets`` is given.
    feature_failures : the failures returned by :func:`read_feature_tables` (cases missing from one of
        the joined tables), added to the result's failures and counts.
    seed : seeds the folds, the models, the bootstrap and the permutations; same seed, same result.
    confidence : the level of the bootstrap intervals.
    balanced : weight classes inversely to their frequency in training.
    grids : per classifier, parameter name -> values; overrides :data:`DEFAULT_GRIDS` key by key.
    importance_repeats : permutations per feature for the permutation importance (0: skip it). It is
        measured on the internal test split, or on the first other cohort when there is none.
    train_cohort, train_splits : which cases train (default: cohort ``internal``, splits train + val).
    progress : show a progress bar on stderr.
    controls : trained backbone -> its control backbone (labels of deep features), compared as
        ``trained-vs-control`` besides every ``<model>-random``
        (see :func:`~Rad4XCNNLogic.classify.comparisons.comparison_pairs`).
    comparisons : compute the paired comparisons between feature sets (``result.comparisons``).

    Raises
    ------
    Rad4XCNNError
        for a training or evaluation set with a single class, too few cases (or patients) for
        ``cv_folds``, a patient with cases in training and in an evaluation set, features that match no
        case of the manifest, an unknown classifier or feature column.

    Examples
    --------
    >>> frame, missing = read_feature_tables(["deep_features.csv", "radiomics.csv"])  # doctest: +SKIP
    >>> section = ClassificationConfig(positive="malignant")
    >>> result = classify(frame, read_manifest("manifest.csv"), section)  # doctest: +SKIP
    >>> result.metrics[["feature_set", "classifier", "evaluated_on", "auc"]]  # doctest: +SKIP
    """

    cc = check_section(ClassificationConfig() if settings is None else settings, "classification")
    classifiers, positive, cv_folds, n_bootstrap = cc.classifiers, cc.positive, cc.cv_folds, cc.n_bootstrap
    correlation_threshold, select_k, jobs = cc.correlation_threshold, cc.select_k, cc.jobs
    if not classifiers:
        raise Rad4XCNNError(
            f"classification.classifiers: none given (expected some of {', '.join(CLASSIFIERS)})"
        )
    features = _checked_inputs(features)
    sets = resolve_feature_sets(features, feature_sets, explained)
    pairs = choose_pairs(list(sets), cc.compare, controls) if comparisons else []
    design = training_design(
        list(features.index),
        cohort,
        positive=positive,
        train_cohort=train_cohort,
        train_splits=tuple(train_splits),
        cv_folds=cv_folds,
        feature_failures=list(feature_failures),
        evaluate_on=None if cc.evaluate_on is None else list(cc.evaluate_on),
    )
    grid_by_clf = {c: {**DEFAULT_GRIDS[c], **dict((grids or {}).get(c, {}))} for c in classifiers}
    n_jobs = os.cpu_count() if jobs is None else jobs
    importance_on = INTERNAL_TEST if INTERNAL_TEST in design.evaluations else next(iter(design.evaluations))
    fit = _Fit(
        seed, cv_folds, correlation_threshold, select_k, balanced, n_jobs, n_bootstrap, confidence,
        importance_repeats, importance_on, grid_by_clf,
    )  # fmt: skip
    settings = _settings(fit, classifiers, sets, design, train_splits)
    log.info(
        "classification: %d training cases, evaluation on %s; %d feature set(s) x %d classifier(s)",
        len(design.train),
        ", ".join(f"{k} ({len(v)})" for k, v in design.evaluations.items()),
        len(sets),
        len(classifiers),
    )

    out = _Collected()
    tasks = [(s, c) for s in sets for c in classifiers]
    with (
        tempfile.TemporaryDirectory(prefix="rad4xcnn-classify-") as cache_dir,
        ProgressBar(len(tasks), desc="classify", stage="classify", unit="model", enabled=progress) as bar,
    ):
        for set_name, clf_name in tasks:
            bar.set_postfix(model=f"{set_name}/{clf_name}")
            _run_task(fit, set_name, clf_name, sets[set_name], features, design, cache_dir, out)
            bar.update(1)
    metrics, roc, importances, predictions = _tables(out)
    if not out.rows:
        raise Rad4XCNNError(
            "every classifier failed: "
            + "; ".join(f"{t['feature_set']}/{t['classifier']}: {t['problem']}" for t in out.task_failures)
        )
    compared = None
    if comparisons:
        compared = compare_feature_sets(
            predictions,
            classes=design.classes,
            pairs=pairs,
            n_bootstrap=n_bootstrap,
            confidence=confidence,
            seed=seed,
        )
    return ClassificationResult(
        comparisons=compared,
        metrics=metrics,
        roc=roc,
        importances=importances,
        predictions=predictions,
        best_params=out.best_params,
        failures=design.failures,
        counts=design.counts,
        task_failures=out.task_failures,
        warnings=out.warnings,
        classes=design.classes,
        feature_sets={k: list(v) for k, v in sets.items()},
        settings=settings,
        models=out.models,
    )


def _evaluate(fitted, key, X_eval, y_eval, classes, *, n_bootstrap, confidence, seed, groups=None):
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
        rng=evaluation_rng(seed, eval_name),
        score=score,
        groups=groups,  # whole near-duplicate groups and patients are drawn
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
    if groups is not None:
        pred["split_group"] = list(groups)
    return row, _roc_points(set_name, clf_name, eval_name, y_eval, score, classes), pred


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
    """Write ``classification.csv``, ``roc.csv``, ``importances.csv``, ``predictions.csv``,
    ``comparisons.csv`` (when computed) and ``classification.json`` (settings, best parameters, counts,
    failures) into ``out_dir``, atomically.

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
    if result.comparisons is not None:
        paths["comparisons"] = write_csv_atomic(out / "comparisons.csv", result.comparisons, index=False)
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
