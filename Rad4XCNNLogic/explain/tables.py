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
    "summary",
]


def _fwer_by_model(values: np.ndarray, models: list[str], nulls: Mapping[str, np.ndarray]) -> np.ndarray:
    out = np.full(len(values), np.nan)
    models_arr = np.asarray(models, dtype=object)
    for model, null in nulls.items():
        rows = models_arr == model
        out[rows] = fwer_pvalues(values[rows], null)
    return out


def pairs_table(
    result: CorrelationResult,
    keep: np.ndarray,
    *,
    within: StratifiedResult | None = None,
    keep_within: np.ndarray | None = None,
    nulls: Mapping[str, np.ndarray] | None = None,
    intervals: pd.DataFrame | None = None,
    clusters: RadiomicClusters | None = None,
) -> pd.DataFrame:
    """One row per kept pair, deep features in table order and the strongest partner first.

    Pooled (``within`` None): the pairs of ``keep``, with rho, p, q. With strata: the pairs kept by either
    rule, with the pooled rho, p, q beside ``rho_within``, ``p_within``, ``q_within`` and a ``status``:
    ``explained`` (meets the rule within strata) or ``confounded`` (meets it only pooled). ``p_fwer`` and
    the bootstrap interval refer to the statistic of the rule (rho_within with strata), against each
    model's own permutation null.
    """
    any_keep = keep if within is None else keep | keep_within
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
        table["status"] = np.where(keep_within[di, ri], "explained", "confounded")
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


def explanations_table(
    result: CorrelationResult,
    pairs: pd.DataFrame,
    rule: str,
    *,
    within: StratifiedResult | None = None,
    clusters: RadiomicClusters | None = None,
) -> pd.DataFrame:
    """One row per deep feature in the deep table's order (features left out last).

    ``status``: ``explained`` (a partner meets the rule; within strata when there are strata),
    ``confounded`` (with strata: partners meet the rule pooled over strata but none within them),
    ``unexplained``, ``zero variance`` or ``left out``. ``strongest_rho`` is the statistic of the rule
    (rho within strata when stratified, except for a confounded feature, where it is the pooled rho that
    met the rule). ``n_clusters`` and ``partner_clusters`` name the redundancy clusters of the partners.
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
        row: dict[str, Any] = {"deep_feature": name, "model": model_of(name), "n_confounded": 0}
        found = grouped.get(name)
        kept = confounded = None
        if found is not None:
            kept = found if within is None else found[found["status"] == "explained"]
            confounded = None if within is None else found[found["status"] == "confounded"]
            row["n_confounded"] = 0 if confounded is None else len(confounded)
        if kept is not None and len(kept):
            row.update(_explained_row(kept, column, clusters))
        elif confounded is not None and len(confounded):
            top = confounded.iloc[np.argmax(np.abs(confounded["rho"].to_numpy()))]
            partner = top["radiomic_feature"]
            row.update(
                status="confounded",
                n_partners=0,
                strongest_partner=partner,
                strongest_rho=float(top["rho"]),
                summary=(
                    f"confounded: {len(confounded)} partner(s) meet {rule} pooled over the strata but none "
                    f"within {strata} (strongest {partner}: rho {top['rho']:.2f} pooled, "
                    f"{top['rho_within']:.2f} within)"
                ),
            )
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
                "n_confounded": 0,
                "summary": f"left out: {reason}",
            }
        )
    table = pd.DataFrame(rows).reindex(columns=EXPLANATION_COLUMNS)
    for column_name in ("n_partners", "n_clusters", "n_confounded"):
        table[column_name] = table[column_name].fillna(0).astype(int)
    table["strongest_meaning"] = [
        summary_line(n) if isinstance(n, str) else "" for n in table["strongest_partner"]
    ]
    for column_name in ("partners", "strongest_partner", "top_family", "families", "partner_clusters"):
        # object first: with no explained feature the column is all-NaN float, which "" cannot fill
        table[column_name] = table[column_name].astype(object).fillna("")
    return table.set_index("deep_feature")
