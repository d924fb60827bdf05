"""The two tables of an explanation: kept pairs (``correlations.csv``) and one row per deep feature
(``explanations.csv``), under the paper's pooled rule or, with strata, the within-stratum rule that tells
explained pairs from confounded ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from Rad4XCNNLogic.explain.correlation import CorrelationResult
from Rad4XCNNLogic.explain.glossary import family_of, summary_line
from Rad4XCNNLogic.explain.partners import RadiomicClusters, group_partners, groups_text
from Rad4XCNNLogic.explain.resampling import fwer_pvalues
from Rad4XCNNLogic.explain.strata import StratifiedResult
from Rad4XCNNLogic.names import model_of, parse_radiomic_name

EXPLANATION_COLUMNS = [
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
    "n_clusters",
    "partner_clusters",
    "n_confounded",
    "n_attenuated",
    "n_reversed",
    "summary",
]

PAIR_STATUSES = ("explained", "reversed", "attenuated", "confounded")
"""The statuses of a kept pair with strata (``correlations.csv``); see :func:`pairs_table`."""

FEATURE_STATUSES = ("explained", "reversed", "confounded", "attenuated")
"""A deep feature takes the first of these that one of its kept pairs has (``explanations.csv``); without
any it is ``unexplained``, ``zero variance`` or ``left out``."""


def _fwer_by_model(values: np.ndarray, models: list[str], nulls: Mapping[str, np.ndarray]) -> np.ndarray:
    out = np.full(len(values), np.nan)
    models_arr = np.asarray(models, dtype=object)
    for model, null in nulls.items():
        rows = models_arr == model
        out[rows] = fwer_pvalues(values[rows], null)
    return out


def strata_disagree(within: StratifiedResult, level: float) -> np.ndarray:
    """Pairs whose strata disagree in sign, significantly: ``rho_stratum_min < 0 < rho_stratum_max`` and the
    heterogeneity test's BH q at most ``level`` (all False for a result saved without that test)."""
    if within.rho_min is None or within.q_heterogeneity is None:
        return np.zeros(within.rho.shape, dtype=bool)
    with np.errstate(invalid="ignore"):
        return (within.rho_min < 0) & (within.rho_max > 0) & (within.q_heterogeneity <= level)


def pairs_table(
    result: CorrelationResult,
    keep: np.ndarray,
    *,
    within: StratifiedResult | None = None,
    keep_within: np.ndarray | None = None,
    nulls: Mapping[str, np.ndarray] | None = None,
    intervals: pd.DataFrame | None = None,
    clusters: RadiomicClusters | None = None,
    threshold: float,
    level: float,
) -> pd.DataFrame:
    """One row per kept pair, deep features in table order and the strongest partner first.

    Pooled (``within`` None): the pairs of ``keep``, with rho, p, q. With strata: the pairs kept by either
    rule, and those whose strata disagree with a stratum at ``|rho| >= threshold``, with the pooled rho, p, q
    beside ``rho_within``, ``p_within``, ``q_within``, the smallest and largest per-stratum rho
    (``rho_stratum_min``, ``rho_stratum_max``), ``p_heterogeneity`` and ``q_heterogeneity`` (equal
    per-stratum rhos), and a ``status``, the first that holds (``level``: the FDR level):

    - ``reversed``: the strata disagree in sign, significantly (``rho_stratum_min < 0 < rho_stratum_max``
      and ``q_heterogeneity <= level``), or the pair meets the pooled rule with the opposite sign to a
      significant rho within strata (``q_within <= level``);
    - ``explained``: meets the rule within strata;
    - ``attenuated``: meets the rule pooled, and the within-stratum rho is significant (``q_within <=
      level``) but below M: a real association, weaker among comparable cases;
    - ``confounded``: meets the rule pooled, and the within-stratum rho is not significant: the pooled rho
      comes from differences between the strata.

    ``p_fwer`` and the bootstrap interval refer to the statistic of the rule (rho_within with strata),
    against each model's own permutation null.
    """
    disagree = None
    if within is None:
        any_keep = keep
    else:
        disagree = strata_disagree(within, level)
        with np.errstate(invalid="ignore"):
            strong = np.fmax(np.abs(within.rho_min), np.abs(within.rho_max)) >= threshold - 1e-12
        any_keep = keep | keep_within | (disagree & strong)
    di, ri = np.nonzero(any_keep)
    stat = result.rho if within is None else within.rho
    decisive = stat[di, ri]
    order = np.lexsort((-np.nan_to_num(np.abs(decisive)), di))
    di, ri, decisive = di[order], ri[order], decisive[order]
    radiomic = [result.radiomic_features[j] for j in ri]
    parsed = [parse_radiomic_name(name) for name in radiomic]
    deep = [result.deep_features[i] for i in di]
    table = pd.DataFrame(
        {
            "deep_feature": deep,
            "radiomic_feature": radiomic,
            "rho": result.rho[di, ri],
            "p": result.p[di, ri],
            "q": result.q[di, ri],
        }
    )
    if within is not None:
        table["rho_within"] = decisive
        table["p_within"] = within.p[di, ri]
        table["q_within"] = within.q[di, ri]
        for column, matrix in (
            ("rho_stratum_min", within.rho_min),
            ("rho_stratum_max", within.rho_max),
            ("p_heterogeneity", within.p_heterogeneity),
            ("q_heterogeneity", within.q_heterogeneity),
        ):
            table[column] = matrix[di, ri] if matrix is not None else np.nan
        significant = table["q_within"].to_numpy() <= level
        flipped = keep[di, ri] & (np.sign(table["rho"].to_numpy()) != np.sign(decisive)) & significant
        table["status"] = np.select(
            [disagree[di, ri] | flipped, keep_within[di, ri], significant],
            ["reversed", "explained", "attenuated"],
            "confounded",
        )
    if nulls is not None:
        table["p_fwer"] = _fwer_by_model(decisive, [model_of(d) for d in deep], nulls)
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
    table["cluster"] = (
        clusters.table["cluster"].reindex(radiomic).fillna("").to_numpy() if clusters is not None else ""
    )
    table["meaning"] = [summary_line(name) for name in radiomic]
    return table


