"""What the counts of an explanation claim, and with which error: the pair-level false discovery rate of the
rule, the feature-level family-wise error of the permutation threshold, and each backbone's gain over its
random-weights control with a bootstrap interval and a verdict.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from Rad4XCNNLogic.explain.correlation import prepare_tables
from Rad4XCNNLogic.explain.resampling import pair_resamples, pooled_rho
from Rad4XCNNLogic.explain.settings import MIN_STRATUM
from Rad4XCNNLogic.explain.strata import prepare_within, within_rho
from Rad4XCNNLogic.names import model_of

log = logging.getLogger(__name__)

CONTROL_CANDIDATES = 5
"""Partners per deep feature whose rho the control bootstrap recomputes on each resample (the strongest by
the rule's statistic on all cases)."""

NOT_SPECIFIC = "explanations are not specific to what the network learnt"


# --------------------------------------------------------------------------------- which error, which count
def error_control(fdr: float | None, alpha: float, stratified: bool, permutations: int) -> dict[str, str]:
    """For each count of ``explanation.json`` (and the report and the terminal), the error it controls."""
    rule = (
        f"Benjamini-Hochberg q <= {fdr:g} per backbone" if fdr is not None else "no multiple-testing control"
    )
    where = "within strata" if stratified else "pooled"
    out = {
        "n_pairs_kept": f"pairs: the pair-level false discovery rate ({rule}, {where})",
        "n_explained": (
            "deep features with any kept pair: no feature-level error control (the pair-level FDR does not "
            "bound the share of deep features explained by chance; see n_explained_fwer)"
        ),
    }
    if permutations:
        out["n_explained_fwer"] = (
            f"deep features with a kept pair above their backbone's max-|rho| permutation threshold: the "
            f"feature-level family-wise error, at most {alpha:g} per backbone"
        )
    return out


def explained_fwer(pairs: pd.DataFrame, alpha: float, stratified: bool) -> dict[str, int] | None:
    """Per backbone, the deep features explained with a pair whose family-wise p (``p_fwer``, the max-|rho|
    permutation null of its backbone) is at most ``alpha``; None without a permutation null."""
    if "p_fwer" not in pairs.columns:
        return None
    kept = pairs[pairs["status"] == "explained"] if stratified and len(pairs) else pairs
    strong = kept.loc[kept["p_fwer"] <= alpha, "deep_feature"].drop_duplicates()
    return {str(k): int(v) for k, v in strong.map(model_of).value_counts(sort=False).items()}


def below_permutation_threshold(threshold: float, thresholds: Mapping[str, float] | None) -> list[str]:
    """The backbones whose permutation threshold M does not exceed: there some kept pairs may be chance."""
    return sorted(m for m, boundary in (thresholds or {}).items() if threshold <= boundary)


# ------------------------------------------------------------------------------------------ the control
def _candidates(stat: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` strongest partners (|stat|) of each deep feature of ``rows``: (row, column) index pairs."""
    if stat.shape[1] == 0 or not len(rows):
        return np.empty(0, np.intp), np.empty(0, np.intp)
    k = min(k, stat.shape[1])
    strength = np.where(np.isnan(stat[rows]), -1.0, np.abs(stat[rows]))
    best = np.argpartition(-strength, k - 1, axis=1)[:, :k]
    keep = np.take_along_axis(strength, best, axis=1) >= 0
    return np.repeat(rows, k)[keep.ravel()], best.ravel()[keep.ravel()]


def control_gain_bootstrap(
    explanation,
    deep_df: pd.DataFrame,
    radiomic_df: pd.DataFrame,
    controls: Mapping[str, str],
    thresholds: Sequence[float],
    *,
    n_boot: int,
    strata: pd.Series | None = None,
    confidence: float = 0.95,
    seed: int = 0,
    candidates: int = CONTROL_CANDIDATES,
    estimates: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Bootstrap interval of each backbone's gain over its control (fraction explained minus the control's),
    cases resampled with replacement (within strata when stratified), the same resample for both.

    Each resample recomputes rho (within strata when stratified) for the :data:`CONTROL_CANDIDATES` strongest
    partners of every deep feature of the two models only, and counts a deep feature explained there when one
    of them reaches ``|rho| >= M``: the q condition, which needs the whole family of pairs, is not re-applied
    on resamples. The fraction is over the deep features that vary (as in ``coverage.csv``). Returns model,
    control, M, ``gain_ci_low``, ``gain_ci_high`` (percentile ``confidence`` interval) and ``n_boot``.

    Without q, and with the best of a few candidates on each resample, the resampled gains sit at another
    level than the reported one (a gain of 0 could show resamples all above 0). With ``estimates`` (model,
    control, M, ``gain``: the reported gains, e.g. of ``control_coverage.csv``) the interval is the spread of
    the resampled gains around their mean, placed on the reported gain, so it always holds the estimate.
    """
    result = explanation.correlation
    within = explanation.within
    stat = result.rho if within is None else within.rho
    models = np.array([model_of(d) for d in result.deep_features], dtype=object)
    involved = [m for pair in controls.items() for m in pair]
    rows = np.flatnonzero(np.isin(models, involved))
    di, ri = _candidates(stat, rows, candidates)
    deep_names = list(dict.fromkeys(result.deep_features[i] for i in di))
    rad_names = list(dict.fromkeys(result.radiomic_features[j] for j in ri))
    settings = explanation.settings
    cases = pd.Index(result.cases)
    deep = deep_df.loc[deep_df.index.map(str).isin(cases), deep_names]
    rad = radiomic_df.loc[radiomic_df.index.map(str).isin(cases), rad_names]
    prep = prepare_tables(
        deep, rad, settings.get("backend", "auto"), None, settings.get("max_missing_fraction", 0.5)
    )
    if within is not None:
        prep = prepare_within(prep, strata, settings.get("min_stratum", MIN_STRATUM))
        resample, rho = prep.resample, within_rho(prep)
    else:
        resample, rho = (lambda rng: rng.integers(0, prep.n, prep.n)), pooled_rho(prep)
    d_pos = {name: i for i, name in enumerate(prep.aligned.deep.columns)}
    r_pos = {name: j for j, name in enumerate(prep.aligned.radiomic.columns)}
    found = np.array(
        [
            result.deep_features[i] in d_pos and result.radiomic_features[j] in r_pos
            for i, j in zip(di, ri, strict=True)
        ],
        dtype=bool,
    )
    di, ri = di[found], ri[found]
    if not len(di):  # no deep feature of the two networks varies: nothing is explained on any resample
        di = ri = np.empty(0, np.intp)
    values = (
        np.zeros((n_boot, 0))
        if not len(di)
        else pair_resamples(
            prep,
            np.array([d_pos[result.deep_features[i]] for i in di], dtype=np.intp),
            np.array([r_pos[result.radiomic_features[j]] for j in ri], dtype=np.intp),
            n_boot,
            seed,
            False,
            resample=resample,
            rho=rho,
            desc="control bootstrap",
            elementwise=True,
        )
    )
    strength = np.nan_to_num(np.abs(values), nan=0.0)
    feature_of = pd.factorize(di)[0]  # each candidate's deep feature, numbered 0..
    feature_model = models[pd.unique(di)] if len(di) else np.empty(0, object)
    coverage = explanation.coverage
    varying = {
        m: int(g["n_features"].iloc[0] - g["n_constant"].iloc[0]) for m, g in coverage.groupby("model")
    }
    tail = (1 - confidence) / 2
    out = []
    for m in thresholds:
        best = np.zeros((n_boot, feature_model.size))
        np.maximum.at(best.T, feature_of, (strength >= float(m) - 1e-12).T.astype(float))
        fraction = {
            model: best[:, feature_model == model].sum(axis=1) / varying[model]
            if varying.get(model)
            else None
            for model in involved
        }
        for model, control in controls.items():
            if fraction[model] is None or fraction[control] is None:
                continue
            gain = fraction[model] - fraction[control]
            low, high = np.quantile(gain, [tail, 1 - tail])
            if estimates is not None:
                at = estimates[
                    (estimates["model"] == model)
                    & (estimates["control"] == control)
                    & np.isclose(estimates["M"].astype(float), float(m))
                ]
                if len(at):
                    shift = float(at["gain"].iloc[0]) - float(gain.mean())
                    low, high = low + shift, high + shift
            out.append(
                {
                    "model": model,
                    "control": control,
                    "M": round(float(m), 10),
                    "gain_ci_low": float(low),
                    "gain_ci_high": float(high),
                    "n_boot": int(n_boot),
                }
            )
    return pd.DataFrame(out, columns=["model", "control", "M", "gain_ci_low", "gain_ci_high", "n_boot"])


def control_verdicts(table: pd.DataFrame, threshold: float) -> list[dict]:
    """One verdict per backbone at M = ``threshold`` from ``control_coverage.csv`` with its gain interval:
    not specific when the gain is not above zero or its interval includes or lies below zero."""
    if table is None or not len(table) or "gain_ci_low" not in table.columns:
        return []
    at = table[np.isclose(table["M"].astype(float), threshold)]
    verdicts = []
    for row in at.itertuples():
        interval = (
            f"gain {100 * row.gain:+.1f} points (95% interval {100 * row.gain_ci_low:+.1f} to "
            f"{100 * row.gain_ci_high:+.1f})"
        )
        explained = (
            f"{100 * row.fraction:.1f}% of {row.model}'s deep features explained, "
            f"{100 * row.fraction_control:.1f}% of its random-weights control {row.control}'s "
            f"at M = {threshold:g}"
        )
        specific = bool(row.gain > 0 and row.gain_ci_low > 0)
        text = (
            f"{row.model}: training added explanations beyond the architecture: {explained}, {interval}"
            if specific
            else f"{row.model}: {NOT_SPECIFIC}: {explained}, {interval}"
        )
        verdicts.append(
            {
                "model": row.model,
                "control": row.control,
                "M": float(threshold),
                "gain": float(row.gain),
                "gain_ci_low": float(row.gain_ci_low),
                "gain_ci_high": float(row.gain_ci_high),
                "specific": specific,
                "text": text,
            }
        )
    return verdicts
