"""Explain deep features by radiomic ones: the paper's rule |rho| >= M, grouped by feature family.

Builds the kept-pair table (``correlations.csv``) and the per-deep-feature table (``explanations.csv``) from a
:class:`~Rad4XCNNLogic.explain.correlation.CorrelationResult`, the coverage curve over M, explanations
ordered by a
classifier's feature importances, and the replicability of explanations between cohorts. A new M re-uses
the stored rho matrix: nothing is recomputed.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from Rad4XCNNLogic import __version__
from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.explain.correlation import (
    CorrelationResult,
    _bootstrap,
    _check_alpha,
    _names,
    _permutation_null,
    _prepare,
    _spearman,
    fwer_pvalues,
    permutation_threshold,
    spearman,
    suggest_threshold,
)
from Rad4XCNNLogic.explain.glossary import family_of, short_meaning, summary_line
from Rad4XCNNLogic.infra.interval import Interval
from Rad4XCNNLogic.infra.storage import atomic_path, write_csv_atomic, write_json_atomic
from Rad4XCNNLogic.names import model_of, parse_radiomic_name

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_COVERAGE_THRESHOLDS",
    "Explanation",
    "Replicability",
    "coverage_curve",
    "explain",
    "load_explanation",
    "rank_by_importance",
    "replicate",
    "write_explanation",
    "write_replicability",
]

DEFAULT_COVERAGE_THRESHOLDS = tuple(round(0.30 + 0.05 * i, 2) for i in range(13))
"""M from 0.30 to 0.90 in steps of 0.05."""


#: M, the smallest |rho| that explains: 0 would explain every deep feature by every radiomic feature.
THRESHOLD_RANGE = Interval(0, 1, low_open=True)
#: The Benjamini-Hochberg level of the optional q-value condition.
FDR_RANGE = Interval(0, 1, low_open=True)


def _check_threshold(threshold: float, fdr: float | None) -> None:
    problem = THRESHOLD_RANGE.problem(threshold)
    if problem:
        raise Rad4XCNNError(f"the threshold M {problem}")
    problem = None if fdr is None else FDR_RANGE.problem(fdr)
    if problem:
        raise Rad4XCNNError(f"the FDR level {problem}")


def keep_mask(rho: np.ndarray, threshold: float, *, q: np.ndarray | None = None, fdr: float | None = None):
    """Pairs kept by the paper's rule ``|rho| >= M``, and ``q <= fdr`` when ``fdr`` is given."""
    _check_threshold(threshold, fdr)
    with np.errstate(invalid="ignore"):
        keep = np.abs(rho) >= threshold - 1e-12  # an M typed as 0.6 must keep a rho of exactly 0.6
        if fdr is not None:
            if q is None:
                raise Rad4XCNNError("an FDR level needs the q-values")
            keep &= q <= fdr
    return keep


