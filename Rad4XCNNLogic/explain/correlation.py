"""Spearman's rho between every deep and every radiomic feature, with its p- and q-values.

Each feature's ranks (ties averaged) are standardised once, so that all rhos are one matrix product; it runs
in chunks of deep features (one model per chunk), on numpy or on torch (GPU when present) through the same
code (:mod:`~Rad4XCNNLogic.explain.backends`). The permutation null and the bootstrap build on the same
preparation (:mod:`~Rad4XCNNLogic.explain.resampling`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from Rad4XCNNLogic.errors import Rad4XCNNError, first_line
from Rad4XCNNLogic.explain.backends import NumpyOps, resolve_backend
from Rad4XCNNLogic.infra.storage import atomic_path, write_json_atomic
from Rad4XCNNLogic.names import model_of

log = logging.getLogger(__name__)

MIN_CASES = 3
"""Spearman's p-value has ``n - 2`` degrees of freedom: fewer than 3 cases give no test."""
MIN_CASES_RESAMPLING = 8
"""Below this, a permutation test or bootstrap has too few distinct resamples to mean anything."""
DEFAULT_MEMORY_MB = 512
"""Working memory of one chunk of ranks (the input tables are not counted)."""
# Arrays of a chunk's size alive while it is ranked: input, sorted values, order, run flags, run index,
# ranks and their unsorted copy.
_SORT_COPIES = 8


def model_runs(models: Sequence[str], chunk: int) -> list[tuple[int, int]]:
    """``(start, stop)`` chunks of at most ``chunk`` rows that never span two models (backbones, or a
    backbone's stages: :func:`~Rad4XCNNLogic.names.model_of`): each model's chunks start at its own first
    row, so they do not depend on the other models in the table. BH q and the permutation null run per
    model, so that adding a backbone never changes another's results.

    Examples
    --------
    >>> model_runs(["a", "a", "a", "b", "b"], 2)
    [(0, 2), (2, 3), (3, 5)]
    """
    bounds, start = [], 0
    for stop in range(1, len(models) + 1):
        if stop == len(models) or models[stop] != models[start] or stop - start == chunk:
            bounds.append((start, stop))
            start = stop
    return bounds


# ------------------------------------------------------------------------------------------------ ranks
def average_ranks(x, ops: NumpyOps):
    """Ranks 1..n along the last axis of a 2D array, tied values sharing their average rank (as
    ``scipy.stats.rankdata``).

    After sorting each row, runs of equal values are found on the flattened array (every row starts a new
    run), so the whole computation is one sort plus a few passes over flat arrays: a run starting at
    0-based position ``s`` with ``k`` members gives each of them ``s + (k + 1) / 2``, repeated ``k`` times.
    """
    rows, n = x.shape
    values, order = ops.sort_last(x)
    new_run = ops.ones_bool(values.shape)
    new_run[:, 1:] = values[:, 1:] != values[:, :-1]
    flat = new_run.reshape(-1)
    starts = ops.flatnonzero(flat)
    sizes = ops.diff_to(starts, rows * n)
    twice_average = 2 * (starts % n) + sizes + 1  # integers: no rounding, one conversion at the end
    ranks = ops.float64(ops.repeat(twice_average, sizes).reshape(rows, n)) * 0.5
    return ops.unsort_last(ranks, order)


def rank_data(x: np.ndarray, backend: str = "numpy") -> np.ndarray:
    """Average ranks (1-based, ties averaged) of each row of ``x``, as ``scipy.stats.rankdata(x, axis=1)``.

    Examples
    --------
    >>> rank_data(np.array([[3.0, 1.0, 1.0, 2.0]]))
    array([[4. , 1.5, 1.5, 3. ]])
    """
    ops = resolve_backend(backend)
    return ops.to_numpy(average_ranks(ops.asarray(np.atleast_2d(x)), ops))


def standardise(ranks, ops: NumpyOps):
    """Centre and scale each row of ranks to unit length, so that a dot product of two rows is their rho.

    The mean rank is (n + 1) / 2 whatever the ties; a constant row stays all zeros (its rho is undefined) and
    its flag comes back True.
    """
    n = ranks.shape[-1]
    centred = ranks - (n + 1) * 0.5
    norm = ops.sqrt((centred * centred).sum(-1, keepdims=True))
    constant = norm[..., 0] == 0
    norm = ops.where(norm == 0, 1.0, norm)
    return centred / norm, ops.to_numpy(constant).astype(bool)


