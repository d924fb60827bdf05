"""Resampling statistics on the prepared ranks: the max-|rho| permutation null (family-wise error, one null
per model, shuffles within strata when stratified), the thresholds and p-values drawn from it, and
percentile bootstrap intervals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.explain.correlation import (
    DEFAULT_MEMORY_MB,
    MIN_CASES_RESAMPLING,
    PreparedTables,
    average_ranks,
    name_list,
    prepare_tables,
    progress_bar,
    standardise,
)
from Rad4XCNNLogic.explain.settings import ALPHA_RANGE
from Rad4XCNNLogic.explain.strata import prepare_within, within_rho


def permutation_null_prepared(
    prep: PreparedTables, n_permutations: int, seed: int, progress: bool, single_precision: bool = True
) -> dict[str, np.ndarray]:
    """The max-|rho| null of each model's pairs (model -> ``n_permutations`` values)."""
    if prep.n < MIN_CASES_RESAMPLING:
        raise Rad4XCNNError(f"a permutation test needs at least {MIN_CASES_RESAMPLING} cases, got {prep.n}")
    ops = prep.ops
    nulls = {model: np.zeros(n_permutations) for model in dict.fromkeys(prep.models)}
    zr = ops.single(prep.zr) if single_precision else prep.zr
    n_rad = zr.shape[0]
    with progress_bar(len(prep.bounds) * n_permutations, "permutations", progress) as bar:
        for start, stop, zd, _ in prep.deep_chunks():
            null = nulls[prep.models[start]]
            zd = ops.single(zd) if single_precision else zd
            # Shuffle the smaller side (the radiomic side by the inverse permutation, which gives the same
            # rhos); the shuffled copies are stacked so that a batch is one matrix product.
            shuffle_deep = zd.shape[0] <= n_rad
            moving, fixed = (zd, zr) if shuffle_deep else (zr, zd)
            denominator = prep.denominator(start, stop)
            if denominator is not None:  # stratified, a feature constant in a stratum: (moving, 1, fixed)
                denominator = denominator if shuffle_deep else denominator.T
                denominator = ops.asarray(denominator[:, None, :])
                denominator = ops.single(denominator) if single_precision else denominator
            width = moving.shape[0]
            batch = max(
                1, int(DEFAULT_MEMORY_MB * 2**20 // (zd.itemsize * width * (prep.n + fixed.shape[0])))
            )
            done = 0
            for perms in prep.permutation_batches(n_permutations, batch, seed):
                size = perms.shape[0]
                order = perms if shuffle_deep else np.argsort(perms, axis=1)
                shuffled = ops.stack_shuffled(moving, ops.index(order))
                products = (shuffled @ fixed.T).reshape(width, size, fixed.shape[0])
                if denominator is not None:
                    products = products / denominator
                block_max = ops.to_numpy(ops.abs_max_middle(products)).astype(np.float64)
                np.maximum(null[done : done + size], block_max, out=null[done : done + size])
                done += size
                bar.update(size)
    return {model: np.minimum(null, 1.0) for model, null in nulls.items()}


def permutation_null(
    deep_df: pd.DataFrame,
    radiomic_df: pd.DataFrame,
    *,
    n_permutations: int,
    seed: int = 0,
    backend: str,
    chunk_size: int | None = None,
    max_missing_fraction: float = 0.5,
    single_precision: bool = True,
    by_model: bool = False,
    strata: pd.Series | pd.DataFrame | None = None,
    progress: bool = False,
) -> np.ndarray | dict[str, np.ndarray]:
    """The largest |rho| over all feature pairs in each of ``n_permutations`` shuffles of the case order.

    Shuffling one table's cases breaks every deep–radiomic relation while keeping each feature's
    distribution and the correlations within each table, so the maximum |rho| of a shuffle is what chance
    alone reaches across the whole family of pairs. The same seed gives the same permutations on every
    backend. ``single_precision`` (default) multiplies in float32: twice as fast, and its rounding (about
    1e-6 in rho) is far below the null's own sampling error (about 1 / sqrt(n_permutations)).
    ``by_model`` returns one null per model (``resnet50_17`` -> ``resnet50``), the family each backbone's
    pairs are tested in; otherwise the largest over all models. With ``strata`` (the stratum of each case,
    see :func:`~Rad4XCNNLogic.explain.strata.spearman_within`) cases are shuffled only within their
    stratum and the null is that of rho within strata: it breaks the relation within strata and keeps any
    shift between them.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> deep = pd.DataFrame(rng.normal(size=(40, 5))); rad = pd.DataFrame(rng.normal(size=(40, 3)))
    >>> null = permutation_null(deep, rad, n_permutations=50, backend="numpy")
    >>> null.shape, bool((null > 0).all() and (null <= 1).all())
    ((50,), True)
    """
    if n_permutations < 1:
        raise Rad4XCNNError(f"the number of permutations must be at least 1, got {n_permutations}")
    prep = prepare_tables(deep_df, radiomic_df, backend, chunk_size, max_missing_fraction)
    if strata is not None:
        prep = prepare_within(prep, strata)
    nulls = permutation_null_prepared(prep, n_permutations, seed, progress, single_precision)
    return nulls if by_model else np.maximum.reduce(list(nulls.values()))


def check_alpha(alpha: float) -> None:
    """Refuse a family-wise error level outside :data:`ALPHA_RANGE`."""
    problem = ALPHA_RANGE.problem(alpha)
    if problem:
        raise Rad4XCNNError(f"alpha {problem}")


def permutation_threshold(null: np.ndarray, *, alpha: float) -> float:
    """The |rho| above which a pair is significant with family-wise error at most ``alpha``.

    A pair is significant when its permutation p-value ``(1 + #{null >= |rho|}) / (P + 1)`` is at most
    ``alpha`` (:func:`fwer_pvalues`); this returns the boundary of that set: the ``k``-th largest null value
    with ``k = floor(alpha * (P + 1))``, which a significant |rho| must exceed.

    Examples
    --------
    >>> permutation_threshold(np.linspace(0.1, 0.5, 99), alpha=0.05)
    0.48367346938775513
    """
    check_alpha(alpha)
    null = np.sort(np.asarray(null, dtype=np.float64))[::-1]
    k = math.floor(alpha * (len(null) + 1) + 1e-9)
    if k < 1:
        raise Rad4XCNNError(
            f"{len(null)} permutations cannot give a threshold at alpha {alpha}: "
            f"use at least {math.ceil(1 / alpha) - 1}"
        )
    return float(null[k - 1])


def fwer_pvalues(rho: np.ndarray, null: np.ndarray) -> np.ndarray:
    """Family-wise-error-adjusted p-values from the max-|rho| null: ``(1 + #{null >= |rho|}) / (P + 1)``."""
    null = np.sort(np.asarray(null, dtype=np.float64))
    rho = np.abs(np.asarray(rho, dtype=np.float64))
    exceed = len(null) - np.searchsorted(null, np.nan_to_num(rho, nan=0.0), side="left")
    out = (1.0 + exceed) / (len(null) + 1.0)
    return np.where(np.isnan(rho), np.nan, out)


def suggest_threshold(null: np.ndarray, *, alpha: float, step: float = 0.05) -> float:
    """A threshold ``M`` to start from: the permutation threshold rounded up to a multiple of ``step``.

    Every pair with |rho| >= the suggestion is significant with family-wise error at most ``alpha``; the
    paper's M (e.g. 0.6) asks for a strong relation, well above this significance floor in large cohorts.

    Examples
    --------
    >>> suggest_threshold(np.linspace(0.1, 0.5, 99), alpha=0.05)
    0.5
    """
    threshold = permutation_threshold(null, alpha=alpha)
    suggestion = math.ceil(round(threshold / step, 9)) * step
    if suggestion <= threshold:  # the boundary itself is not significant (strict inequality)
        suggestion += step
    return round(min(suggestion, 1.0), 10)


# ---------------------------------------------------------------------------------------------- bootstrap
def bootstrap_pairs(
    prep: PreparedTables,
    deep_index: np.ndarray,
    radiomic_index: np.ndarray,
    n_boot: int,
    confidence: float,
    seed: int,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap percentile intervals of rho for the given (deep, radiomic) index pairs of prepared tables."""
    return pair_intervals(
        prep,
        deep_index,
        radiomic_index,
        n_boot,
        confidence,
        seed,
        progress,
        resample=lambda rng: rng.integers(0, prep.n, prep.n),
        rho=pooled_rho(prep),
        desc="bootstrap",
    )


def pooled_rho(prep: PreparedTables):
    """The pooled rho of resampled cases, for :func:`pair_resamples` (the within-stratum one is
    :func:`~Rad4XCNNLogic.explain.strata.within_rho`)."""

    def rho(raw_d, raw_r, deep_pos, rad_pos, pick):
        ops = prep.ops
        zd, d_const = standardise(average_ranks(raw_d, ops), ops)
        zr, r_const = standardise(average_ranks(raw_r, ops), ops)
        sample = pick(zd, zr)
        sample[d_const[deep_pos] | r_const[rad_pos]] = np.nan  # a resample where a feature is constant
        return sample

    return rho


def pair_intervals(
    prep,
    deep_index: np.ndarray,
    radiomic_index: np.ndarray,
    n_boot: int,
    confidence: float,
    seed: int,
    progress: bool,
    *,
    resample,
    rho,
    desc: str,
) -> tuple[np.ndarray, np.ndarray]:
    """The bootstrap loop shared by the pooled and the within-stratum intervals: ``resample(rng)`` draws the
    cases of one resample, ``rho(raw_d, raw_r, deep_pos, radiomic_pos, pick)`` turns their raw values into
    the pairs' rho (``pick(zd, zr)`` takes the pairs out of the standardised product)."""
    if not 0 < confidence < 1:
        raise Rad4XCNNError(f"the confidence level must lie between 0 and 1, got {confidence}")
    values = pair_resamples(
        prep, deep_index, radiomic_index, n_boot, seed, progress, resample=resample, rho=rho, desc=desc
    )
    tail = (1 - confidence) / 2
    with np.errstate(all="ignore"):
        low, high = np.nanquantile(np.clip(values, -1, 1), [tail, 1 - tail], axis=0)
    return low, high


def pair_resamples(
    prep,
    deep_index: np.ndarray,
    radiomic_index: np.ndarray,
    n_boot: int,
    seed: int,
    progress: bool,
    *,
    resample,
    rho,
    desc: str,
    elementwise: bool = False,
) -> np.ndarray:
    """The pairs' rho on each of ``n_boot`` resamples of the cases (``n_boot`` x pairs), as
    :func:`pair_intervals` describes. ``elementwise``: each pair's product on its own (pairs x cases) rather
    than the product of every deep with every radiomic feature involved, for many pairs spread thinly."""
    if prep.n < MIN_CASES_RESAMPLING:
        raise Rad4XCNNError(f"bootstrap intervals need at least {MIN_CASES_RESAMPLING} cases, got {prep.n}")
    ops = prep.ops
    deep_used, deep_pos = np.unique(deep_index, return_inverse=True)
    rad_used, rad_pos = np.unique(radiomic_index, return_inverse=True)
    raw_d = ops.asarray(prep.aligned.deep.block(deep_used))
    raw_r = ops.asarray(prep.aligned.radiomic.block(rad_used))
    pick_d, pick_r = ops.index(deep_pos), ops.index(rad_pos)

    def pick(zd, zr):
        if elementwise:
            return ops.to_numpy((zd[pick_d] * zr[pick_r]).sum(-1))
        # The product of the features involved is at most deep x radiomic; the pairs are picked from it.
        return ops.to_numpy((zd @ zr.T)[pick_d, pick_r])

    rng = np.random.default_rng(seed)
    values = np.empty((n_boot, len(deep_index)))
    with progress_bar(n_boot, desc, progress) as bar:
        for b in range(n_boot):
            idx = ops.index(resample(rng))
            values[b] = rho(raw_d[:, idx], raw_r[:, idx], deep_pos, rad_pos, pick)
            bar.update()
    return values


def bootstrap_within(
    prep,
    deep_index: np.ndarray,
    radiomic_index: np.ndarray,
    n_boot: int,
    confidence: float,
    seed: int,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile intervals of rho_within for the given pairs, cases resampled within their strata
    (``prep``: :func:`~Rad4XCNNLogic.explain.strata.prepare_within`'s)."""
    return pair_intervals(
        prep,
        deep_index,
        radiomic_index,
        n_boot,
        confidence,
        seed,
        progress,
        resample=prep.resample,
        rho=within_rho(prep),
        desc="bootstrap within strata",
    )


def bootstrap_intervals(
    deep_df: pd.DataFrame,
    radiomic_df: pd.DataFrame,
    pairs: Sequence[tuple[str, str]],
    *,
    n_boot: int,
    confidence: float = 0.95,
    seed: int = 0,
    backend: str,
    max_missing_fraction: float = 0.5,
    strata: pd.Series | pd.DataFrame | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Percentile bootstrap intervals of rho for the given (deep, radiomic) pairs: cases are resampled with
    replacement ``n_boot`` times and each pair's rho recomputed on the resample's own ranks. With
    ``strata``, the intervals are of rho within strata and cases are resampled within their stratum.

    Examples
    --------
    >>> rng = np.random.default_rng(2)
    >>> rad = pd.DataFrame({"original_firstorder_Mean": rng.normal(size=60)})
    >>> deep = pd.DataFrame({"resnet50_0": rad.iloc[:, 0] + rng.normal(size=60)})
    >>> pairs = [("resnet50_0", "original_firstorder_Mean")]
    >>> ci = bootstrap_intervals(deep, rad, pairs, n_boot=100, backend="numpy")
    >>> bool(ci["ci_low"].iloc[0] < ci["ci_high"].iloc[0])
    True
    """
    prep = prepare_tables(deep_df, radiomic_df, backend, None, max_missing_fraction)
    deep_pos = {c: i for i, c in enumerate(prep.aligned.deep.columns)}
    rad_pos = {c: i for i, c in enumerate(prep.aligned.radiomic.columns)}
    unknown = [f"{d}/{r}" for d, r in pairs if d not in deep_pos or r not in rad_pos]
    if unknown:
        raise Rad4XCNNError(f"unknown feature pair(s) for the bootstrap: {name_list(unknown)}")
    di = np.array([deep_pos[d] for d, _ in pairs], dtype=np.intp)
    ri = np.array([rad_pos[r] for _, r in pairs], dtype=np.intp)
    run = bootstrap_pairs
    if strata is not None:
        prep, run = prepare_within(prep, strata), bootstrap_within
    low, high = run(prep, di, ri, n_boot, confidence, seed, progress) if len(pairs) else ([], [])
    index = pd.MultiIndex.from_tuples(list(pairs), names=["deep_feature", "radiomic_feature"])
    return pd.DataFrame({"ci_low": low, "ci_high": high}, index=index)
