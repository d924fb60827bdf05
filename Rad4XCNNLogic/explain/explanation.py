"""Explain deep features by radiomic ones: the paper's rule |rho| >= M, pooled or within strata (class,
site), with per-backbone statistics and partners grouped into redundancy clusters.

Builds the kept-pair table (``correlations.csv``) and the per-deep-feature table (``explanations.csv``, via
:mod:`~Rad4XCNNLogic.explain.tables`), the coverage curve over M and explanations ordered by a classifier's
feature importances. A new M re-uses the stored matrices: nothing is recomputed.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from Rad4XCNNLogic import __version__
from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.explain.claims import below_permutation_threshold, error_control, explained_fwer
from Rad4XCNNLogic.explain.correlation import CorrelationResult, name_list, prepare_tables, spearman_prepared
from Rad4XCNNLogic.explain.partners import CLUSTER_LEVEL, RadiomicClusters, cluster_radiomics
from Rad4XCNNLogic.explain.replicability import Replicability, replicate, write_replicability
from Rad4XCNNLogic.explain.resampling import (
    bootstrap_pairs,
    bootstrap_within,
    permutation_null_prepared,
    permutation_threshold,
    suggest_threshold,
)
from Rad4XCNNLogic.explain.rule import keep_mask
from Rad4XCNNLogic.explain.settings import MIN_STRATUM, ExplainConfig, check_threshold, rule_text
from Rad4XCNNLogic.explain.strata import (
    StratifiedResult,
    prepare_within,
    stratum_labels,
    within_spearman,
)
from Rad4XCNNLogic.explain.tables import explanations_table, pairs_table
from Rad4XCNNLogic.infra.settings import check_section
from Rad4XCNNLogic.infra.storage import atomic_path, write_csv_atomic, write_json_atomic
from Rad4XCNNLogic.names import model_of

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
    "stratum_labels",
    "write_explanation",
    "write_replicability",
]

DEFAULT_COVERAGE_THRESHOLDS = tuple(round(0.30 + 0.05 * i, 2) for i in range(13))
"""M from 0.30 to 0.90 in steps of 0.05."""


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
            check_threshold(float(m), fdr)
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


# ------------------------------------------------------------------------------------------ explanation
@dataclass
class Explanation:
    """Everything Rad4XCNN says about a set of deep features at one threshold M.

    ``correlations`` has one row per kept pair (deep_feature, radiomic_feature, rho, p, q, [rho_within,
    p_within, q_within, status], [p_fwer], ci_low, ci_high, image_type, feature_class, feature, family,
    cluster, meaning); ``explanations`` one row per deep feature (status, n_partners, partners, strongest
    partner and rho, families, partner clusters, a summary sentence); ``coverage`` the fraction explained
    per model for M from 0.3 to 0.9. With strata (``within``), a deep feature is explained by the rule
    within strata; when it meets the rule only pooled over them it is ``confounded`` (no significant
    association within strata) or ``attenuated`` (a significant but weaker one), and ``reversed`` when its
    strata disagree in sign (:func:`~Rad4XCNNLogic.explain.tables.pairs_table`).

    The permutation null, its threshold and the suggested M are per model (``permutation_nulls``,
    ``permutation_thresholds``, ``suggested_Ms``): each backbone is its own family of tests.
    ``permutation_null`` is the largest over models and ``suggested_M`` the largest suggestion, an M that
    holds the family-wise error for every backbone. :meth:`with_threshold` re-applies another M from the
    stored matrices without recomputing anything.
    """

    correlation: CorrelationResult
    threshold: float
    fdr: float | None
    correlations: pd.DataFrame
    explanations: pd.DataFrame
    coverage: pd.DataFrame
    permutation_nulls: dict[str, np.ndarray] | None = None
    permutation_thresholds: dict[str, float] | None = None
    suggested_Ms: dict[str, float] | None = None
    intervals: pd.DataFrame | None = None
    within: StratifiedResult | None = None
    clusters: RadiomicClusters | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def permutation_null(self) -> np.ndarray | None:
        """The max-|rho| null over every model's pairs (the largest of the per-model nulls)."""
        if not self.permutation_nulls:
            return None
        return np.maximum.reduce(list(self.permutation_nulls.values()))

    @property
    def permutation_threshold(self) -> float | None:
        """The largest of the per-model permutation thresholds."""
        return max(self.permutation_thresholds.values()) if self.permutation_thresholds else None

    @property
    def suggested_M(self) -> float | None:
        """The largest of the per-model suggested M (one M that suits every backbone)."""
        return max(self.suggested_Ms.values()) if self.suggested_Ms else None

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

    @property
    def rule(self) -> str:
        """The rule in words, e.g. ``|rho| >= 0.60 and q <= 0.05 within label,cohort``."""
        return rule_text(
            self.threshold, self.fdr, ",".join(self.within.columns) if self.within is not None else ""
        )

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
            nulls=self.permutation_nulls,
            alpha=settings.get("alpha", 0.05),
            intervals=self.intervals,
            within=self.within,
            clusters=self.clusters,
            coverage_thresholds=settings.get("coverage_thresholds", DEFAULT_COVERAGE_THRESHOLDS),
            settings=settings,
            timings=self.timings,
        )

    def summary(self) -> dict[str, Any]:
        """Counts and settings for ``explanation.json`` and for people."""
        n_deep = len(self.correlation.deep_features)
        n_zero = len(self.zero_variance["deep"])
        status = self.explanations["status"]
        out = {
            "rad4xcnn_version": __version__,
            "settings": self.settings,
            "rule": self.rule,
            "n_cases": self.correlation.n_cases,
            "cases": list(self.correlation.cases),
            "n_deep_features": n_deep,
            "n_radiomic_features": len(self.correlation.radiomic_features),
            "n_pairs_kept": len(self.correlations),
            "n_explained": self.n_explained,
            "fraction_explained": self.n_explained / (n_deep - n_zero) if n_deep > n_zero else None,
            "permutation_threshold": self.permutation_threshold,
            "suggested_M": self.suggested_M,
            "permutation_thresholds": self.permutation_thresholds,
            "suggested_M_by_model": self.suggested_Ms,
            "n_radiomic_clusters": self.clusters.n_clusters if self.clusters is not None else None,
            "zero_variance": self.zero_variance,
            "dropped_cases": self.dropped_cases,
            "dropped_features": self.dropped_features,
            "backend": self.correlation.backend,
            "timings_s": self.timings,
        }
        alpha = float(self.settings.get("alpha", 0.05))
        fwer = explained_fwer(self.correlations, alpha, self.within is not None)
        out["n_explained_fwer"] = None if fwer is None else sum(fwer.values())
        out["n_explained_fwer_by_model"] = fwer
        out["M_below_permutation_threshold"] = below_permutation_threshold(
            self.threshold, self.permutation_thresholds
        )
        out["error_control"] = error_control(
            self.fdr, alpha, self.within is not None, int(self.settings.get("permutations", 0))
        )
        if self.within is not None:
            pooled_explained = self.explanations["n_partners"].gt(0) | status.isin(
                ["confounded", "attenuated", "reversed"]
            )
            out["strata"] = {
                "columns": self.within.columns,
                "sizes": self.within.strata,
                "left_out": self.within.small_strata,
                "min_stratum": int(self.settings.get("min_stratum", MIN_STRATUM)),
                "n_cases": self.within.n_cases,
            }
            for name in ("confounded", "attenuated", "reversed"):
                out[f"n_{name}"] = int(status.eq(name).sum())
                out[f"n_pairs_{name}"] = int((self.correlations["status"] == name).sum())
            # Deep features that the pooled rule alone would call explained. n_explained_or_confounded:
            # those with a kept pair of any status (explained, reversed, confounded or attenuated).
            kept_pooled = keep_mask(self.correlation.rho, self.threshold, q=self.correlation.q, fdr=self.fdr)
            out["n_explained_pooled"] = int(kept_pooled.any(axis=1).sum())
            out["n_explained_or_confounded"] = int(pooled_explained.sum())
        return out