# --------------------------------------------------------------------------------------------- coverage
def coverage_curve(
    rho: np.ndarray | pd.DataFrame,
    thresholds: Sequence[float] = DEFAULT_COVERAGE_THRESHOLDS,
    *,
    deep_features: Sequence[str] | None = None,
    q: np.ndarray | None = None,
    fdr: float | None = None,
) -> pd.DataFrame:
    """Fraction of deep features explained (at least one partner kept) at each M, per model.

    ``rho`` is deep x radiomic (a DataFrame's index gives the deep feature names, else ``deep_features``
    does; features are grouped by model, ``resnet50_17`` -> ``resnet50``). The fraction is over the deep
    features that vary across cases: a constant feature (a dead ReLU unit) cannot be explained and is
    counted apart in ``n_constant``. The curve can only fall as M grows.

    Examples
    --------
    >>> rho = np.array([[0.8, 0.1], [0.5, -0.65], [np.nan, np.nan]])
    >>> coverage_curve(rho, [0.6, 0.7], deep_features=["cnn_0", "cnn_1", "cnn_2"])
      model    M  n_explained  n_features  n_constant  fraction
    0   cnn  0.6            2           3           1       1.0
    1   cnn  0.7            1           3           1       0.5
    """
    if isinstance(rho, pd.DataFrame):
        deep_features = list(rho.index) if deep_features is None else deep_features
        rho = rho.to_numpy(dtype=np.float64)
    rho = np.asarray(rho, dtype=np.float64)
    if deep_features is None:
        deep_features = [f"deep_{i}" for i in range(rho.shape[0])]
    if len(deep_features) != rho.shape[0]:
        raise Rad4XCNNError(
            f"{len(deep_features)} deep feature names for a rho matrix of {rho.shape[0]} rows"
        )
    models = pd.Series([model_of(n) for n in deep_features])
    constant = np.isnan(rho).all(axis=1) if rho.shape[1] else np.ones(rho.shape[0], bool)
    abs_rho = np.abs(rho)
    if fdr is not None:
        abs_rho = np.where(q <= fdr, abs_rho, np.nan)
    with np.errstate(invalid="ignore"):  # NaN (undefined, or failing the FDR) counts as no partner
        unusable = np.isnan(abs_rho)
    best = np.where(unusable, -1.0, abs_rho).max(axis=1, initial=-1.0)
    rows = []
    for model in dict.fromkeys(models):
        in_model = (models == model).to_numpy()
        varying = int((in_model & ~constant).sum())
        for m in thresholds:
            _check_threshold(float(m), fdr)
            explained = int((in_model & (best >= float(m) - 1e-12)).sum())
            rows.append(
                {
                    "model": model,
                    "M": round(float(m), 10),
                    "n_explained": explained,
                    "n_features": int(in_model.sum()),
                    "n_constant": int((in_model & constant).sum()),
                    "fraction": explained / varying if varying else float("nan"),
                }
            )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ the tables
def _pairs_table(
    result: CorrelationResult,
    keep: np.ndarray,
    null: np.ndarray | None,
    intervals: pd.DataFrame | None,
) -> pd.DataFrame:
    di, ri = np.nonzero(keep)
    rho = result.rho[di, ri]
    order = np.lexsort((-np.abs(rho), di))  # deep features in table order, strongest partner first
    di, ri, rho = di[order], ri[order], rho[order]
    radiomic = [result.radiomic_features[j] for j in ri]
    parsed = [parse_radiomic_name(name) for name in radiomic]
    table = pd.DataFrame(
        {
            "deep_feature": [result.deep_features[i] for i in di],
            "radiomic_feature": radiomic,
            "rho": rho,
            "p": result.p[di, ri],
            "q": result.q[di, ri],
        }
    )
    if null is not None:
        table["p_fwer"] = fwer_pvalues(rho, null)
    table["ci_low"] = np.nan
    table["ci_high"] = np.nan
    if intervals is not None and len(intervals) and len(table):
        found = intervals.reindex(
            pd.MultiIndex.from_arrays([table["deep_feature"], table["radiomic_feature"]])
        )
        table["ci_low"] = found["ci_low"].to_numpy()
        table["ci_high"] = found["ci_high"].to_numpy()
    table["image_type"] = [p.image_type for p in parsed]
    table["feature_class"] = [p.feature_class for p in parsed]
    table["feature"] = [p.feature for p in parsed]
    table["family"] = [family_of(p) for p in parsed]
    table["meaning"] = [summary_line(name) for name in radiomic]
    return table


def _family_text(families: pd.Series) -> str:
    counts = families.value_counts(sort=False)
    counts = counts.sort_values(ascending=False, kind="stable")
    return "; ".join(f"{family} {n}" for family, n in counts.items())


def _summary_text(n: int, families: pd.Series, name: str, rho: float) -> str:
    meaning = short_meaning(name)
    strongest = f"{name}, rho {rho:.2f}" + (f" ({meaning})" if meaning else "")
    counts = families.value_counts()
    if n == 1:
        return f"1 partner ({counts.index[0]}): {strongest}"
    top, k = counts.index[0], int(counts.iloc[0])
    share = f"all {top}" if k == n else f"{k} of them {top}"
    return f"{n} partners, {share}; strongest {strongest}"


