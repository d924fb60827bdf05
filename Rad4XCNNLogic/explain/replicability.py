"""Replicability of explanations across cohorts: the explanation computed in each cohort apart, and which
kept pairs hold in both with the same sign.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.explain.correlation import CorrelationResult, name_list, spearman
from Rad4XCNNLogic.explain.rule import keep_mask
from Rad4XCNNLogic.explain.settings import check_threshold
from Rad4XCNNLogic.infra.storage import write_csv_atomic

log = logging.getLogger(__name__)


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
    threshold: float,
    *,
    fdr: float | None = None,
    backend: str,
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
    >>> cohorts = manifest.set_index("case_id")["cohort"]  # doctest: +SKIP
    >>> rep = replicate(deep, rad, cohorts, 0.6, backend="numpy")  # doctest: +SKIP
    >>> rep.summary[["cohort_a", "cohort_b", "n_replicated", "rho_agreement"]]  # doctest: +SKIP
    """
    check_threshold(threshold, fdr)
    groups = pd.Series(groups, dtype=object)
    groups.index = groups.index.map(str)
    groups = groups.dropna().astype(str)
    if groups.index.duplicated().any():
        raise Rad4XCNNError(
            f"duplicate case id(s) in the cohort list: {name_list(groups.index[groups.index.duplicated()])}"
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
            name_list(dropped),
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
