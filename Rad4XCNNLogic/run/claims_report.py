"""The report's statements about what the explanation's counts claim: the verdict of each backbone against its
random-weights control (shown first), which error each count controls, warnings (M below the permutation
threshold, test cases among those explained), the one denominator of the fractions, and the attenuated and
reversed pairs. Tables come back as DataFrames, which the report escapes cell by cell.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from Rad4XCNNLogic.run.results import read_optional_csv

PAIR_COLUMNS = {
    "deep_feature": "deep feature",
    "radiomic_feature": "radiomic feature",
    "rho": "rho pooled",
    "rho_within": "rho within strata",
    "q_within": "q within",
    "rho_stratum_min": "smallest rho in a stratum",
    "rho_stratum_max": "largest rho in a stratum",
    "p_heterogeneity": "p (strata agree)",
}


def _pairs(pairs, status: str, order: str):
    chosen = pairs[pairs["status"] == status]
    chosen = chosen.reindex(chosen[order].abs().sort_values(ascending=False, kind="stable").index)
    return chosen[[c for c in PAIR_COLUMNS if c in chosen.columns]].rename(columns=PAIR_COLUMNS)


def claims_section(out: Path) -> dict[str, Any]:
    """Context for the report's template from ``explanation.json``, ``correlations.csv`` and
    ``coverage.csv`` of the run folder ``out`` (empty when the explanation stage wrote nothing)."""
    path = out / "explanation.json"
    if not path.is_file():
        return {}
    summary = json.loads(path.read_text(encoding="utf-8"))
    settings = summary.get("settings", {})
    m = settings.get("threshold", 0.6)
    result: dict[str, Any] = {}
    verdicts = summary.get("control_verdicts") or []
    result["control_verdicts"] = [{"text": v["text"], "specific": bool(v["specific"])} for v in verdicts]
    errors = summary.get("error_control") or {}
    result["error_notes"] = [f"{key} = {summary.get(key)}: {text}" for key, text in errors.items()]
    below = summary.get("M_below_permutation_threshold") or []
    if below:
        thresholds = summary.get("permutation_thresholds") or {}
        where = ", ".join(f"{model} ({thresholds.get(model, float('nan')):.3f})" for model in below)
        result["fwer_warning"] = (
            f"M = {m:g} is not above the max-|rho| permutation threshold of {where}: pairs between M and the "
            f"threshold may be chance, and so may the deep features they explain; "
            f"{summary.get('n_explained_fwer')} deep feature(s) are explained above the threshold."
        )
    if summary.get("test_cases_warning"):
        result["test_cases_warning"] = summary["test_cases_warning"]
    coverage = read_optional_csv(out / "coverage.csv")
    if coverage is not None and "n_constant" in coverage.columns and len(coverage):
        per_model = coverage.groupby("model", sort=False)["n_constant"].first()
        counted = ", ".join(f"{model} {int(n)}" for model, n in per_model.items())
        result["denominator_note"] = (
            "Every fraction explained in this section is over the deep features that vary across the cases: "
            f"constant ones (dead units) cannot be explained and are left out and counted apart ({counted})."
        )
    pairs = read_optional_csv(out / "correlations.csv")
    if pairs is not None and "status" in pairs.columns:
        attenuated = _pairs(pairs, "attenuated", "rho")
        reversed_ = _pairs(pairs, "reversed", "rho_within")
        if "smallest rho in a stratum" in reversed_.columns and len(reversed_):
            spread = reversed_["largest rho in a stratum"] - reversed_["smallest rho in a stratum"]
            reversed_ = reversed_.loc[spread.sort_values(ascending=False, kind="stable").index]
        result.update(
            n_attenuated_pairs=len(attenuated),
            attenuated_frame=attenuated,
            n_reversed_pairs=len(reversed_),
            reversed_frame=reversed_,
        )
    return result