def _explanations_table(
    result: CorrelationResult, pairs: pd.DataFrame, threshold: float, fdr: float | None
) -> pd.DataFrame:
    """One row per deep feature, explained or not, in the deep table's order (dropped features last)."""
    abs_rho = np.abs(result.rho)
    all_nan = np.isnan(abs_rho).all(axis=1) if abs_rho.shape[1] else np.ones(abs_rho.shape[0], bool)
    best = np.argmax(np.where(np.isnan(abs_rho), -1.0, abs_rho), axis=1) if abs_rho.shape[1] else None
    grouped = dict(tuple(pairs.groupby("deep_feature", sort=False))) if len(pairs) else {}
    rule = f"|rho| >= {threshold:.2f}" + (f" and q <= {fdr:g}" if fdr is not None else "")
    rows = []
    for i, name in enumerate(result.deep_features):
        row: dict[str, Any] = {"deep_feature": name, "model": model_of(name)}
        kept = grouped.get(name)
        if kept is not None:
            top = kept.iloc[0]
            row.update(
                status="explained",
                n_partners=len(kept),
                partners=";".join(kept["radiomic_feature"]),
                strongest_partner=top["radiomic_feature"],
                strongest_rho=float(top["rho"]),
                top_family=kept["family"].value_counts().index[0],
                families=_family_text(kept["family"]),
                summary=_summary_text(len(kept), kept["family"], top["radiomic_feature"], float(top["rho"])),
            )
        elif all_nan[i]:
            row.update(status="zero variance", n_partners=0, summary="constant over the cases: it has no rho")
        else:
            partner = result.radiomic_features[best[i]]
            rho = float(result.rho[i, best[i]])
            row.update(
                status="unexplained",
                n_partners=0,
                strongest_partner=partner,
                strongest_rho=rho,
                summary=f"no radiomic partner with {rule} (closest: {partner}, rho {rho:.2f})",
            )
        rows.append(row)
    for name, reason in result.dropped_features.get("deep", {}).items():
        rows.append(
            {
                "deep_feature": name,
                "model": model_of(name),
                "status": "left out",
                "n_partners": 0,
                "summary": f"left out: {reason}",
            }
        )
    columns = [
        "deep_feature",
        "model",
        "status",
        "n_partners",
        "partners",
        "strongest_partner",
        "strongest_rho",
        "strongest_meaning",
        "top_family",
        "families",
        "summary",
    ]
    table = pd.DataFrame(rows).reindex(columns=columns)
    table["n_partners"] = table["n_partners"].astype(int)
    table["strongest_meaning"] = [
        summary_line(n) if isinstance(n, str) else "" for n in table["strongest_partner"]
    ]
    for column in ("partners", "strongest_partner", "top_family", "families"):
        # object first: with no explained feature the column is all-NaN float, which "" cannot fill
        table[column] = table[column].astype(object).fillna("")
    return table.set_index("deep_feature")