def _family_text(families: pd.Series) -> str:
    counts = families.value_counts(sort=False)
    counts = counts.sort_values(ascending=False, kind="stable")
    return "; ".join(f"{family} {n}" for family, n in counts.items())


def _explained_row(kept: pd.DataFrame, column: str, clusters: RadiomicClusters | None) -> dict[str, Any]:
    top = kept.iloc[0]
    name, rho = top["radiomic_feature"], float(top[column])
    groups = group_partners(clusters, list(kept["radiomic_feature"]), list(kept[column]))
    label = "rho within strata" if column == "rho_within" else "rho"
    if len(kept) == 1:
        summary = f"1 partner: {groups[0].text()}, {label} {rho:.2f}"
    else:
        summary = f"{len(kept)} partners in {groups_text(groups)}; strongest {name}, {label} {rho:.2f}"
    return {
        "status": "explained",
        "n_partners": len(kept),
        "partners": ";".join(kept["radiomic_feature"]),
        "strongest_partner": name,
        "strongest_rho": rho,
        "top_family": kept["family"].value_counts().index[0],
        "families": _family_text(kept["family"]),
        "n_clusters": len(groups),
        "partner_clusters": ";".join(g.cluster for g in groups),
        "summary": summary,
    }


def _other_row(status: str, pairs: pd.DataFrame, rule: str, strata: str) -> dict[str, Any]:
    """A deep feature with kept pairs none of which explains it: reversed, confounded or attenuated."""
    if status == "reversed":  # the pair whose strata disagree most
        spread = (pairs["rho_stratum_max"] - pairs["rho_stratum_min"]).fillna(0).to_numpy()
        top = pairs.iloc[int(np.argmax(spread))]
        words = (
            f"reversed: {len(pairs)} pair(s) with strata of {strata} that disagree in sign (strongest "
            f"{top['radiomic_feature']}: rho from {top['rho_stratum_min']:.2f} to "
            f"{top['rho_stratum_max']:.2f} across strata, {top['rho']:.2f} pooled, "
            f"{top['rho_within']:.2f} within)"
        )
        return {
            "status": status,
            "n_partners": 0,
            "strongest_partner": top["radiomic_feature"],
            "strongest_rho": float(top["rho_within"]),
            "summary": words,
        }
    top = pairs.iloc[int(np.argmax(np.abs(pairs["rho"].to_numpy())))]
    partner = top["radiomic_feature"]
    if status == "confounded":
        lead = (
            f"confounded: {len(pairs)} partner(s) meet {rule} pooled over the strata with no significant "
            f"association within {strata}"
        )
    else:
        lead = (
            f"attenuated: {len(pairs)} partner(s) meet {rule} pooled, and are associated within {strata} "
            "too, but more weakly than M"
        )
    return {
        "status": status,
        "n_partners": 0,
        "strongest_partner": partner,
        "strongest_rho": float(top["rho"]),
        "summary": (
            f"{lead} (strongest {partner}: rho {top['rho']:.2f} pooled, {top['rho_within']:.2f} within)"
        ),
    }


