"""Classification metrics with stratified-bootstrap confidence intervals, for binary and multi-class labels.

Every metric is computed from per-case weights (1 for the point estimate, the number of times a case is
drawn for a bootstrap resample), so that a thousand resamples are a few matrix products instead of a
thousand calls to scikit-learn; the point estimates equal scikit-learn's
(``Testing/classify/test_classifiers.py`` checks it). Only numpy is needed.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

#: The metrics reported for every (feature set, classifier, evaluation set), in table order.
METRICS = ("auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "f1")


def predicted_classes(proba: np.ndarray) -> np.ndarray:
    """Class index predicted from class probabilities: P(positive) >= 0.5 for two classes, else argmax.

    Examples
    --------
    >>> predicted_classes(np.array([[0.5, 0.5], [0.7, 0.3]])).tolist()
    [1, 0]
    """
    proba = np.asarray(proba, dtype=float)
    if proba.shape[1] == 2:
        return (proba[:, 1] >= 0.5).astype(int)
    return np.argmax(proba, axis=1)


def _weighted_auc(is_pos: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC (Mann–Whitney, ties count one half) of ``score`` for each row of case weights (B, n)."""
    neg = ~is_pos
    _, group = np.unique(score, return_inverse=True)
    order = np.argsort(group, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(group[order]) != 0])
    # negative weight in each group of tied scores, and below it: (B, G)
    neg_in = np.add.reduceat((weights * neg)[:, order], starts, axis=1)
    neg_below = np.cumsum(neg_in, axis=1) - neg_in
    wins = neg_below[:, group[is_pos]] + 0.5 * neg_in[:, group[is_pos]]
    numerator = np.sum(weights[:, is_pos] * wins, axis=1)
    denominator = weights[:, is_pos].sum(axis=1) * weights[:, neg].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return numerator / denominator


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, with 0 where den is 0 (scikit-learn's ``zero_division=0``)."""
    out = np.zeros_like(num, dtype=float)
    np.divide(num, den, out=out, where=den > 0)
    return out


def weighted_metrics(
    y: np.ndarray, proba: np.ndarray, weights: np.ndarray, score: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Every metric of :data:`METRICS` for each row of case weights.

    Parameters
    ----------
    y : (n,) class indices 0..K-1 (for two classes, 1 is the positive class).
    proba : (n, K) class probabilities; the predicted class comes from them (:func:`predicted_classes`).
    weights : (B, n) non-negative case weights (row of ones: the plain metric).
    score : the ranking score for the AUC, if not the probabilities: (n,) for two classes (higher means
        more likely positive, e.g. an SVM's decision function), (n, K) for more.

    Returns
    -------
    dict of metric name -> (B,) array. With two classes, sensitivity is the recall of class 1 and
    specificity that of class 0; with more, every metric except accuracy is the unweighted mean over the
    classes present in ``y``, each taken one-vs-rest (AUC as scikit-learn's
    ``roc_auc_score(multi_class="ovr")`` when all are present).

    Examples
    --------
    >>> y = np.array([0, 0, 1, 1]); p1 = np.array([0.1, 0.6, 0.4, 0.9])
    >>> m = weighted_metrics(y, np.c_[1 - p1, p1], np.ones((1, 4)))
    >>> float(m["auc"][0]), float(m["accuracy"][0])
    (0.75, 0.5)
    """
    y = np.asarray(y)
    proba = np.asarray(proba, dtype=float)
    weights = np.atleast_2d(np.asarray(weights, dtype=float))
    n_classes = proba.shape[1]
    if score is None:
        score = proba
    else:
        score = np.asarray(score, dtype=float)
        if score.ndim == 1:
            score = np.c_[-score, score]
    pred = predicted_classes(proba)
    correct = (pred == y).astype(float)
    total = weights.sum(axis=1)
    accuracy = _ratio(weights @ correct, total)

    def one_vs_rest(k: int) -> tuple[np.ndarray, ...]:
        truth = y == k
        called = pred == k
        tp = weights @ (truth & called)
        fn = weights @ (truth & ~called)
        fp = weights @ (~truth & called)
        tn = weights @ (~truth & ~called)
        sens = _ratio(tp, tp + fn)
        spec = _ratio(tn, tn + fp)
        f1 = _ratio(2 * tp, 2 * tp + fp + fn)
        auc = _weighted_auc(truth, score[:, k], weights)
        return auc, sens, spec, f1

    if n_classes == 2:
        auc, sens, spec, f1 = one_vs_rest(1)
    else:
        parts = [one_vs_rest(k) for k in np.unique(y)]
        auc, sens, spec, f1 = (np.mean([p[i] for p in parts], axis=0) for i in range(4))
    balanced = (sens + spec) / 2 if n_classes == 2 else sens
    return {
        "auc": auc,
        "accuracy": accuracy,
        "balanced_accuracy": balanced,
        "sensitivity": sens,
        "specificity": spec,
        "f1": f1,
    }


def auc_score(y: np.ndarray, score: np.ndarray) -> float:
    """AUC of a score: (n,) the positive class's score, or (n, K) per class scores or probabilities
    (two columns: of the second; more: one-vs-rest, macro-averaged).

    Examples
    --------
    >>> auc_score(np.array([0, 1, 1]), np.array([0.2, 0.1, 0.9]))
    0.5
    """
    score = np.asarray(score, dtype=float)
    n_classes = 2 if score.ndim == 1 else score.shape[1]
    dummy = np.full((len(y), n_classes), 1.0 / n_classes)
    return float(weighted_metrics(y, dummy, np.ones((1, len(y))), score=score)["auc"][0])


def stratified_bootstrap_weights(
    y: np.ndarray, n_bootstrap: int, rng: np.random.Generator, groups=None
) -> np.ndarray:
    """(n_bootstrap, n) draw counts of resamples that keep each class's number of cases.

    Resampling within each class (as pROC does by default) keeps both classes in every resample, so the
    AUC, sensitivity and specificity are defined in each. With ``groups`` (one per case: a patient, or
    near-duplicate images joined; see ``Case.group``) where some group holds several cases, whole groups
    are drawn, within the class of each group's most common label (a cluster bootstrap): the number of
    groups per class is kept, the number of cases may vary.

    Examples
    --------
    >>> w = stratified_bootstrap_weights(np.array([0, 0, 1]), 2, np.random.default_rng(0))
    >>> w.shape, w[:, 2].tolist()
    ((2, 3), [1.0, 1.0])
    >>> w = stratified_bootstrap_weights(np.array([0, 0, 1]), 3, np.random.default_rng(0), ["a", "a", "b"])
    >>> bool((w[:, 0] == w[:, 1]).all())
    True
    """
    y = np.asarray(y)
    n = len(y)
    weights = np.zeros((n_bootstrap, n))
    if n_bootstrap == 0:
        return weights
    if groups is not None and len(set(groups)) < n:
        return _group_bootstrap_weights(y, n_bootstrap, rng, groups)
    offsets = (np.arange(n_bootstrap) * n)[:, None]
    for k in np.unique(y):
        members = np.flatnonzero(y == k)
        draws = members[rng.integers(0, len(members), size=(n_bootstrap, len(members)))]
        weights += np.bincount((draws + offsets).ravel(), minlength=n_bootstrap * n).reshape(n_bootstrap, n)
    return weights


def _group_bootstrap_weights(y: np.ndarray, n_bootstrap: int, rng: np.random.Generator, groups) -> np.ndarray:
    """Cluster bootstrap of :func:`stratified_bootstrap_weights`: whole groups drawn within their class."""
    names, index = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
    membership = np.zeros((len(names), len(y)))
    membership[index, np.arange(len(y))] = 1.0
    stratum = np.array([np.bincount(y[index == g]).argmax() for g in range(len(names))])
    counts = np.zeros((n_bootstrap, len(names)))
    for k in np.unique(stratum):
        units = np.flatnonzero(stratum == k)
        draws = units[rng.integers(0, len(units), size=(n_bootstrap, len(units)))]
        for b in range(n_bootstrap):
            counts[b] += np.bincount(draws[b], minlength=len(names))
    return counts @ membership


def evaluation_rng(seed: int, evaluated_on: str) -> np.random.Generator:
    """The bootstrap generator of one evaluation set: the same for every model scored on it, so that their
    resamples are the same draws (paired intervals and paired differences).

    Examples
    --------
    >>> a, b = evaluation_rng(0, "external"), evaluation_rng(0, "external")
    >>> int(a.integers(1000)) == int(b.integers(1000))
    True
    """
    return np.random.default_rng([seed, zlib.crc32(str(evaluated_on).encode("utf-8"))])


@dataclass(frozen=True)
class MetricEstimate:
    """A metric's point estimate and its bootstrap confidence interval."""

    value: float
    ci_low: float
    ci_high: float


def evaluate_predictions(
    y: np.ndarray,
    proba: np.ndarray,
    *,
    n_bootstrap: int,
    confidence: float = 0.95,
    rng: np.random.Generator | int | None = 0,
    score: np.ndarray | None = None,
    groups=None,
) -> dict[str, MetricEstimate]:
    """Point estimates of :data:`METRICS` with stratified percentile-bootstrap confidence intervals.

    The interval is the percentile interval of ``n_bootstrap`` stratified resamples, reported as computed:
    with very few cases a skewed bootstrap distribution can give an interval that misses the point
    estimate, and it is then left so (widening it would claim a coverage it does not have).
    With ``n_bootstrap=0`` the bounds are NaN. ``score`` is passed to :func:`weighted_metrics`; ``groups``
    (one per case) makes the resamples draw whole groups (:func:`stratified_bootstrap_weights`).

    Examples
    --------
    >>> y = np.array([0, 0, 0, 1, 1, 1]); p1 = np.array([0.1, 0.2, 0.7, 0.4, 0.8, 0.9])
    >>> est = evaluate_predictions(y, np.c_[1 - p1, p1], n_bootstrap=200, rng=0)
    >>> round(est["auc"].value, 3), est["auc"].ci_low < est["auc"].ci_high
    (0.889, True)
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    y = np.asarray(y)
    point = weighted_metrics(y, proba, np.ones((1, len(y))), score)
    boot = (
        weighted_metrics(y, proba, stratified_bootstrap_weights(y, n_bootstrap, rng, groups), score)
        if n_bootstrap
        else None
    )
    alpha = (1 - confidence) / 2
    result = {}
    for name in METRICS:
        value = float(point[name][0])
        if boot is None or not np.isfinite(boot[name]).any():
            low = high = float("nan")
        else:
            low, high = (float(q) for q in np.nanquantile(boot[name], [alpha, 1 - alpha]))
        result[name] = MetricEstimate(value, low, high)
    return result