# ------------------------------------------------------------------------------------------ explanation
@dataclass
class Explanation:
    """Everything Rad4XCNN says about a set of deep features at one threshold M.

    ``correlations`` has one row per kept pair (deep_feature, radiomic_feature, rho, p, q, [p_fwer], ci_low,
    ci_high, image_type, feature_class, feature, family, meaning); ``explanations`` one row per deep feature
    (status, n_partners, partners, strongest partner and rho, families, a summary sentence); ``coverage`` the
    fraction explained per model for M from 0.3 to 0.9. :meth:`with_threshold` re-applies another M from the
    stored matrices without recomputing anything.
    """

    correlation: CorrelationResult
    threshold: float
    fdr: float | None
    correlations: pd.DataFrame
    explanations: pd.DataFrame
    coverage: pd.DataFrame
    permutation_null: np.ndarray | None = None
    permutation_threshold: float | None = None
    suggested_M: float | None = None
    intervals: pd.DataFrame | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def zero_variance(self) -> dict[str, list[str]]:
        return self.correlation.zero_variance

    @property
    def cases_used(self) -> list[str]:
        return self.correlation.cases

    @property
    def dropped_cases(self) -> dict[str, str]:
        return self.correlation.dropped_cases

    @property
    def dropped_features(self) -> dict[str, dict[str, str]]:
        return self.correlation.dropped_features

    @property
    def n_explained(self) -> int:
        return int((self.explanations["status"] == "explained").sum())

    def with_threshold(self, threshold: float, fdr: float | str | None = "same") -> Explanation:
        """The explanation at another M (and FDR level; ``"same"`` keeps the current one), from the stored
        rho/p/q: this is what a threshold slider calls. Bootstrap intervals exist only for pairs that were
        kept when they were computed; others get NaN.

        Examples
        --------
        >>> stricter = explanation.with_threshold(0.8)  # doctest: +SKIP
        """
        fdr = self.fdr if fdr == "same" else fdr
        settings = {**self.settings, "threshold": float(threshold), "fdr": fdr}
        return _assemble(
            self.correlation,
            threshold,
            fdr,
            null=self.permutation_null,
            alpha=settings.get("alpha", 0.05),
            intervals=self.intervals,
            coverage_thresholds=settings.get("coverage_thresholds", DEFAULT_COVERAGE_THRESHOLDS),
            settings=settings,
            timings=self.timings,
        )

    def summary(self) -> dict[str, Any]:
        """Counts and settings for ``explanation.json`` and for people."""
        n_deep = len(self.correlation.deep_features)
        n_zero = len(self.zero_variance["deep"])
        return {
            "rad4xcnn_version": __version__,
            "settings": self.settings,
            "n_cases": self.correlation.n_cases,
            "n_deep_features": n_deep,
            "n_radiomic_features": len(self.correlation.radiomic_features),
            "n_pairs_kept": len(self.correlations),
            "n_explained": self.n_explained,
            "fraction_explained": self.n_explained / (n_deep - n_zero) if n_deep > n_zero else None,
            "permutation_threshold": self.permutation_threshold,
            "suggested_M": self.suggested_M,
            "zero_variance": self.zero_variance,
            "dropped_cases": self.dropped_cases,
            "dropped_features": self.dropped_features,
            "backend": self.correlation.backend,
            "timings_s": self.timings,
        }


def _assemble(
    result: CorrelationResult,
    threshold: float,
    fdr: float | None,
    *,
    null: np.ndarray | None,
    alpha: float,
    intervals: pd.DataFrame | None,
    coverage_thresholds: Sequence[float],
    settings: dict[str, Any],
    timings: dict[str, float],
) -> Explanation:
    keep = keep_mask(result.rho, threshold, q=result.q, fdr=fdr)
    pairs = _pairs_table(result, keep, null, intervals)
    perm_threshold = suggested = None
    if null is not None:
        perm_threshold = permutation_threshold(null, alpha)
        suggested = suggest_threshold(null, alpha)
        if threshold <= perm_threshold:
            log.warning(
                "M = %.2f is not above the permutation threshold %.3f (family-wise error %g): "
                "some kept pairs may be chance; M >= %.2f would not be",
                threshold,
                perm_threshold,
                alpha,
                suggested,
            )
    return Explanation(
        correlation=result,
        threshold=float(threshold),
        fdr=fdr,
        correlations=pairs,
        explanations=_explanations_table(result, pairs, threshold, fdr),
        coverage=coverage_curve(
            result.rho, coverage_thresholds, deep_features=result.deep_features, q=result.q, fdr=fdr
        ),
        permutation_null=null,
        permutation_threshold=perm_threshold,
        suggested_M=suggested,
        intervals=intervals,
        settings=settings,
        timings=timings,
    )