# ------------------------------------------------------------------------------------------ input tables
@dataclass
class FeatureTable:
    """One feature table restricted, by position, to the cases and features in use (no copy is made)."""

    label: str
    frame: pd.DataFrame
    rows: np.ndarray
    columns: list[str]
    col_pos: np.ndarray

    def block(self, cols: np.ndarray | slice, rows: np.ndarray | None = None) -> np.ndarray:
        """Values of the given used features (by index into ``columns``) as a features x cases float array."""
        take = self.col_pos[cols]
        values = self.frame.iloc[self.rows if rows is None else rows, take].to_numpy()
        if values.dtype not in (np.float32, np.float64):
            values = values.astype(np.float64)
        return values.T


def _check_frame(frame: pd.DataFrame, label: str) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise Rad4XCNNError(f"the {label} table must be a pandas DataFrame, got {type(frame).__name__}")
    frame = frame.copy(deep=False)
    frame.index = frame.index.map(str)
    frame.columns = frame.columns.map(str)
    duplicated = frame.index[frame.index.duplicated()].unique()
    if len(duplicated):
        raise Rad4XCNNError(f"the {label} table has duplicate case id(s): {name_list(duplicated)}")
    duplicated = frame.columns[frame.columns.duplicated()].unique()
    if len(duplicated):
        raise Rad4XCNNError(f"the {label} table has duplicate feature name(s): {name_list(duplicated)}")
    diagnostics = [c for c in frame.columns if c.startswith("diagnostics_")]
    if diagnostics:
        log.info("%s table: leaving out %d PyRadiomics diagnostics column(s)", label, len(diagnostics))
        frame = frame.drop(columns=diagnostics)
    not_numeric = [c for c, dt in frame.dtypes.items() if not (pd.api.types.is_numeric_dtype(dt))]
    if not_numeric:
        raise Rad4XCNNError(
            f"the {label} table has non-numeric column(s) {name_list(not_numeric)}: "
            "expected one number per case and feature"
        )
    if frame.shape[1] == 0:
        raise Rad4XCNNError(f"the {label} table has no feature columns")
    return frame


