"""Spearman's rho within strata (class, cohort, scanner, ...): what a deep and a radiomic feature share beyond
a common shift between classes or sites.

Ranks are taken within each stratum, centred and scaled there, and pooled: rho_within is the size-weighted
mean of the per-stratum Spearman rhos, one matrix product per chunk on the same numpy/torch code as the
pooled rho. Its permutation null shuffles cases within strata; its bootstrap resamples within strata.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.explain.correlation import (
    AlignedTables,
    FeatureTable,
    NumpyOps,
    PreparedTables,
    average_ranks,
    benjamini_hochberg_by_model,
    name_list,
    prepare_tables,
    progress_bar,
    standardise,
    t_pvalues,
)
from Rad4XCNNLogic.explain.settings import MIN_STRATUM
from Rad4XCNNLogic.infra.storage import atomic_path, write_json_atomic

log = logging.getLogger(__name__)

STRATUM_SEPARATOR = " | "
"""Joins the values of several stratum columns into one stratum name (``benign | internal``)."""


# ------------------------------------------------------------------------------------------ the strata
def stratum_labels(
    manifest: pd.DataFrame,
    columns: Sequence[str] | str,
    *,
    cases: Sequence[str] | None = None,
    skip_blank: bool = False,
) -> pd.Series:
    """The stratum of each case: the values of ``columns`` of the manifest, joined (``benign | internal``).

    ``manifest`` is indexed by case id, or has a ``case_id`` column. Any column may be a stratum (label,
    cohort, scanner, ...). ``cases``: only these cases are read (the cases an explanation uses, so that a
    blank label on a case it never uses does not matter). A missing column or a case without a value is a
    one-line error; with ``skip_blank`` such a case is left out with a warning instead.

    Examples
    --------
    >>> m = pd.DataFrame({"case_id": ["a", "b"], "label": ["benign", "malignant"], "cohort": ["x", "x"]})
    >>> stratum_labels(m, "label,cohort").tolist()
    ['benign | x', 'malignant | x']
    """
    if isinstance(columns, str):
        columns = [c.strip() for c in columns.split(",") if c.strip()]
    columns = list(columns)
    if not columns:
        raise Rad4XCNNError("no stratum column given: expected manifest column names such as label,cohort")
    frame = manifest.set_index("case_id") if "case_id" in manifest.columns else manifest
    if cases is not None:
        frame = frame[frame.index.map(str).isin([str(c) for c in cases])]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise Rad4XCNNError(
            f"the manifest has no column {name_list(missing)} to stratify by "
            f"(its columns: {name_list([str(c) for c in frame.columns], 8)})"
        )
    values = frame[columns].astype(object)
    blank = values.isna() | values.apply(lambda col: col.astype(str).str.strip() == "")
    if blank.any(axis=None) and skip_blank:
        lacking = blank.any(axis=1).to_numpy()
        log.warning(
            "%d case(s) without a value in the stratum column(s) %s are left out: %s",
            int(lacking.sum()),
            ",".join(columns),
            name_list([str(c) for c in frame.index[lacking]]),
        )
        frame, values = frame[~lacking], values[~lacking]
    elif blank.any(axis=None):
        row = int(np.flatnonzero(blank.any(axis=1).to_numpy())[0])
        column = columns[int(np.flatnonzero(blank.iloc[row].to_numpy())[0])]
        raise Rad4XCNNError(
            f"case {frame.index[row]} has no value in the stratum column {column} "
            f"({int(blank.any(axis=1).sum())} case(s) lack one)"
        )
    if values.empty:
        labels = pd.Series([], index=values.index, dtype=object)
    else:
        labels = values.astype(str).apply(lambda r: STRATUM_SEPARATOR.join(v.strip() for v in r), axis=1)
    labels.index = labels.index.map(str)
    labels.name = ",".join(columns)
    return labels


def _as_labels(strata: pd.Series | pd.DataFrame) -> pd.Series:
    if isinstance(strata, pd.DataFrame):
        return stratum_labels(strata, list(strata.columns.drop("case_id", errors="ignore")))
    if not isinstance(strata, pd.Series):
        raise Rad4XCNNError(
            f"strata must be a pandas Series or DataFrame indexed by case id, got {type(strata).__name__}"
        )
    labels = strata.copy()
    labels.index = labels.index.map(str)
    if labels.isna().any():
        raise Rad4XCNNError(f"case {labels.index[labels.isna().to_numpy()][0]} has no stratum")
    return labels.astype(str)


# --------------------------------------------------------------------------------------- within ranks
def _within_standardise(raw, bounds: Sequence[tuple[int, int]], weights: np.ndarray, ops: NumpyOps):
    """Average ranks within each stratum (a contiguous run of columns), centred and scaled to length
    ``sqrt(n_s / n)`` there, so that a dot product of two rows is the size-weighted mean of the per-stratum
    rhos. Returns the standardised rows and, per row and stratum, whether the feature varies there."""
    rows = raw.shape[0]
    z = ops.zeros((rows, bounds[-1][1]))
    informative = np.zeros((rows, len(bounds)), dtype=bool)
    for s, (a, b) in enumerate(bounds):
        zs, constant = standardise(average_ranks(raw[:, a:b], ops), ops)
        z[:, a:b] = zs * math.sqrt(weights[s])
        informative[:, s] = ~constant
    return z, informative


class _WithinPrepared(PreparedTables):
    """Aligned tables with the cases grouped by stratum, and the radiomic ranks standardised within strata.

    It answers the same calls as the pooled preparation (``deep_chunks``, ``permutation_batches``,
    ``denominator``), so the permutation null runs through the same code.
    """

    def __init__(
        self,
        pooled: PreparedTables,
        labels: pd.Series,
        columns: Sequence[str],
        min_stratum: int = MIN_STRATUM,
    ):
        cases = pooled.aligned.cases
        missing = [c for c in cases if c not in labels.index]
        if missing:
            raise Rad4XCNNError(
                f"{len(missing)} case(s) of the feature tables are missing from the manifest/strata: "
                f"{name_list(missing)}"
            )
        if labels.index.duplicated().any():
            raise Rad4XCNNError(
                f"duplicate case id(s) in the strata: {name_list(labels.index[labels.index.duplicated()])}"
            )
        of_case = labels.reindex(cases).to_numpy()
        sizes = pd.Series(of_case).value_counts(sort=False)
        min_stratum = max(3, int(min_stratum))  # a stratum's rank correlation needs 3 cases
        small = {str(k): int(v) for k, v in sizes.items() if v < min_stratum}
        kept = sorted(str(k) for k, v in sizes.items() if v >= min_stratum)
        if not kept:
            raise Rad4XCNNError(
                f"no stratum of {','.join(columns)} has at least {min_stratum} cases "
                f"({name_list([f'{k}: {v}' for k, v in sizes.items()])}): nothing to correlate within strata"
            )
        if small:
            log.warning(
                "%d stratum(s) with fewer than %d cases are left out of the within-stratum correlation: %s",
                len(small),
                min_stratum,
                name_list([f"{k} ({v})" for k, v in small.items()]),
            )
        positions, bounds = [], []
        for name in kept:
            where = np.flatnonzero(of_case == name)
            bounds.append((len(positions), len(positions) + len(where)))
            positions.extend(where.tolist())
        positions = np.asarray(positions, dtype=np.intp)
        n = len(positions)  # strata of at least 3 cases leave n - strata - 1 >= 1 degrees of freedom
        grouped = [
            FeatureTable(t.label, t.frame, t.rows[positions], t.columns, t.col_pos)
            for t in (pooled.aligned.deep, pooled.aligned.radiomic)
        ]
        aligned = AlignedTables(
            grouped[0],
            grouped[1],
            [cases[i] for i in positions],
            dict(pooled.aligned.dropped_cases),
            pooled.aligned.dropped_features,
        )
        self.columns = list(columns)
        self.min_stratum = min_stratum
        self.strata = kept
        self.stratum_bounds = bounds
        self.sizes = np.array([b - a for a, b in bounds])
        self.weights = self.sizes / n
        self.small_strata = small
        self.stratum_of = np.repeat(np.arange(len(kept)), self.sizes)
        self.aligned, self.ops, self.chunk, self.n = aligned, pooled.ops, pooled.chunk, n
        self.models, self.bounds = pooled.models, pooled.bounds
        n_rad = len(aligned.radiomic.columns)
        self.zr = self.ops.zeros((n_rad, n))
        self.r_informative = np.zeros((n_rad, len(kept)), dtype=bool)
        for start in range(0, n_rad, self.chunk):
            stop = min(start + self.chunk, n_rad)
            block = self.ops.asarray(aligned.radiomic.block(slice(start, stop)))
            self.zr[start:stop], self.r_informative[start:stop] = _within_standardise(
                block, bounds, self.weights, self.ops
            )
        self.r_constant = ~self.r_informative.any(axis=1)
        # Whether each deep feature varies in each stratum: max != min, one cheap pass without sorting, so
        # that the permutation null knows every chunk's denominator before ranking it.
        n_deep = len(aligned.deep.columns)
        self.d_informative = np.zeros((n_deep, len(kept)), dtype=bool)
        for start in range(0, n_deep, self.chunk):
            stop = min(start + self.chunk, n_deep)
            block = aligned.deep.block(slice(start, stop))
            for s, (a, b) in enumerate(bounds):
                self.d_informative[start:stop, s] = block[:, a:b].max(axis=1) > block[:, a:b].min(axis=1)

    def deep_chunks(self) -> Iterator[tuple[int, int, object, np.ndarray]]:
        for start, stop in self.bounds:
            block = self.ops.asarray(self.aligned.deep.block(slice(start, stop)))
            zd, informative = _within_standardise(block, self.stratum_bounds, self.weights, self.ops)
            yield start, stop, zd, ~informative.any(axis=1)

    def permutation_batches(self, n_permutations: int, batch: int, seed: int) -> Iterator[np.ndarray]:
        """Seeded orders that shuffle cases only within their stratum. Each order sorts uniform keys
        offset by the stratum, drawn row by row, so the orders do not depend on the batch size."""
        rng = np.random.default_rng(seed)
        offset = self.stratum_of.astype(np.float64)
        for start in range(0, n_permutations, batch):
            size = min(batch, n_permutations - start)
            yield np.argsort(rng.random((size, self.n)) + offset, axis=1, kind="stable")

    def denominator(self, start: int, stop: int) -> np.ndarray | None:
        denominator = _denominator(self.d_informative[start:stop], self.r_informative, self.weights)
        if denominator is not None:
            # No stratum where both vary: the product is exactly 0, and 0 / inf keeps it 0 in the null.
            denominator[denominator == 0] = np.inf
        return denominator

    def resample(self, rng: np.random.Generator) -> np.ndarray:
        """Case positions drawn with replacement within each stratum (the bootstrap's resample)."""
        return np.concatenate([rng.integers(a, b, b - a) for a, b in self.stratum_bounds])


def _denominator(d_inf: np.ndarray, r_inf: np.ndarray, weights: np.ndarray) -> np.ndarray | None:
    """Total weight of the strata where both features vary, per pair; None when both vary everywhere
    (then the weights add up to 1 and the products are already the weighted mean of the rhos)."""
    if d_inf.all() and r_inf.all():
        return None
    return (d_inf * weights) @ r_inf.T.astype(np.float64)


# ------------------------------------------------------------------------------------------ the result
HETEROGENEITY = ("rho_min", "rho_max", "p_heterogeneity", "q_heterogeneity")
"""The per-pair matrices of strata that disagree, saved as ``<name>_within.npy``."""

SPEARMAN_Z_VARIANCE = 1.06
"""Fisher's z of a Spearman rho over ``n`` cases has variance about ``1.06 / (n - 3)`` (Fieller, Hartley and
Pearson 1957), not Pearson's ``1 / (n - 3)``: the heterogeneity test weighs each stratum by
``(n_s - 3) / 1.06``."""


class _Heterogeneity:
    """Running per-pair sums over strata: the smallest and largest per-stratum rho and Cochran's Q of their
    Fisher z (weights ``(n_s - 3) / 1.06``), chunk by chunk."""

    def __init__(self, n_deep: int, n_rad: int):
        self.low = np.full((n_deep, n_rad), np.nan)
        self.high = np.full((n_deep, n_rad), np.nan)
        self.sw, self.swz, self.swz2, self.k = (np.zeros((n_deep, n_rad)) for _ in range(4))

    def add(self, rows: slice, rho_s: np.ndarray, valid: np.ndarray, size: int) -> None:
        rho_s = np.where(valid, rho_s, np.nan)
        self.low[rows] = np.fmin(self.low[rows], rho_s)
        self.high[rows] = np.fmax(self.high[rows], rho_s)
        if size <= 3:
            return
        weight = np.where(valid, (size - 3) / SPEARMAN_Z_VARIANCE, 0.0)
        z = np.arctanh(np.clip(np.nan_to_num(rho_s), -0.9999, 0.9999))
        self.sw[rows] += weight
        self.swz[rows] += weight * z
        self.swz2[rows] += weight * z * z
        self.k[rows] += valid

    def pvalues(self) -> np.ndarray:
        from scipy import special  # chdtrc(df, x): the chi-squared survival function, without scipy.stats

        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.maximum(self.swz2 - self.swz**2 / self.sw, 0.0)
            p = special.chdtrc(self.k - 1, q)
        return np.where(self.k >= 2, p, np.nan)


@dataclass
class StratifiedResult:
    """Spearman's rho within strata for every (deep, radiomic) pair, with its p and per-model BH q.

    ``rho``, ``p``, ``q`` are deep x radiomic, in the order of the pooled
    :class:`~Rad4XCNNLogic.explain.correlation.CorrelationResult`. ``rho`` is the size-weighted mean of the
    per-stratum Spearman rhos over the strata where both features vary (NaN where there is none). ``p``
    comes from the t approximation with ``n - strata - 1`` degrees of freedom (``n`` and ``strata`` counted
    over the strata where the pair varies): pooling within-stratum ranks spends one degree of freedom on each
    stratum's centring, as a correlation adjusted for a categorical covariate does, and one on the slope; with
    one stratum that is Spearman's ``n - 2``. ``cases`` are the cases in the strata used; ``small_strata``
    those left out (stratum -> cases).

    Strata that disagree: ``rho_min`` and ``rho_max`` are the smallest and largest per-stratum rho (over the
    strata where both features vary), ``p_heterogeneity`` the test that the per-stratum rhos are equal
    (Cochran's Q on Fisher's z, :data:`SPEARMAN_Z_VARIANCE`) and ``q_heterogeneity`` its per-model BH q.
    """

    rho: np.ndarray
    p: np.ndarray
    q: np.ndarray
    columns: list[str]
    strata: dict[str, int]
    cases: list[str]
    small_strata: dict[str, int] = field(default_factory=dict)
    rho_min: np.ndarray | None = None
    rho_max: np.ndarray | None = None
    p_heterogeneity: np.ndarray | None = None
    q_heterogeneity: np.ndarray | None = None

    @property
    def n_cases(self) -> int:
        return len(self.cases)

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``rho_within.npy``, ``p_within.npy``, ``q_within.npy`` and ``strata.json``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("rho", "p", "q", *HETEROGENEITY):
            if getattr(self, name) is not None:
                with atomic_path(folder / f"{name}_within.npy") as tmp, tmp.open("wb") as fh:
                    np.save(fh, getattr(self, name))
        meta = {"columns": self.columns, "strata": self.strata, "cases": self.cases}
        write_json_atomic(folder / "strata.json", {**meta, "small_strata": self.small_strata})
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> StratifiedResult | None:
        """Read what :meth:`save` wrote; None when the folder holds no stratified result."""
        folder = Path(folder)
        if not (folder / "strata.json").exists():
            return None
        try:
            meta = json.loads((folder / "strata.json").read_text(encoding="utf-8"))
            arrays = {n: np.load(folder / f"{n}_within.npy", allow_pickle=False) for n in ("rho", "p", "q")}
            for name in HETEROGENEITY:  # absent in an explanation written before the heterogeneity test
                if (folder / f"{name}_within.npy").exists():
                    arrays[name] = np.load(folder / f"{name}_within.npy", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise Rad4XCNNError(f"cannot read the within-stratum matrices in {folder}: {exc}") from None
        return cls(**arrays, **meta)


def within_spearman(prep: _WithinPrepared, progress: bool) -> StratifiedResult:
    """The within-stratum rho, p and q of every pair of prepared tables, chunk by chunk."""
    ops = prep.ops
    n_deep, n_rad = len(prep.aligned.deep.columns), len(prep.aligned.radiomic.columns)
    rho = np.empty((n_deep, n_rad))
    spread = _Heterogeneity(n_deep, n_rad)
    with progress_bar(n_deep, "rho within strata", progress) as bar:
        for start, stop, zd, _ in prep.deep_chunks():
            rho[start:stop] = 0.0
            for s, (a, b) in enumerate(prep.stratum_bounds):
                # Each stratum's rows are scaled by sqrt(n_s / n): their product is weight_s * rho_s.
                part = ops.to_numpy(zd[:, a:b] @ prep.zr[:, a:b].T)
                rho[start:stop] += part
                valid = prep.d_informative[start:stop, s][:, None] & prep.r_informative[:, s][None, :]
                spread.add(slice(start, stop), part / prep.weights[s], valid, int(prep.sizes[s]))
            bar.update(stop - start)
    denominator = _denominator(prep.d_informative, prep.r_informative, prep.weights)
    n_strata = len(prep.strata)
    # Degrees of freedom n - strata - 1: centring the ranks in each stratum spends one per stratum (as a
    # correlation adjusted for a categorical covariate does) and the slope one more; with one stratum this
    # is Spearman's n - 2. The null variance of the weighted mean of per-stratum rhos,
    # sum_s (n_s / n)^2 / (n_s - 1), is about 1 / (n - strata): the t approximation's 1 / (dof + 1).
    if denominator is None:
        dof: float | np.ndarray = prep.n - n_strata - 1
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            rho /= denominator
        rho[denominator == 0] = np.nan
        # Per pair, only the strata where both features vary count, in cases and in strata.
        n_pair = prep.d_informative.astype(np.float64) * prep.sizes @ prep.r_informative.T
        strata_pair = prep.d_informative.astype(np.float64) @ prep.r_informative.T
        dof = np.where(denominator > 0, n_pair - strata_pair - 1, 0)
    np.clip(rho, -1.0, 1.0, out=rho)
    p = t_pvalues(rho, dof)
    p_het = spread.pvalues()
    return StratifiedResult(
        rho=rho,
        p=p,
        q=benjamini_hochberg_by_model(p, prep.models),
        rho_min=np.clip(spread.low, -1.0, 1.0),
        rho_max=np.clip(spread.high, -1.0, 1.0),
        p_heterogeneity=p_het,
        q_heterogeneity=benjamini_hochberg_by_model(p_het, prep.models),
        columns=prep.columns,
        strata={name: int(size) for name, size in zip(prep.strata, prep.sizes, strict=True)},
        cases=list(prep.aligned.cases),
        small_strata=dict(prep.small_strata),
    )


def within_rho(prep: _WithinPrepared):
    """The within-stratum rho of resampled cases, for
    :func:`~Rad4XCNNLogic.explain.resampling.pair_intervals`: ``rho(raw_d, raw_r, deep_pos, rad_pos, pick)``
    standardises each stratum and weighs it by its size."""

    def rho(raw_d, raw_r, deep_pos, rad_pos, pick):
        zd, d_inf = _within_standardise(raw_d, prep.stratum_bounds, prep.weights, prep.ops)
        zr, r_inf = _within_standardise(raw_r, prep.stratum_bounds, prep.weights, prep.ops)
        weight = (d_inf[deep_pos] * prep.weights * r_inf[rad_pos]).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(weight > 0, pick(zd, zr) / weight, np.nan)

    return rho


def prepare_within(
    pooled: PreparedTables, strata: pd.Series | pd.DataFrame, min_stratum: int = MIN_STRATUM
) -> _WithinPrepared:
    """The within-stratum preparation of already aligned tables (see :func:`spearman_within`); strata of
    fewer than ``min_stratum`` cases are left out."""
    labels = _as_labels(strata)
    columns = [c for c in str(labels.name or "stratum").split(",") if c]
    return _WithinPrepared(pooled, labels, columns, min_stratum)


def spearman_within(
    deep_df: pd.DataFrame,
    radiomic_df: pd.DataFrame,
    strata: pd.Series | pd.DataFrame,
    *,
    backend: str,
    chunk_size: int | None = None,
    max_missing_fraction: float = 0.5,
    min_stratum: int = MIN_STRATUM,
    progress: bool = False,
) -> StratifiedResult:
    """Spearman's rho within strata, its p (``n - strata - 1`` degrees of freedom) and per-model BH q.

    Parameters
    ----------
    deep_df, radiomic_df
        Cases x features, indexed by case id, as for
        :func:`~Rad4XCNNLogic.explain.correlation.spearman` (the same cases and features are used).
    strata
        The stratum of each case: a Series indexed by case id (e.g. :func:`stratum_labels`), or a DataFrame
        of stratum columns indexed by case id. Every case used must have one; strata with fewer than
        ``min_stratum`` cases (:data:`~Rad4XCNNLogic.explain.settings.MIN_STRATUM`, at least 3) are left out
        and reported in ``small_strata``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> site = np.repeat([0.0, 3.0], 40)
    >>> rad = pd.DataFrame({"original_firstorder_Mean": site + rng.normal(size=80)})
    >>> deep = pd.DataFrame({"cnn_0": site + rng.normal(size=80)})
    >>> within = spearman_within(deep, rad, pd.Series(site.astype(str)), backend="numpy")
    >>> bool(abs(within.rho[0, 0]) < 0.3)
    True
    """
    prep = prepare_tables(deep_df, radiomic_df, backend, chunk_size, max_missing_fraction)
    return within_spearman(prepare_within(prep, strata, min_stratum), progress)