def _per_model_thresholds(
    nulls: dict[str, np.ndarray] | None, alpha: float, threshold: float
) -> tuple[dict[str, float] | None, dict[str, float] | None]:
    if not nulls:
        return None, None
    thresholds = {model: permutation_threshold(null, alpha=alpha) for model, null in nulls.items()}
    suggested = {model: suggest_threshold(null, alpha=alpha) for model, null in nulls.items()}
    for model, boundary in thresholds.items():
        if threshold <= boundary:
            log.warning(
                "%s: M = %.2f is not above the permutation threshold %.3f (family-wise error %g): "
                "some kept pairs may be chance; M >= %.2f would not be",
                model,
                threshold,
                boundary,
                alpha,
                suggested[model],
            )
    return thresholds, suggested


def _assemble(
    result: CorrelationResult,
    threshold: float,
    fdr: float | None,
    *,
    nulls: dict[str, np.ndarray] | None,
    alpha: float,
    intervals: pd.DataFrame | None,
    within: StratifiedResult | None,
    clusters: RadiomicClusters | None,
    coverage_thresholds: Sequence[float],
    settings: dict[str, Any],
    timings: dict[str, float],
) -> Explanation:
    keep = keep_mask(result.rho, threshold, q=result.q, fdr=fdr)
    keep_within = keep_mask(within.rho, threshold, q=within.q, fdr=fdr) if within is not None else None
    pairs = pairs_table(
        result,
        keep,
        within=within,
        keep_within=keep_within,
        nulls=nulls,
        intervals=intervals,
        clusters=clusters,
        threshold=threshold,
        level=fdr if fdr is not None else alpha,  # the significance of q_within and q_heterogeneity
    )
    thresholds, suggested = _per_model_thresholds(nulls, alpha, threshold)
    rule = rule_text(threshold, fdr)
    stat, stat_q = (result.rho, result.q) if within is None else (within.rho, within.q)
    coverage = coverage_curve(
        stat, coverage_thresholds, deep_features=result.deep_features, q=stat_q, fdr=fdr
    )
    if within is not None:  # the paper's pooled rule beside
        pooled = coverage_curve(
            result.rho, coverage_thresholds, deep_features=result.deep_features, q=result.q, fdr=fdr
        )
        coverage["n_explained_pooled"] = pooled["n_explained"].to_numpy()
        coverage["fraction_pooled"] = pooled["fraction"].to_numpy()
    return Explanation(
        correlation=result,
        threshold=float(threshold),
        fdr=fdr,
        correlations=pairs,
        explanations=explanations_table(result, pairs, rule, within=within, clusters=clusters),
        coverage=coverage,
        permutation_nulls=nulls,
        permutation_thresholds=thresholds,
        suggested_Ms=suggested,
        intervals=intervals,
        within=within,
        clusters=clusters,
        settings=settings,
        timings=timings,
    )