def explanations_table(
    result: CorrelationResult,
    pairs: pd.DataFrame,
    rule: str,
    *,
    within: StratifiedResult | None = None,
    clusters: RadiomicClusters | None = None,
) -> pd.DataFrame:
    """One row per deep feature in the deep table's order (features left out last).

    ``status``: ``explained`` (a partner meets the rule; within strata when there are strata); with strata,
    when no partner explains it, the first of ``reversed``, ``confounded``, ``attenuated`` that one of its
    kept pairs has (:data:`FEATURE_STATUSES`; the pair statuses of :func:`pairs_table`); else
    ``unexplained``, ``zero variance`` or ``left out``. ``strongest_rho`` is the statistic of the rule (rho
    within strata when stratified, except for a confounded or attenuated feature, where it is the pooled rho
    that met the rule). ``n_confounded``, ``n_attenuated`` and ``n_reversed`` count its pairs of each status.
    ``n_clusters`` and ``partner_clusters`` name the redundancy clusters of the partners.
    """
    column = "rho" if within is None else "rho_within"
    stat = result.rho if within is None else within.rho
    abs_stat = np.abs(stat)
    all_nan = np.isnan(abs_stat).all(axis=1) if abs_stat.shape[1] else np.ones(abs_stat.shape[0], bool)
    best = np.argmax(np.where(np.isnan(abs_stat), -1.0, abs_stat), axis=1) if abs_stat.shape[1] else None
    grouped = dict(tuple(pairs.groupby("deep_feature", sort=False))) if len(pairs) else {}
    strata = ",".join(within.columns) if within is not None else ""
    rows = []
    for i, name in enumerate(result.deep_features):
        row: dict[str, Any] = {"deep_feature": name, "model": model_of(name)}
        found = grouped.get(name)
        kept, others = found, {}
        if found is not None and within is not None:
            kept = found[found["status"] == "explained"]
            others = {k: found[found["status"] == k] for k in FEATURE_STATUSES[1:]}
            row.update({f"n_{k}": len(v) for k, v in others.items()})
        other = next((k for k in FEATURE_STATUSES[1:] if k in others and len(others[k])), None)
        if kept is not None and len(kept):
            row.update(_explained_row(kept, column, clusters))
        elif other is not None:
            row.update(_other_row(other, others[other], rule, strata))
        elif all_nan[i]:
            row.update(status="zero variance", n_partners=0, summary="constant over the cases: it has no rho")
        else:
            partner = result.radiomic_features[best[i]]
            rho = float(stat[i, best[i]])
            where = f" within {strata}" if within is not None else ""
            row.update(
                status="unexplained",
                n_partners=0,
                strongest_partner=partner,
                strongest_rho=rho,
                summary=f"no radiomic partner with {rule}{where} (closest: {partner}, rho {rho:.2f})",
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
    table = pd.DataFrame(rows).reindex(columns=EXPLANATION_COLUMNS)
    for column_name in ("n_partners", "n_clusters", "n_confounded", "n_attenuated", "n_reversed"):
        table[column_name] = table[column_name].fillna(0).astype(int)
    table["strongest_meaning"] = [
        summary_line(n) if isinstance(n, str) else "" for n in table["strongest_partner"]
    ]
    for column_name in ("partners", "strongest_partner", "top_family", "families", "partner_clusters"):
        # object first: with no explained feature the column is all-NaN float, which "" cannot fill
        table[column_name] = table[column_name].astype(object).fillna("")
    return table.set_index("deep_feature")