def explain(
    deep_df: pd.DataFrame,
    radiomic_df: pd.DataFrame,
    threshold: float = 0.6,
    *,
    fdr: float | None = None,
    permutations: int = 0,
    alpha: float = 0.05,
    bootstrap: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
    backend: str = "auto",
    chunk_size: int | None = None,
    max_missing_fraction: float = 0.5,
    coverage_thresholds: Sequence[float] = DEFAULT_COVERAGE_THRESHOLDS,
    progress: bool = False,
) -> Explanation:
    """Correlate every deep feature with every radiomic feature and explain each deep feature by the radiomic
    features with ``|rho| >= threshold`` (and ``q <= fdr`` when given), as in Rad4XCNN.

    Parameters
    ----------
    deep_df, radiomic_df
        Cases x features, indexed by case id (docs/ARCHITECTURE.md). Cases in one table only are left out and
        reported; features and cases with missing values are handled as in
        :func:`~Rad4XCNNLogic.explain.correlation.spearman`.
    threshold
        M, the smallest |rho| that explains (the paper's rule).
    fdr
        Also require the Benjamini–Hochberg q-value (over all pairs) to be at most this.
    permutations
        Shuffles of the case order for the max-|rho| null (0: none). Gives ``permutation_threshold`` (the
        |rho| a pair must exceed for family-wise error ``alpha``), ``suggested_M`` and a ``p_fwer`` column.
    bootstrap
        Resamples for the percentile ``confidence`` interval of each kept pair's rho (0: none).
    seed
        Seeds the permutations and the bootstrap; the same seed gives the same result on every backend.
    backend, chunk_size
        As in :func:`~Rad4XCNNLogic.explain.correlation.spearman`.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> rad = pd.DataFrame(rng.normal(size=(80, 3)), columns=[
    ...     "original_glcm_Contrast", "original_firstorder_Mean", "wavelet-HL_glszm_ZoneEntropy"])
    >>> deep = pd.DataFrame({"cnn_0": np.exp(rad["original_glcm_Contrast"]), "cnn_1": rng.normal(size=80)})
    >>> result = explain(deep, rad, 0.6, bootstrap=0, backend="numpy")
    >>> result.explanations.loc["cnn_0", "summary"]
    '1 partner (original texture): original_glcm_Contrast, rho 1.00 (local grey-level variation)'
    """
    _check_threshold(threshold, fdr)
    _check_alpha(alpha)
    if permutations < 0 or bootstrap < 0:
        raise Rad4XCNNError("the numbers of permutations and of bootstrap resamples cannot be negative")
    settings = {
        "threshold": float(threshold),
        "fdr": fdr,
        "permutations": int(permutations),
        "alpha": float(alpha),
        "bootstrap": int(bootstrap),
        "confidence": float(confidence),
        "seed": int(seed),
        "backend": backend,
        "chunk_size": chunk_size,
        "max_missing_fraction": float(max_missing_fraction),
        "coverage_thresholds": [float(m) for m in coverage_thresholds],
    }
    timings: dict[str, float] = {}
    start = time.perf_counter()
    prep = _prepare(deep_df, radiomic_df, backend, chunk_size, max_missing_fraction)
    result = _spearman(prep, progress)
    timings["spearman"] = time.perf_counter() - start
    null = None
    if permutations:
        start = time.perf_counter()
        null = _permutation_null(prep, permutations, seed, progress)
        permutation_threshold(null, alpha)  # fails early, with advice, if there are too few permutations
        timings["permutations"] = time.perf_counter() - start
    intervals = None
    if bootstrap:
        keep = keep_mask(result.rho, threshold, q=result.q, fdr=fdr)
        di, ri = np.nonzero(keep)
        index = pd.MultiIndex.from_arrays(
            [[result.deep_features[i] for i in di], [result.radiomic_features[j] for j in ri]],
            names=["deep_feature", "radiomic_feature"],
        )
        if len(di):
            start = time.perf_counter()
            low, high = _bootstrap(prep, di, ri, bootstrap, confidence, seed, progress)
            timings["bootstrap"] = time.perf_counter() - start
        else:
            low = high = np.empty(0)
        intervals = pd.DataFrame({"ci_low": low, "ci_high": high}, index=index)
    return _assemble(
        result,
        threshold,
        fdr,
        null=null,
        alpha=alpha,
        intervals=intervals,
        coverage_thresholds=coverage_thresholds,
        settings=settings,
        timings=timings,
    )