def _radiomic_clusters(prep, level: float) -> RadiomicClusters:
    """Redundancy clusters from the standardised radiomic ranks already on the backend (their products are
    the radiomic x radiomic rho, within strata when the ranks are)."""
    rho = prep.ops.to_numpy(prep.zr @ prep.zr.T).astype(np.float64)
    if getattr(prep, "r_informative", None) is not None:
        inf = prep.r_informative
        if not inf.all():
            with np.errstate(divide="ignore", invalid="ignore"):
                rho = rho / ((inf * prep.weights) @ inf.T.astype(np.float64))
    rho[prep.r_constant, :] = np.nan
    rho[:, prep.r_constant] = np.nan
    return cluster_radiomics(np.clip(rho, -1, 1), list(prep.aligned.radiomic.columns), level)


def explain(
    deep_df: pd.DataFrame,
    radiomic_df: pd.DataFrame,
    settings: ExplainConfig | None = None,
    *,
    strata: pd.Series | pd.DataFrame | None = None,
    seed: int = 0,
    progress: bool = False,
    confidence: float = 0.95,
    max_missing_fraction: float = 0.5,
    cluster_level: float = CLUSTER_LEVEL,
    coverage_thresholds: Sequence[float] = DEFAULT_COVERAGE_THRESHOLDS,
) -> Explanation:
    """Correlate every deep feature with every radiomic feature and explain each deep feature by the radiomic
    features with ``|rho| >= M`` (and ``q <= fdr`` when set), as in Rad4XCNN.

    Parameters
    ----------
    deep_df, radiomic_df
        Cases x features, indexed by case id (docs/ARCHITECTURE.md). Cases in one table only are left out and
        reported; features and cases with missing values are handled as in
        :func:`~Rad4XCNNLogic.explain.correlation.spearman`.
    settings
        The ``explain`` section (:class:`~Rad4XCNNLogic.explain.settings.ExplainConfig`; None: its
        defaults), the one statement of every value: M is ``thresholds[0]`` (the paper's rule; the other
        values of M re-threshold the result, :meth:`Explanation.with_threshold`); ``fdr`` also requires the
        Benjamini–Hochberg q-value (over the pairs of the feature's model) to be at most this;
        ``permutations`` shuffles the case order for the max-|rho| null of each model (0: none), which gives
        the per-model ``permutation_thresholds`` (the |rho| a pair must exceed for family-wise error
        ``alpha``), ``suggested_Ms`` and a ``p_fwer`` column; ``bootstrap`` resamples for the percentile
        ``confidence`` interval of each kept pair's rho (0: none); ``backend`` and ``chunk_size`` as in
        :func:`~Rad4XCNNLogic.explain.correlation.spearman`. ``stratify`` and ``cases`` are the caller's:
        they pick ``strata`` and the cases from a manifest (:func:`~Rad4XCNNLogic.run.work.explain_stage`).
    strata
        The stratum of each case (a Series indexed by case id, e.g. from
        :func:`~Rad4XCNNLogic.explain.strata.stratum_labels` on the manifest's ``label`` and ``cohort``).
        Then the rule is applied to rho within strata (``rho_within``, ``q_within``); a deep feature that
        meets it only pooled over the strata is ``confounded`` or ``attenuated``, one whose strata disagree
        in sign ``reversed``; the permutation null shuffles within strata and the bootstrap resamples within
        strata. Strata of fewer than ``settings.min_stratum`` cases are left out. None: the paper's pooled
        rule.
    seed
        Seeds the permutations and the bootstrap; the same seed gives the same result on every backend.
    cluster_level
        The |rho| at which radiomic features are one redundancy cluster
        (:data:`~Rad4XCNNLogic.explain.partners.CLUSTER_LEVEL`).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> rad = pd.DataFrame(rng.normal(size=(80, 3)), columns=[
    ...     "original_glcm_Contrast", "original_firstorder_Mean", "wavelet-HL_glszm_ZoneEntropy"])
    >>> deep = pd.DataFrame({"cnn_0": np.exp(rad["original_glcm_Contrast"]), "cnn_1": rng.normal(size=80)})
    >>> result = explain(deep, rad, ExplainConfig(permutations=0, bootstrap=0, backend="numpy"))
    >>> result.explanations.loc["cnn_0", "summary"]
    '1 partner: high local grey-level variation (original_glcm_Contrast), rho 1.00'
    """
    ec = check_section(ExplainConfig() if settings is None else settings, "explain")
    threshold, fdr, alpha = ec.thresholds[0], ec.fdr, ec.alpha
    permutations, bootstrap, backend = ec.permutations, ec.bootstrap, ec.backend
    min_stratum = ec.min_stratum
    settings = {
        "threshold": float(threshold),
        "fdr": fdr,
        "permutations": int(permutations),
        "alpha": float(alpha),
        "bootstrap": int(bootstrap),
        "confidence": float(confidence),
        "seed": int(seed),
        "backend": backend,
        "chunk_size": ec.chunk_size,
        "max_missing_fraction": float(max_missing_fraction),
        "cluster_level": float(cluster_level),
        "coverage_thresholds": [float(m) for m in coverage_thresholds],
        "min_stratum": int(min_stratum),
    }
    timings: dict[str, float] = {}
    start = time.perf_counter()
    prep = prepare_tables(deep_df, radiomic_df, backend, ec.chunk_size, max_missing_fraction)
    result = spearman_prepared(prep, progress)
    timings["spearman"] = time.perf_counter() - start
    within = None
    test_prep = prep  # the preparation whose statistic decides: within strata when stratified
    if strata is not None:
        start = time.perf_counter()
        test_prep = prepare_within(prep, strata, min_stratum)
        within = within_spearman(test_prep, progress)
        settings["stratify"] = within.columns
        timings["spearman_within"] = time.perf_counter() - start
    clusters = _radiomic_clusters(test_prep, cluster_level)
    nulls = None
    if permutations:
        start = time.perf_counter()
        nulls = permutation_null_prepared(test_prep, permutations, seed, progress)
        permutation_threshold(next(iter(nulls.values())), alpha=alpha)  # fails early if too few permutations
        timings["permutations"] = time.perf_counter() - start
    intervals = None
    if bootstrap:
        stat, stat_q = (result.rho, result.q) if within is None else (within.rho, within.q)
        keep = keep_mask(stat, threshold, q=stat_q, fdr=fdr)
        di, ri = np.nonzero(keep)
        index = pd.MultiIndex.from_arrays(
            [[result.deep_features[i] for i in di], [result.radiomic_features[j] for j in ri]],
            names=["deep_feature", "radiomic_feature"],
        )
        if len(di):
            start = time.perf_counter()
            run = bootstrap_pairs if within is None else bootstrap_within
            low, high = run(test_prep, di, ri, bootstrap, confidence, seed, progress)
            timings["bootstrap"] = time.perf_counter() - start
        else:
            low = high = np.empty(0)
        intervals = pd.DataFrame({"ci_low": low, "ci_high": high}, index=index)
    return _assemble(
        result,
        threshold,
        fdr,
        nulls=nulls,
        alpha=alpha,
        intervals=intervals,
        within=within,
        clusters=clusters,
        coverage_thresholds=coverage_thresholds,
        settings=settings,
        timings=timings,
    )


