"""What an explanation holds beyond the cases and the weights that produced it: its kept pairs re-measured
on held-out cases (the internal test split, other cohorts), and each trained backbone's coverage beside its
random-weights control's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.explain.correlation import name_list, spearman
from Rad4XCNNLogic.explain.settings import MIN_STRATUM
from Rad4XCNNLogic.explain.strata import spearman_within
from Rad4XCNNLogic.infra.storage import write_csv_atomic
from Rad4XCNNLogic.names import RunFiles

log = logging.getLogger(__name__)


@dataclass
class HeldOut:
    """Kept pairs re-measured on held-out sets of cases.

    ``pairs`` has one row per explained pair (deep_feature, radiomic_feature, ``rho``: the statistic of the
    explanation's rule on its own cases), and per held-out set ``rho_heldout_<set>`` and
    ``replicated_<set>`` (the same sign and ``|rho| >= M`` there). ``summary`` has one row per set: its
    cases, how many pairs were re-measured and replicated, and the median |rho| there. With strata, rho on a
    held-out set is within its strata too.
    """

    pairs: pd.DataFrame
    summary: pd.DataFrame
    threshold: float
    stratified: bool

    def write(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        """Write ``heldout_pairs.csv`` and ``heldout.csv``."""
        out = Path(out_dir)
        return {
            "heldout_pairs": write_csv_atomic(out / RunFiles.HELDOUT_PAIRS, self.pairs, index=False),
            "heldout": write_csv_atomic(out / RunFiles.HELDOUT, self.summary, index=False),
        }


def split_cases(manifest: pd.DataFrame, train_cohort: str) -> tuple[list[str], pd.Series]:
    """The cases an explanation is computed on and the held-out sets that re-measure it.

    ``manifest`` is indexed by case id with ``split`` and ``cohort`` columns (a cohort's ``frame()``).
    Returns the training cases (split train or val of ``train_cohort``) and, for every other case, its
    held-out set: ``<train_cohort>_test`` for the training cohort's test split, the cohort's name otherwise.

    Examples
    --------
    >>> m = pd.DataFrame({"split": ["train", "val", "test", "test"], "cohort": ["in", "in", "in", "ext"]},
    ...                  index=["a", "b", "c", "d"])
    >>> train, held = split_cases(m, "in")
    >>> train, held.to_dict()
    (['a', 'b'], {'c': 'in_test', 'd': 'ext'})
    """
    missing = [c for c in ("split", "cohort") if c not in manifest.columns]
    if missing:
        raise Rad4XCNNError(
            f"the manifest has no column {name_list(missing)}: needed to find the training cases"
        )
    cohort = manifest["cohort"].astype(str)
    split = manifest["split"].fillna("").astype(str).str.strip().str.lower()
    in_cohort = cohort == str(train_cohort)
    training = in_cohort & split.isin(["train", "val"])
    if not training.any():
        raise Rad4XCNNError(
            f"no case of the training cohort {train_cohort!r} has split train or val: "
            "explain.cases train has nothing to explain on (use explain.cases: all)"
        )
    held = pd.Series(np.where(in_cohort, f"{train_cohort}_test", cohort), index=manifest.index.map(str))
    held = held[~training.to_numpy()]
    return [str(c) for c in manifest.index[training.to_numpy()]], held


def remeasure(
    explanation,
    deep_df: pd.DataFrame,
    radiomic_df: pd.DataFrame,
    sets: pd.Series | Mapping[str, str],
    *,
    strata: pd.Series | None = None,
    backend: str,
    min_stratum: int = MIN_STRATUM,
) -> HeldOut:
    """Re-measure an explanation's explained pairs on each held-out set of cases.

    Parameters
    ----------
    explanation
        An :class:`~Rad4XCNNLogic.explain.explanation.Explanation` (computed on training cases).
    deep_df, radiomic_df
        The full tables; only the cases of ``sets`` are read.
    sets
        Case id -> held-out set name (``test``, ``external``, ...). A case used by the explanation may not
        be in a held-out set (a one-line error names it).
    strata
        Case id -> stratum; given when the explanation is stratified, so that held-out rho is within strata
        as well (strata of fewer than ``min_stratum`` held-out cases are left out, as in the explanation). A
        set where no stratum has that many cases gets NaN, and a warning.

    Examples
    --------
    >>> cohorts = manifest.set_index("case_id")["cohort"]  # doctest: +SKIP
    >>> held = remeasure(explanation, deep, rad, cohorts, backend="numpy")  # doctest: +SKIP
    """
    sets = pd.Series(sets, dtype=object).dropna().astype(str)
    sets.index = sets.index.map(str)
    overlap = sets.index.intersection(pd.Index(explanation.cases_used))
    if len(overlap):
        raise Rad4XCNNError(
            f"{len(overlap)} held-out case(s) were used by the explanation: {name_list(sorted(overlap))}"
        )
    stratified = explanation.within is not None
    if stratified and strata is None:
        raise Rad4XCNNError("the explanation is stratified: re-measuring it needs the strata of the cases")
    table = explanation.correlations
    if stratified and len(table):
        table = table[table["status"] == "explained"]
    column = "rho_within" if stratified else "rho"
    pairs = table[["deep_feature", "radiomic_feature", column]].rename(columns={column: "rho"})
    pairs = pairs.reset_index(drop=True)
    deep_used = list(dict.fromkeys(pairs["deep_feature"]))
    rad_used = list(dict.fromkeys(pairs["radiomic_feature"]))
    rows = []
    for name in dict.fromkeys(sets.tolist()):
        cases = sets.index[sets == name]
        deep = deep_df.loc[deep_df.index.map(str).isin(cases), deep_used]
        rad = radiomic_df.loc[radiomic_df.index.map(str).isin(cases), rad_used]
        rho = np.full(len(pairs), np.nan)
        n_cases = 0
        if len(pairs):
            try:
                if stratified:
                    result = spearman_within(deep, rad, strata, backend=backend, min_stratum=min_stratum)
                else:
                    result = spearman(deep, rad, backend=backend)
                n_cases = result.n_cases
                d_pos = {d: i for i, d in enumerate(deep.columns)}
                r_pos = {r: j for j, r in enumerate(rad.columns)}
                rows_i = pairs["deep_feature"].map(d_pos).to_numpy()
                cols_j = pairs["radiomic_feature"].map(r_pos).to_numpy()
                rho = result.rho[rows_i, cols_j]
            except Rad4XCNNError as exc:
                log.warning("held-out set %s: no rho (%s)", name, exc)
        pairs[f"rho_heldout_{name}"] = rho
        with np.errstate(invalid="ignore"):
            same = (np.sign(rho) == np.sign(pairs["rho"].to_numpy())) & (
                np.abs(rho) >= explanation.threshold - 1e-12
            )
        pairs[f"replicated_{name}"] = same
        measured = int(np.isfinite(rho).sum())
        rows.append(
            {
                "set": name,
                "n_cases": n_cases,
                "n_pairs": len(pairs),
                "n_measured": measured,
                "n_replicated": int(same.sum()),
                "fraction_replicated": float(same.sum() / measured) if measured else float("nan"),
                "median_abs_rho": float(np.nanmedian(np.abs(rho))) if measured else float("nan"),
            }
        )
    return HeldOut(pairs, pd.DataFrame(rows), float(explanation.threshold), stratified)


def coverage_against_control(coverage: pd.DataFrame, controls: Mapping[str, str]) -> pd.DataFrame:
    """Each trained backbone's coverage beside its random-weights control's, at every M.

    ``coverage`` is an explanation's coverage table (model, M, n_explained, fraction, and with strata
    fraction_pooled); ``controls`` maps a backbone to its control's model name (``resnet18`` ->
    ``resnet18-random``). ``gain`` is the backbone's fraction minus the control's: what training added
    beyond the architecture (a random network's features already co-vary with intensity and size).

    Examples
    --------
    >>> cov = pd.DataFrame({"model": ["a", "a-random"], "M": [0.6, 0.6], "n_explained": [8, 3],
    ...                     "fraction": [0.8, 0.3]})
    >>> coverage_against_control(cov, {"a": "a-random"})[["model", "control", "gain"]]
      model   control  gain
    0     a  a-random   0.5
    """
    missing = [c for c in list(controls) + list(controls.values()) if c not in set(coverage["model"])]
    if missing:
        raise Rad4XCNNError(
            f"no coverage for model(s) {name_list(missing)} (have {name_list(coverage['model'].unique())})"
        )
    keep = [c for c in ("M", "n_explained", "fraction", "fraction_pooled") if c in coverage.columns]
    frames = []
    for model, control in controls.items():
        mine = coverage.loc[coverage["model"] == model, keep]
        theirs = coverage.loc[coverage["model"] == control, keep]
        merged = mine.merge(theirs, on="M", suffixes=("", "_control"))
        merged.insert(0, "control", control)
        merged.insert(0, "model", model)
        merged["gain"] = merged["fraction"] - merged["fraction_control"]
        frames.append(merged)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