# ----------------------------------------------------------------------------------------------- files
def write_explanation(explanation: Explanation, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``correlations.csv``, ``explanations.csv``, ``coverage.csv``, ``explanation.json`` and the full
    matrices (``rho.npy``, ``p.npy``, ``q.npy``, ``correlation.json``, ``permutation_null.npy``) to
    ``out_dir``, atomically; :func:`load_explanation` reads them back for a new M without recomputing.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {
        "correlations": write_csv_atomic(out / "correlations.csv", explanation.correlations, index=False),
        "explanations": write_csv_atomic(out / "explanations.csv", explanation.explanations),
        "coverage": write_csv_atomic(out / "coverage.csv", explanation.coverage, index=False),
    }
    explanation.correlation.save(out)
    written.update({name: out / f"{name}.npy" for name in ("rho", "p", "q")})
    written["correlation"] = out / "correlation.json"
    if explanation.permutation_null is not None:
        with atomic_path(out / "permutation_null.npy") as tmp, tmp.open("wb") as fh:
            np.save(fh, explanation.permutation_null)
        written["permutation_null"] = out / "permutation_null.npy"
    if explanation.intervals is not None:
        written["bootstrap"] = write_csv_atomic(out / "bootstrap_intervals.csv", explanation.intervals)
    written["summary"] = write_json_atomic(out / "explanation.json", explanation.summary())
    return written


def load_explanation(
    out_dir: str | os.PathLike, threshold: float | None = None, fdr: float | str | None = "same"
) -> Explanation:
    """Read an explanation written by :func:`write_explanation`, optionally at another M, without
    recomputing any correlation.

    Examples
    --------
    >>> stricter = load_explanation("run/explanation", threshold=0.8)  # doctest: +SKIP
    """
    out = Path(out_dir)
    result = CorrelationResult.load(out)
    try:
        summary = json.loads((out / "explanation.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise Rad4XCNNError(f"cannot read {out / 'explanation.json'}: {exc}") from None
    settings = summary.get("settings", {})
    null_path = out / "permutation_null.npy"
    null = np.load(null_path, allow_pickle=False) if null_path.exists() else None
    intervals_path = out / "bootstrap_intervals.csv"
    intervals = pd.read_csv(intervals_path, index_col=[0, 1]) if intervals_path.exists() else None
    fdr = settings.get("fdr") if fdr == "same" else fdr
    threshold = settings.get("threshold", 0.6) if threshold is None else threshold
    return _assemble(
        result,
        threshold,
        fdr,
        null=null,
        alpha=settings.get("alpha", 0.05),
        intervals=intervals,
        coverage_thresholds=settings.get("coverage_thresholds", DEFAULT_COVERAGE_THRESHOLDS),
        settings={**settings, "threshold": float(threshold), "fdr": fdr},
        timings=summary.get("timings_s", {}),
    )


# ------------------------------------------------------------------------------------------ importance
def _importance_series(
    importances: pd.Series | pd.DataFrame, classifier: str | None, feature_set: str | None
) -> pd.Series:
    if isinstance(importances, pd.Series):
        return importances.astype(float)
    frame = importances
    if not {"feature", "importance_mean"} <= set(frame.columns):
        if frame.shape[1] == 1:
            return frame.iloc[:, 0].astype(float)
        raise Rad4XCNNError(
            "importances must be a Series indexed by feature, or a table with columns feature and "
            f"importance_mean (as importances.csv); got columns {_names(list(frame.columns))}"
        )
    for column, wanted in (("classifier", classifier), ("feature_set", feature_set)):
        if wanted is not None:
            if column not in frame.columns or wanted not in set(frame[column]):
                raise Rad4XCNNError(f"no importances for {column} {wanted!r}")
            frame = frame[frame[column] == wanted]
    groups = [c for c in ("feature_set", "classifier", "method") if c in frame.columns]
    if not groups:
        return frame.set_index("feature")["importance_mean"].astype(float)
    # Several classifiers: each one's importances are scaled by its largest, then averaged, so that
    # impurity importances and permutation importances (different units) weigh alike.
    scaled = frame.groupby(groups, sort=False)["importance_mean"].transform(lambda s: s / s.abs().max())
    return scaled.groupby(frame["feature"]).mean()


def rank_by_importance(
    explanation: Explanation,
    importances: pd.Series | pd.DataFrame,
    *,
    classifier: str | None = None,
    feature_set: str | None = None,
) -> pd.DataFrame:
    """The explanations of the deep features a classifier relies on, most important first.

    ``importances`` is a Series indexed by deep feature, or the ``importances.csv`` table of the
    classification stage (feature_set, classifier, feature, importance_mean, ...); ``classifier`` and
    ``feature_set`` pick rows from it. With several classifiers left, each one's importances are scaled to
    its largest and averaged. Returns the explanations table restricted to the deep features with an
    importance, with ``importance``, ``importance_rank`` and ``cumulative_explained`` (how many of the top
    ``k`` are explained) in front.

    Examples
    --------
    >>> importances = pd.Series({"resnet50_3": 0.2, "resnet50_9": 0.05})
    >>> ranked = rank_by_importance(explanation, importances)  # doctest: +SKIP
    """
    series = _importance_series(importances, classifier, feature_set)
    series.index = series.index.map(str)
    known = series[series.index.isin(explanation.explanations.index)]
    if known.empty:
        raise Rad4XCNNError(
            "none of the features with an importance is a deep feature of this explanation "
            f"(importances for {_names(list(series.index), 3)})"
        )
    if len(known) < len(series):
        log.info("%d feature(s) with an importance are not deep features here", len(series) - len(known))
    known = known.sort_values(ascending=False, kind="stable")
    table = explanation.explanations.loc[known.index].copy()
    table.insert(0, "importance", known.to_numpy())
    table.insert(1, "importance_rank", np.arange(1, len(known) + 1))
    table.insert(2, "cumulative_explained", (table["status"] == "explained").cumsum().to_numpy())
    return table


# ------------------------------------------------------------------------------------------ replicability
@dataclass
class Replicability:
    """How well explanations hold across cohorts.

    ``summary`` has one row per pair of cohorts: cases, pairs kept in each and in both with the same sign
    (``n_replicated``), the share of the first cohort's pairs that replicate, the Jaccard index, and the
    Pearson correlation of the two cohorts' rho values over all pairs (``rho_agreement``) and over the pairs
    kept in either (``rho_agreement_kept``). ``pairs`` lists every pair kept in at least one cohort with its
    rho in each.
    """

    cohorts: list[str]
    threshold: float
    fdr: float | None
    results: dict[str, CorrelationResult]
    summary: pd.DataFrame
    pairs: pd.DataFrame
    dropped_cases: dict[str, str] = field(default_factory=dict)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def replicate(
    deep_df: pd.DataFrame,
    radiomic_df: pd.DataFrame,
    groups: pd.Series | Mapping[str, str],
    threshold: float = 0.6,
    *,
    fdr: float | None = None,
    backend: str = "auto",
    chunk_size: int | None = None,
    max_missing_fraction: float = 0.5,
    progress: bool = False,
) -> Replicability:
    """Compute the explanation separately in each cohort and compare: which kept pairs hold in both cohorts
    (same sign), and how closely the rho values agree.

    ``groups`` maps case id to cohort (e.g. ``internal`` / ``external``); cases without a cohort are left out
    and reported. Every pair of cohorts is compared.

    Examples
    --------
    >>> rep = replicate(deep, rad, manifest.set_index("case_id")["cohort"], 0.6)  # doctest: +SKIP
    >>> rep.summary[["cohort_a", "cohort_b", "n_replicated", "rho_agreement"]]  # doctest: +SKIP
    """
    _check_threshold(threshold, fdr)
    groups = pd.Series(groups, dtype=object)
    groups.index = groups.index.map(str)
    groups = groups.dropna().astype(str)
    if groups.index.duplicated().any():
        raise Rad4XCNNError(
            f"duplicate case id(s) in the cohort list: {_names(groups.index[groups.index.duplicated()])}"
        )
    deep_df, radiomic_df = deep_df.copy(deep=False), radiomic_df.copy(deep=False)
    deep_df.index = deep_df.index.map(str)
    radiomic_df.index = radiomic_df.index.map(str)
    dropped = {
        cid: "no cohort given" for cid in deep_df.index.union(radiomic_df.index).difference(groups.index)
    }
    if dropped:
        log.warning(
            "%d case(s) have no cohort and are left out of the replicability: %s",
            len(dropped),
            _names(dropped),
        )
    cohorts = list(dict.fromkeys(groups[groups.index.isin(deep_df.index)].tolist()))
    if len(cohorts) < 2:
        raise Rad4XCNNError(
            f"replicability needs at least two cohorts with cases in the tables, found {len(cohorts)}"
            + (f" ({cohorts[0]})" if cohorts else "")
        )
    results: dict[str, CorrelationResult] = {}
    for cohort in cohorts:
        cases = groups.index[groups == cohort]
        try:
            results[cohort] = spearman(
                deep_df[deep_df.index.isin(cases)],
                radiomic_df[radiomic_df.index.isin(cases)],
                backend=backend,
                chunk_size=chunk_size,
                max_missing_fraction=max_missing_fraction,
                progress=progress,
            )
        except Rad4XCNNError as exc:
            raise Rad4XCNNError(f"cohort {cohort}: {exc}") from None
        for cid, reason in results[cohort].dropped_cases.items():
            dropped.setdefault(cid, reason)
    # Compare on the features every cohort kept, in one shared order.
    deep_common = [
        f for f in results[cohorts[0]].deep_features if all(f in r.deep_features for r in results.values())
    ]
    rad_common = [
        f
        for f in results[cohorts[0]].radiomic_features
        if all(f in r.radiomic_features for r in results.values())
    ]
    frames = {c: r.frame("rho").loc[deep_common, rad_common].to_numpy() for c, r in results.items()}
    qs = {c: r.frame("q").loc[deep_common, rad_common].to_numpy() for c, r in results.items()}
    kept = {c: keep_mask(frames[c], threshold, q=qs[c], fdr=fdr) for c in cohorts}
    rows = []
    for a, b in combinations(cohorts, 2):
        both = kept[a] & kept[b] & (np.sign(frames[a]) == np.sign(frames[b]))
        either = kept[a] | kept[b]
        n_a, n_b, n_both = int(kept[a].sum()), int(kept[b].sum()), int(both.sum())
        rows.append(
            {
                "cohort_a": a,
                "cohort_b": b,
                "n_cases_a": results[a].n_cases,
                "n_cases_b": results[b].n_cases,
                "n_kept_a": n_a,
                "n_kept_b": n_b,
                "n_replicated": n_both,
                "fraction_of_a_replicated": n_both / n_a if n_a else float("nan"),
                "jaccard": n_both / int(either.sum()) if either.any() else float("nan"),
                "rho_agreement": _pearson(frames[a].ravel(), frames[b].ravel()),
                "rho_agreement_kept": _pearson(frames[a][either], frames[b][either]),
            }
        )
    any_kept = np.logical_or.reduce([kept[c] for c in cohorts])
    di, ri = np.nonzero(any_kept)
    pairs = pd.DataFrame(
        {"deep_feature": [deep_common[i] for i in di], "radiomic_feature": [rad_common[j] for j in ri]}
    )
    for c in cohorts:
        pairs[f"rho_{c}"] = frames[c][di, ri]
    for c in cohorts:
        pairs[f"kept_{c}"] = kept[c][di, ri]
    signs = np.sign(np.stack([frames[c][di, ri] for c in cohorts]))
    pairs["replicated"] = np.logical_and.reduce([kept[c][di, ri] for c in cohorts]) & (
        (signs == signs[:1]).all(axis=0)
    )
    return Replicability(
        cohorts=cohorts,
        threshold=float(threshold),
        fdr=fdr,
        results=results,
        summary=pd.DataFrame(rows),
        pairs=pairs,
        dropped_cases=dropped,
    )


def write_replicability(replicability: Replicability, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``replicability.csv`` (one row per pair of cohorts) and ``replicated_pairs.csv``."""
    out = Path(out_dir)
    return {
        "replicability": write_csv_atomic(out / "replicability.csv", replicability.summary, index=False),
        "replicated_pairs": write_csv_atomic(out / "replicated_pairs.csv", replicability.pairs, index=False),
    }