# ----------------------------------------------------------------------------------------------- files
def write_explanation(explanation: Explanation, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``correlations.csv``, ``explanations.csv``, ``coverage.csv``, ``explanation.json``,
    ``radiomic_clusters.csv`` and the full matrices (``rho.npy``, ``p.npy``, ``q.npy``,
    ``correlation.json``; with strata ``rho_within.npy``, ``p_within.npy``, ``q_within.npy``,
    ``strata.json``; ``permutation_null.npy``, the largest over models, and ``permutation_nulls.npz``, one
    per model) to ``out_dir``, atomically; :func:`load_explanation` reads them back for a new M without
    recomputing.
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
    if explanation.within is not None:
        explanation.within.save(out)
        written["strata"] = out / "strata.json"
    if explanation.clusters is not None:
        written["radiomic_clusters"] = explanation.clusters.save(out / "radiomic_clusters.csv")
    if explanation.permutation_nulls:
        with atomic_path(out / "permutation_null.npy") as tmp, tmp.open("wb") as fh:
            np.save(fh, explanation.permutation_null)
        with atomic_path(out / "permutation_nulls.npz") as tmp, tmp.open("wb") as fh:
            models = list(explanation.permutation_nulls)
            np.savez(
                fh,
                models=np.array(models),
                nulls=np.stack([explanation.permutation_nulls[m] for m in models]),
            )
        written["permutation_null"] = out / "permutation_null.npy"
        written["permutation_nulls"] = out / "permutation_nulls.npz"
    if explanation.intervals is not None:
        written["bootstrap"] = write_csv_atomic(out / "bootstrap_intervals.csv", explanation.intervals)
    written["summary"] = write_json_atomic(out / "explanation.json", explanation.summary())
    return written


def _load_nulls(out: Path, models: Sequence[str]) -> dict[str, np.ndarray] | None:
    path = out / "permutation_nulls.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as data:
            return {str(m): data["nulls"][i] for i, m in enumerate(data["models"])}
    single = out / "permutation_null.npy"
    if single.exists():  # written before the nulls were per model: one null for every model
        null = np.load(single, allow_pickle=False)
        return {model: null for model in dict.fromkeys(models)}
    return None


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
        nulls = _load_nulls(out, [model_of(d) for d in result.deep_features])
    except (OSError, ValueError, KeyError) as exc:
        raise Rad4XCNNError(f"cannot read the explanation in {out}: {exc}") from None
    settings = summary.get("settings", {})
    intervals_path = out / "bootstrap_intervals.csv"
    intervals = pd.read_csv(intervals_path, index_col=[0, 1]) if intervals_path.exists() else None
    fdr = settings.get("fdr") if fdr == "same" else fdr
    threshold = settings.get("threshold", 0.6) if threshold is None else threshold
    return _assemble(
        result,
        threshold,
        fdr,
        nulls=nulls,
        alpha=settings.get("alpha", 0.05),
        intervals=intervals,
        within=StratifiedResult.load(out),
        clusters=RadiomicClusters.load(out / "radiomic_clusters.csv"),
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
            f"importance_mean (as importances.csv); got columns {name_list(list(frame.columns))}"
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
            f"(importances for {name_list(list(series.index), 3)})"
        )
    if len(known) < len(series):
        log.info("%d feature(s) with an importance are not deep features here", len(series) - len(known))
    known = known.sort_values(ascending=False, kind="stable")
    table = explanation.explanations.loc[known.index].copy()
    table.insert(0, "importance", known.to_numpy())
    table.insert(1, "importance_rank", np.arange(1, len(known) + 1))
    table.insert(2, "cumulative_explained", (table["status"] == "explained").cumsum().to_numpy())
    return table