def name_list(items: Sequence, limit: int = 5) -> str:
    """At most ``limit`` names, comma-separated, and how many more: for one-line messages."""
    items = [str(i) for i in items]
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _missing_counts(table: FeatureTable, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Per feature, how many used cases lack a finite value; per case, a feature it lacks (-1 if none)."""
    n_cols = len(table.columns)
    per_feature = np.zeros(n_cols, dtype=np.int64)
    first_missing = np.full(len(table.rows), -1, dtype=np.int64)
    for start in range(0, n_cols, chunk):
        stop = min(start + chunk, n_cols)
        bad = ~np.isfinite(table.block(slice(start, stop)))
        per_feature[start:stop] = bad.sum(axis=1)
        hit = bad.any(axis=0) & (first_missing < 0)
        first_missing[hit] = start + bad[:, hit].argmax(axis=0)
    return per_feature, first_missing


@dataclass
class AlignedTables:
    """The deep and radiomic tables on their common cases, with what was left out and why."""

    deep: FeatureTable
    radiomic: FeatureTable
    cases: list[str]
    dropped_cases: dict[str, str]
    dropped_features: dict[str, dict[str, str]]


def _align(
    deep_df: pd.DataFrame, radiomic_df: pd.DataFrame, *, max_missing_fraction: float, chunk: int
) -> AlignedTables:
    """Match the two tables on case id (sorted, so row order never matters) and deal with missing values.

    Cases in one table only are left out and reported. A feature missing (NaN or infinite) in more than
    ``max_missing_fraction`` of the common cases is left out; after that, a case still missing a value is
    left out. Every exclusion is kept with its reason.
    """
    deep_df = _check_frame(deep_df, "deep-feature")
    radiomic_df = _check_frame(radiomic_df, "radiomics")
    common = deep_df.index.intersection(radiomic_df.index)
    dropped: dict[str, str] = {}
    for cid in deep_df.index.difference(common):
        dropped[cid] = "only in the deep-feature table"
    for cid in radiomic_df.index.difference(common):
        dropped[cid] = "only in the radiomics table"
    if len(common) == 0:
        raise Rad4XCNNError(
            "the deep-feature and radiomics tables share no case id "
            f"(deep: {name_list(deep_df.index, 3)}; radiomics: {name_list(radiomic_df.index, 3)})"
        )
    if dropped:
        log.warning(
            "%d case(s) are in only one of the two tables and are left out: %s",
            len(dropped),
            name_list(dropped),
        )
    cases = sorted(common)
    tables = []
    for label, frame in (("deep", deep_df), ("radiomic", radiomic_df)):
        rows = frame.index.get_indexer(cases)
        tables.append(
            FeatureTable(label, frame, rows, list(frame.columns), np.arange(frame.shape[1], dtype=np.intp))
        )

    dropped_features: dict[str, dict[str, str]] = {"deep": {}, "radiomic": {}}
    case_ok = np.ones(len(cases), dtype=bool)
    for table in tables:
        per_feature, first_missing = _missing_counts(table, chunk)
        too_many = per_feature > max_missing_fraction * len(cases)
        if too_many.any():
            gone = [table.columns[j] for j in np.flatnonzero(too_many)]
            for j in np.flatnonzero(too_many):
                dropped_features[table.label][table.columns[j]] = (
                    f"missing in {per_feature[j]} of {len(cases)} cases"
                )
            table.columns = [c for c, k in zip(table.columns, too_many, strict=True) if not k]
            table.col_pos = table.col_pos[~too_many]
            log.warning(
                "%d %s feature(s) are missing in more than %.0f%% of the cases and are left out: %s",
                len(gone),
                table.label,
                100 * max_missing_fraction,
                name_list(gone),
            )
            if not table.columns:
                raise Rad4XCNNError(
                    f"every {table.label} feature is missing in most cases: nothing to correlate"
                )
            _, first_missing = _missing_counts(table, chunk)  # the features left out no longer count
        for i in np.flatnonzero((first_missing >= 0) & case_ok):
            dropped[cases[i]] = f"missing value in {table.label} feature {table.columns[first_missing[i]]}"
        case_ok &= first_missing < 0
    if not case_ok.all():
        log.warning(
            "%d case(s) with missing values are left out: %s",
            int((~case_ok).sum()),
            name_list([c for c, ok in zip(cases, case_ok, strict=True) if not ok]),
        )
        cases = [c for c, ok in zip(cases, case_ok, strict=True) if ok]
        for table in tables:
            table.rows = table.rows[case_ok]
    if len(cases) < MIN_CASES:
        raise Rad4XCNNError(
            f"only {len(cases)} case(s) have complete values in both tables; Spearman's rho and its p-value "
            f"need at least {MIN_CASES}"
        )
    if len(cases) < 20:
        log.warning("only %d cases: rho from so few cases is unstable", len(cases))
    return AlignedTables(tables[0], tables[1], cases, dropped, dropped_features)


def read_feature_table(path: str | os.PathLike, label: str = "feature") -> pd.DataFrame:
    """Read a cases x features CSV (first column: case id, kept as text so ``007`` stays ``007``).

    Duplicate feature names are refused here, before pandas would rename them ``name.1``.

    Examples
    --------
    >>> deep = read_feature_table("run/deep_features.csv", "deep-feature")  # doctest: +SKIP
    """
    import csv

    path = Path(path)
    if not path.is_file():
        raise Rad4XCNNError(f"{label} table not found: {path}")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), [])
        frame = pd.read_csv(path, index_col=0, converters={0: str}, encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        first = first_line(exc)
        raise Rad4XCNNError(f"{label} table {path.name} is not a readable CSV: {first}") from None
    names = [h.strip() for h in header[1:]]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise Rad4XCNNError(
            f"{label} table {path.name} has duplicate feature name(s): {name_list(duplicated)}"
        )
    frame.index = frame.index.map(lambda v: str(v).strip())
    return frame


def _auto_chunk(n_cases: int, memory_mb: float) -> int:
    return max(1, int(memory_mb * 2**20 // (8 * _SORT_COPIES * max(n_cases, 1))))


class PreparedTables:
    """Aligned tables plus the standardised radiomic ranks on the backend, ready for products."""

    def __init__(self, aligned: AlignedTables, ops: NumpyOps, chunk_size: int):
        self.aligned = aligned
        self.ops = ops
        self.chunk = chunk_size
        self.n = len(aligned.cases)
        self.models = [model_of(c) for c in aligned.deep.columns]
        self.bounds = model_runs(self.models, chunk_size)
        radiomic = aligned.radiomic
        n_rad = len(radiomic.columns)
        self.zr = ops.zeros((n_rad, self.n))
        self.r_constant = np.zeros(n_rad, dtype=bool)
        for start in range(0, n_rad, chunk_size):
            stop = min(start + chunk_size, n_rad)
            block = ops.asarray(radiomic.block(slice(start, stop)))
            self.zr[start:stop], self.r_constant[start:stop] = standardise(average_ranks(block, ops), ops)

    def deep_chunks(self) -> Iterator[tuple[int, int, object, np.ndarray]]:
        """Yield ``(start, stop, standardised ranks, constant flags)`` for each chunk of deep features (a
        chunk holds the features of one model only)."""
        for start, stop in self.bounds:
            block = self.ops.asarray(self.aligned.deep.block(slice(start, stop)))
            zd, constant = standardise(average_ranks(block, self.ops), self.ops)
            yield start, stop, zd, constant

    def permutation_batches(self, n_permutations: int, batch: int, seed: int) -> Iterator[np.ndarray]:
        """Seeded case orders, the same for every chunk whatever the batch size."""
        return _permutation_batches(self.n, n_permutations, batch, seed)

    def denominator(self, start: int, stop: int) -> np.ndarray | None:
        """What the products of a chunk are divided by to give rho (None: nothing, they are rho)."""
        return None


def prepare_tables(
    deep_df: pd.DataFrame,
    radiomic_df: pd.DataFrame,
    backend: str,
    chunk_size: int | None,
    max_missing_fraction: float,
) -> PreparedTables:
    """Align, check and standardise the two tables once, for the correlation, the null and the bootstrap."""
    ops = resolve_backend(backend)
    n_guess = max(len(deep_df), 1)
    aligned = _align(
        deep_df,
        radiomic_df,
        max_missing_fraction=max_missing_fraction,
        chunk=chunk_size or _auto_chunk(n_guess, DEFAULT_MEMORY_MB),
    )
    chunk = chunk_size or _auto_chunk(len(aligned.cases), DEFAULT_MEMORY_MB)
    return PreparedTables(aligned, ops, chunk)


def progress_bar(total: int, desc: str, enabled: bool):
    """The explanation's progress bar (shown only for work that lasts)."""
    from Rad4XCNNLogic.infra.progress import ProgressBar

    # delay: a bar appears only for work that lasts, so that small runs stay quiet.
    return ProgressBar(total, desc=desc, stage="explain", enabled=enabled, delay=2.0)


def spearman_pvalues(rho: np.ndarray, n_cases: int) -> np.ndarray:
    """Two-sided p-values of Spearman's rho from ``n_cases`` cases: the t-distribution approximation with
    ``n - 2`` degrees of freedom, exactly as ``scipy.stats.spearmanr`` computes it. NaN stays NaN.

    Examples
    --------
    >>> round(float(spearman_pvalues(np.array(0.5), 30)), 4)
    0.0049
    """
    return t_pvalues(rho, n_cases - 2)


def t_pvalues(rho: np.ndarray, dof: float | np.ndarray) -> np.ndarray:
    """Two-sided p-values of correlations from the t approximation ``t = rho sqrt(dof / (1 - rho^2))`` with
    ``dof`` degrees of freedom (a number, or an array shaped like ``rho``); ``dof < 1`` gives NaN.

    Examples
    --------
    >>> round(float(t_pvalues(np.array(0.5), 28)), 4)
    0.0049
    """
    from scipy import special

    rho = np.asarray(rho, dtype=np.float64)
    dof = np.asarray(dof, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = rho * np.sqrt((dof / ((rho + 1.0) * (1.0 - rho))).clip(0))
        p = 2 * special.stdtr(np.maximum(dof, 1.0), -np.abs(t))
    return np.where(dof >= 1, p, np.nan)


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg q-values over all finite entries of ``p`` (any shape); NaN stays NaN.

    Equal to ``scipy.stats.false_discovery_control(p, method="bh")`` on the finite entries (the tests check
    it); written out because it is twice as fast on the million p-values of 2048 x 474 pairs and keeps the
    shape and the undefined entries.

    Examples
    --------
    >>> benjamini_hochberg(np.array([0.01, 0.04, np.nan, 0.03]))
    array([0.03, 0.04,  nan, 0.04])
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = finite.size
    if m:
        order = finite[np.argsort(p.ravel()[finite])]
        scaled = p.ravel()[order] * (m / np.arange(1, m + 1))
        # q of the k-th smallest p is the smallest scaled value at rank k or above.
        q.ravel()[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    return q


def benjamini_hochberg_by_model(p: np.ndarray, models: Sequence[str]) -> np.ndarray:
    """BH q-values computed separately over the rows (deep features) of each model: each backbone is its
    own family of tests, so adding one never changes another's q.

    Examples
    --------
    >>> p = np.array([[0.01, 0.04], [0.03, 0.5]])
    >>> benjamini_hochberg_by_model(p, ["a", "b"])
    array([[0.02, 0.04],
           [0.06, 0.5 ]])
    """
    p = np.asarray(p, dtype=np.float64)
    models = np.asarray(list(models), dtype=object)
    q = np.full(p.shape, np.nan)
    for model in dict.fromkeys(models.tolist()):
        rows = np.flatnonzero(models == model)
        q[rows] = benjamini_hochberg(p[rows])
    return q


@dataclass
class CorrelationResult:
    """Spearman's rho, p and q for every (deep, radiomic) feature pair, with what was left out and why.

    ``rho``, ``p`` and ``q`` are ``n_deep x n_radiomic`` arrays in the order of ``deep_features`` and
    ``radiomic_features``; a feature that is constant over the cases has NaN in its row or column and is named
    in ``zero_variance``. Features left out for missing values are in ``dropped_features`` (per table, name
    -> reason) and in no array; cases left out are in ``dropped_cases`` (case id -> reason).
    The full matrices are kept, so a new threshold never needs a recomputation (see :meth:`save`).
    """

    rho: np.ndarray
    p: np.ndarray
    q: np.ndarray
    deep_features: list[str]
    radiomic_features: list[str]
    cases: list[str]
    dropped_cases: dict[str, str] = field(default_factory=dict)
    dropped_features: dict[str, dict[str, str]] = field(default_factory=lambda: {"deep": {}, "radiomic": {}})
    zero_variance: dict[str, list[str]] = field(default_factory=lambda: {"deep": [], "radiomic": []})
    backend: str = "numpy"

    @property
    def n_cases(self) -> int:
        return len(self.cases)

    def frame(self, what: str = "rho") -> pd.DataFrame:
        """One matrix (``"rho"``, ``"p"`` or ``"q"``) as a DataFrame, deep features x radiomic features."""
        return pd.DataFrame(getattr(self, what), index=self.deep_features, columns=self.radiomic_features)

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``rho.npy``, ``p.npy``, ``q.npy`` and ``correlation.json`` (names, cases, exclusions)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("rho", "p", "q"):
            with atomic_path(folder / f"{name}.npy") as tmp, tmp.open("wb") as fh:
                np.save(fh, getattr(self, name))
        write_json_atomic(
            folder / "correlation.json",
            {
                "deep_features": self.deep_features,
                "radiomic_features": self.radiomic_features,
                "cases": self.cases,
                "dropped_cases": self.dropped_cases,
                "dropped_features": self.dropped_features,
                "zero_variance": self.zero_variance,
                "backend": self.backend,
            },
        )
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> CorrelationResult:
        """Read what :meth:`save` wrote."""
        folder = Path(folder)
        try:
            meta = json.loads((folder / "correlation.json").read_text(encoding="utf-8"))
            arrays = {name: np.load(folder / f"{name}.npy", allow_pickle=False) for name in ("rho", "p", "q")}
        except (OSError, ValueError) as exc:
            raise Rad4XCNNError(f"cannot read the correlation matrices in {folder}: {exc}") from None
        shape = (len(meta["deep_features"]), len(meta["radiomic_features"]))
        if any(a.shape != shape for a in arrays.values()):
            raise Rad4XCNNError(f"the correlation matrices in {folder} do not match their feature names")
        return cls(**arrays, **meta)


def spearman_prepared(prep: PreparedTables, progress: bool) -> CorrelationResult:
    """Spearman's rho, p and BH q of every pair of prepared tables, chunk by chunk."""
    aligned, ops = prep.aligned, prep.ops
    n_deep = len(aligned.deep.columns)
    rho = np.empty((n_deep, len(aligned.radiomic.columns)))
    d_constant = np.zeros(n_deep, dtype=bool)
    with progress_bar(n_deep, "rho", progress) as bar:
        for start, stop, zd, constant in prep.deep_chunks():
            rho[start:stop] = ops.to_numpy(zd @ prep.zr.T)
            d_constant[start:stop] = constant
            bar.update(stop - start)
    np.clip(rho, -1.0, 1.0, out=rho)
    rho[d_constant, :] = np.nan
    rho[:, prep.r_constant] = np.nan
    zero_variance = {
        "deep": [c for c, k in zip(aligned.deep.columns, d_constant, strict=True) if k],
        "radiomic": [c for c, k in zip(aligned.radiomic.columns, prep.r_constant, strict=True) if k],
    }
    for label, names in zero_variance.items():
        if len(names) == rho.shape[0 if label == "deep" else 1]:
            raise Rad4XCNNError(
                f"every {label} feature is constant over the {prep.n} cases: there is nothing to correlate"
            )
        if names:
            log.warning(
                "%d %s feature(s) are constant over the cases and get no rho: %s",
                len(names),
                label,
                name_list(names),
            )
    p = spearman_pvalues(rho, prep.n)
    return CorrelationResult(
        rho=rho,
        p=p,
        q=benjamini_hochberg_by_model(p, prep.models),
        deep_features=list(aligned.deep.columns),
        radiomic_features=list(aligned.radiomic.columns),
        cases=list(aligned.cases),
        dropped_cases=dict(aligned.dropped_cases),
        dropped_features={k: dict(v) for k, v in aligned.dropped_features.items()},
        zero_variance=zero_variance,
        backend=f"{ops.name}:{ops.device}",
    )


def spearman(
    deep_df: pd.DataFrame,
    radiomic_df: pd.DataFrame,
    *,
    backend: str,
    chunk_size: int | None = None,
    max_missing_fraction: float = 0.5,
    progress: bool = False,
) -> CorrelationResult:
    """Spearman's rho, two-sided p and BH q (over each model's pairs) between every deep and every radiomic
    feature.

    Parameters
    ----------
    deep_df, radiomic_df
        Cases x features, indexed by case id. Only the cases present in both are used (matched by id, so row
        order does not matter); the others are reported in ``dropped_cases``.
    backend
        ``"auto"`` (torch on a GPU when present, else numpy), ``"numpy"``, ``"torch"``, ``"torch:cpu"``,
        ``"torch:cuda"``. The values agree to rounding (float64 throughout).
    chunk_size
        Deep features ranked and multiplied at a time; by default sized so that a chunk's working memory
        is about 512 MB (100,000 cases x 2048 x 474 then runs in about 1 GB beyond the input tables).
    max_missing_fraction
        A feature missing (NaN/inf) in more than this fraction of cases is left out; then cases still
        missing a value are left out. Both are reported.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> names = ["original_glcm_Contrast", "original_firstorder_Mean"]
    >>> rad = pd.DataFrame(rng.normal(size=(30, 2)), columns=names)
    >>> deep = pd.DataFrame({"resnet50_0": np.exp(rad["original_glcm_Contrast"])})
    >>> float(spearman(deep, rad, backend="numpy").rho[0, 0])
    1.0
    """
    prep = prepare_tables(deep_df, radiomic_df, backend, chunk_size, max_missing_fraction)
    return spearman_prepared(prep, progress)


# ------------------------------------------------------------------------------------- permutation null
def _permutation_batches(n_cases: int, n_permutations: int, batch: int, seed: int) -> Iterator[np.ndarray]:
    """The same seeded permutations of case order, in batches, every time it is called."""
    rng = np.random.default_rng(seed)
    base = np.arange(n_cases)
    for start in range(0, n_permutations, batch):
        size = min(batch, n_permutations - start)
        yield rng.permuted(np.tile(base, (size, 1)), axis=1)
