"""The feature filter learnt inside each training split or cross-validation fold: median imputation,
near-zero-variance removal, optional correlation and univariate selection (a scikit-learn transformer).

Imports scikit-learn at module level; the rest of the engine imports this module inside the functions that
build a pipeline, which keeps ``import Rad4XCNNLogic`` free of scikit-learn.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from Rad4XCNNLogic.errors import Rad4XCNNError


def univariate_pvalues(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-column p-value of a class difference: Mann–Whitney U (two classes) or Kruskal–Wallis (more).

    Columns that are constant within the data get p = 1.

    Examples
    --------
    >>> X = np.c_[np.arange(10.0), np.ones(10)]; y = np.repeat([0, 1], 5)
    >>> p = univariate_pvalues(X, y); bool(p[0] < 0.05), float(p[1])
    (True, 1.0)
    """
    from scipy import stats

    X = np.asarray(X, dtype=float)
    y = np.asarray(y)
    groups = [X[y == k] for k in np.unique(y)]
    if len(groups) < 2:
        return np.ones(X.shape[1])
    with np.errstate(all="ignore"):
        if len(groups) == 2:
            p = stats.mannwhitneyu(groups[0], groups[1], axis=0, alternative="two-sided").pvalue
        else:
            p = stats.kruskal(*groups, axis=0).pvalue
    p = np.asarray(p, dtype=float)
    p[~np.isfinite(p)] = 1.0
    p[np.ptp(X, axis=0) == 0] = 1.0
    return p


def near_zero_variance(X: np.ndarray, freq_ratio: float = 95 / 5, unique_fraction: float = 0.1) -> np.ndarray:
    """Mask of near-zero-variance columns (caret's ``nearZeroVar`` rule, which does not depend on scale).

    A column is near-zero-variance when it is constant, or when its most common value is more than
    ``freq_ratio`` times as frequent as the second most common *and* its distinct values are at most
    ``unique_fraction`` of the rows (e.g. a feature that is 0 in all but two cases).

    Examples
    --------
    >>> X = np.c_[np.arange(40.0), np.r_[np.zeros(39), 1.0], np.ones(40)]
    >>> near_zero_variance(X).tolist()
    [False, True, True]
    """
    X = np.asarray(X, dtype=float)
    n = X.shape[0]
    ordered = np.sort(X, axis=0)
    changes = ordered[1:] != ordered[:-1]
    n_unique = 1 + changes.sum(axis=0)
    nzv = n_unique <= 1
    for j in np.flatnonzero(~nzv & (n_unique <= unique_fraction * n)):
        _, counts = np.unique(ordered[:, j], return_counts=True)
        top = np.sort(counts)[::-1]
        nzv[j] = top[0] > freq_ratio * top[1]
    return nzv


def _spearman_redundant(Xr: np.ndarray, order: np.ndarray, threshold: float) -> np.ndarray:
    """Mask of columns to drop: walking ``order``, a column correlated above ``threshold`` (|rho|) with a
    column already kept is dropped."""
    from scipy.stats import rankdata

    ranks = rankdata(Xr, axis=0)
    ranks -= ranks.mean(axis=0)
    norms = np.linalg.norm(ranks, axis=0)
    norms[norms == 0] = 1.0
    z = ranks / norms
    corr = np.abs(z.T @ z)
    dropped = np.zeros(Xr.shape[1], dtype=bool)
    for j in order:
        if dropped[j]:
            continue
        too_close = corr[j] > threshold
        too_close[j] = False
        dropped |= too_close
    return dropped


def _filter_fit(X, y, correlation_threshold, select_k):
    X = np.array(X, dtype=float)
    X[~np.isfinite(X)] = np.nan
    p = X.shape[1]
    observed = ~np.all(np.isnan(X), axis=0)
    with np.errstate(all="ignore"):
        medians = np.where(observed, np.nanmedian(np.where(observed, X, 0.0), axis=0), 0.0)
    X = np.where(np.isnan(X), medians, X)
    keep = observed & ~near_zero_variance(X)
    if not keep.any():
        raise Rad4XCNNError(f"none of the {p} features varies on the training data (all near-constant)")
    if correlation_threshold is not None or select_k is not None:
        pvalues = np.ones(p)
        pvalues[keep] = univariate_pvalues(X[:, keep], y)
        if correlation_threshold is not None:
            columns = np.flatnonzero(keep)
            order = np.lexsort((columns, pvalues[columns]))  # strongest association first, then column order
            keep[columns[_spearman_redundant(X[:, columns], order, correlation_threshold)]] = False
        if select_k is not None and keep.sum() > select_k:
            columns = np.flatnonzero(keep)
            best = columns[np.lexsort((columns, pvalues[columns]))[:select_k]]
            keep[:] = False
            keep[best] = True
    return keep, medians


class TrainingFeatureFilter(TransformerMixin, BaseEstimator):
    """Median imputation, near-zero-variance removal, optional correlation and univariate selection.

    Everything is learnt in :meth:`fit` from the data it is given (the training split, or a
    cross-validation fold's training part), never from the data it later transforms.

    Parameters
    ----------
    correlation_threshold : float or None
        Of features correlated above this |Spearman rho|, keep the one with the smallest univariate
        p-value (ties: the earlier column). None: no redundancy removal.
    select_k : int or None
        Keep at most this many features, those with the smallest univariate p-values (Mann–Whitney U,
        or Kruskal–Wallis for more than two classes). None: no univariate selection.

    Attributes
    ----------
    support_ : bool array, which input columns are kept.
    medians_ : the training median of every input column (replaces NaN and inf).

    Examples
    --------
    >>> f = TrainingFeatureFilter(correlation_threshold=0.95).fit(X_train, y_train)  # doctest: +SKIP
    >>> f.transform(X_test).shape[1] == f.support_.sum()  # doctest: +SKIP
    True
    """

    def __init__(self, correlation_threshold: float | None = None, select_k: int | None = None):
        self.correlation_threshold = correlation_threshold
        self.select_k = select_k

    def fit(self, X, y):
        X = np.asarray(X, dtype=float)
        if X.ndim != 2:
            raise ValueError(f"expected a 2D array of features, got shape {X.shape}")
        self.support_, self.medians_ = _filter_fit(
            X, np.asarray(y), self.correlation_threshold, self.select_k
        )
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        X = np.array(np.asarray(X, dtype=float)[:, self.support_])
        bad = ~np.isfinite(X)
        if bad.any():
            X[bad] = np.broadcast_to(self.medians_[self.support_], X.shape)[bad]
        return X

    def get_feature_names_out(self, input_features=None):
        names = (
            np.asarray(input_features, dtype=object)
            if input_features is not None
            else np.array([f"x{i}" for i in range(self.n_features_in_)], dtype=object)
        )
        return names[self.support_]
