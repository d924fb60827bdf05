"""A finished run folder read back: its tables, its stored correlations, and one case against the cohort.

The 3D Slicer module shows these; a new M is applied to the stored rho matrix without recomputing
(:meth:`RunResults.with_threshold`). A case's radiomic values are set against the cohort's distribution for
the radiomic features that explain the classifier's most important deep features (:func:`case_comparison`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from Rad4XCNNLogic.errors import Rad4XCNNError

log = logging.getLogger(__name__)

#: Files written by the correlation stage that let a new M be applied without recomputing.
EXPLANATION_MARKER = "correlation.json"


def find_explanation_folder(folder: str | os.PathLike) -> Path | None:
    """The folder holding the stored correlation matrices: the run folder itself or one below it."""
    folder = Path(folder)
    if (folder / EXPLANATION_MARKER).is_file():
        return folder
    for depth in ("*", "*/*"):
        found = sorted(p.parent for p in folder.glob(f"{depth}/{EXPLANATION_MARKER}"))
        if found:
            return found[0]
    return None


def read_optional_csv(path: Path, **kwargs) -> pd.DataFrame | None:
    """A run-folder table that may be missing or unreadable: None then (logged), so that a report or view
    shows what the run has."""
    if not Path(path).is_file():
        return None
    try:
        return pd.read_csv(path, **kwargs)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        log.warning("cannot read %s: %s", Path(path).name, exc)
        return None


def _read_table(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path, index_col=0)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise Rad4XCNNError(f"cannot read {path}: {exc}") from None


@dataclass(frozen=True)
class RunResults:
    """The results of one run folder (any of them may be missing) at one threshold M."""

    folder: Path
    explanation: object | None = None
    radiomics: pd.DataFrame | None = None
    classification: pd.DataFrame | None = None
    importances: pd.DataFrame | None = None

    @classmethod
    def load(cls, folder: str | os.PathLike, threshold: float | None = None) -> RunResults:
        """Read a run folder (docs/ARCHITECTURE.md); ``threshold`` None keeps the run's own M.

        Examples
        --------
        >>> results = RunResults.load("runs/busi", threshold=0.7)  # doctest: +SKIP
        >>> results.summary()  # doctest: +SKIP
        'resnet50: 1187 of 2031 varying deep features explained at M = 0.70 (58%), 17 constant'
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise Rad4XCNNError(f"run folder not found: {folder}")
        explanation = None
        where = find_explanation_folder(folder)
        if where is not None:
            from Rad4XCNNLogic.explain.explanation import load_explanation

            explanation = load_explanation(where, threshold=threshold)
        importances_path = folder / "importances.csv"
        importances = pd.read_csv(importances_path) if importances_path.is_file() else None
        results = cls(
            folder,
            explanation,
            _read_table(folder / "radiomics.csv"),
            _read_table(folder / "classification.csv"),
            importances,
        )
        if explanation is None and results.radiomics is None and results.classification is None:
            raise Rad4XCNNError(
                f"no Rad4XCNN results in {folder}: run the cohort first, or choose its run folder"
            )
        return results

    # --------------------------------------------------------------------------------------- threshold
    @property
    def threshold(self) -> float | None:
        return None if self.explanation is None else float(self.explanation.threshold)

    def with_threshold(self, threshold: float) -> RunResults:
        """The same results at another M, from the stored matrices (nothing is recomputed)."""
        if self.explanation is None:
            raise Rad4XCNNError(f"{self.folder} holds no correlations to apply M to")
        if self.threshold is not None and abs(self.threshold - float(threshold)) < 1e-12:
            return self
        return replace(self, explanation=self.explanation.with_threshold(float(threshold)))

    def _need_explanation(self):
        if self.explanation is None:
            raise Rad4XCNNError(f"{self.folder} holds no correlations (correlation.json, rho.npy)")
        return self.explanation

    # ------------------------------------------------------------------------------------------ tables
    @property
    def explanations(self) -> pd.DataFrame:
        """One row per deep feature: whether and by which radiomic features it is explained at M."""
        return self._need_explanation().explanations

    @property
    def correlations(self) -> pd.DataFrame:
        """One row per kept (deep, radiomic) pair at M, strongest first."""
        pairs = self._need_explanation().correlations
        if len(pairs) and "rho" in pairs:
            pairs = pairs.reindex(pairs["rho"].abs().sort_values(ascending=False, kind="stable").index)
        return pairs

    @property
    def rho(self) -> np.ndarray:
        """The full deep x radiomic rho matrix."""
        return self._need_explanation().correlation.rho

    def coverage(self) -> pd.DataFrame:
        """Fraction of deep features explained, indexed by M, one column per model (for the plot)."""
        long = self._need_explanation().coverage
        wide = long.pivot_table(index="M", columns="model", values="fraction", sort=False)
        wide.columns.name = None
        return wide.sort_index()

    def ranked_deep_features(self, top: int | None = None) -> pd.DataFrame:
        """Explanations of the deep features the classifier relies on most, most important first.

        Uses ``importances.csv`` of the classification stage; without it, deep features are ordered by
        their strongest |rho| (and the ``importance`` column is empty).
        """
        explanation = self._need_explanation()
        if self.importances is not None and len(self.importances):
            from Rad4XCNNLogic.explain.explanation import rank_by_importance

            importances = self.importances
            if "feature_set" in importances and (importances["feature_set"] == "deep").any():
                importances = importances[importances["feature_set"] == "deep"]
            table = rank_by_importance(explanation, importances)
        else:
            table = explanation.explanations.copy()
            strength = (
                table["strongest_rho"].abs() if "strongest_rho" in table else pd.Series(0.0, table.index)
            )
            table = table.reindex(strength.sort_values(ascending=False, kind="stable").index)
            table.insert(0, "importance", np.nan)
            table.insert(1, "importance_rank", np.arange(1, len(table) + 1))
        return table if top is None else table.head(int(top))

    def explaining_pairs(self, deep_features) -> pd.DataFrame:
        """The kept (deep, radiomic) pairs of the given deep features, in their order, strongest first."""
        pairs = self._need_explanation().correlations
        order = {name: i for i, name in enumerate(deep_features)}
        chosen = pairs[pairs["deep_feature"].isin(order)].copy()
        chosen["_order"] = chosen["deep_feature"].map(order)
        chosen["_strength"] = -chosen["rho"].abs()
        return chosen.sort_values(["_order", "_strength"], kind="stable").drop(
            columns=["_order", "_strength"]
        )

    # ----------------------------------------------------------------------------------------- summary
    def summary(self) -> str:
        """One line per model: how many deep features are explained at M."""
        if self.explanation is None:
            parts = []
            if self.radiomics is not None:
                parts.append(f"{len(self.radiomics)} cases with radiomic features")
            if self.classification is not None:
                parts.append("classification results")
            return f"{self.folder.name}: " + ", ".join(parts) + " (no correlations yet)"
        table = self.explanation.explanations
        lines = []
        for model, rows in table.groupby("model", sort=False):
            explained = int((rows["status"] == "explained").sum())
            constant = int((rows["status"] == "zero variance").sum())
            varying = len(rows) - constant
            share = f" ({explained / varying:.0%})" if varying else ""
            line = f"{model}: {explained} of {varying} varying deep features explained"
            line += f" at M = {self.threshold:.2f}"
            lines.append(line + share + (f", {constant} constant" if constant else ""))
        return "; ".join(lines)


def case_radiomics_params(run: str | os.PathLike | None, fallback: str, out: str | os.PathLike) -> str:
    """The radiomics parameters for one case compared with the cohort of ``run``: the very parameter file
    recorded by the run (``radiomics_settings.json``), copied to ``out``; ``fallback`` when there is none.

    Values computed with other settings (bin count, filters) would not compare with the cohort's.
    """
    import json

    settings_file = Path(run) / "radiomics_settings.json" if run else None
    if settings_file is None or not settings_file.is_file():
        if run:
            log.warning("%s records no radiomics settings; using %s", run, fallback)
        return fallback
    try:
        recorded = json.loads(settings_file.read_text(encoding="utf-8"))
        text = recorded["params_yaml"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise Rad4XCNNError(
            f"cannot read the radiomics settings of the run: {settings_file}: {exc}"
        ) from None
    from Rad4XCNNLogic.infra.storage import write_text_atomic

    path = Path(out) / f"radiomics_params_{Path(str(recorded.get('params') or 'run')).stem}.yaml"
    write_text_atomic(path, text)
    return str(path)


def case_comparison(case_values: pd.Series, cohort: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """Set one case's radiomic values against the cohort's, for the radiomic features of ``pairs``.

    ``case_values`` is the case's row of radiomic features; ``cohort`` is cases x radiomic features
    (``radiomics.csv``); ``pairs`` has the columns deep_feature, radiomic_feature, rho (e.g. from
    :meth:`RunResults.explaining_pairs`). Returns one row per pair with the case's value, the cohort's median
    and quartiles, the case's percentile (mid-rank: 50 for the median) and its z-score.

    Examples
    --------
    >>> cohort = pd.DataFrame({"original_firstorder_Mean": [10.0, 20.0, 30.0, 40.0]})
    >>> pairs = pd.DataFrame({"deep_feature": ["cnn_1"], "radiomic_feature": ["original_firstorder_Mean"],
    ...                       "rho": [0.8]})
    >>> row = case_comparison(pd.Series({"original_firstorder_Mean": 35.0}), cohort, pairs).iloc[0]
    >>> float(row["percentile"]), float(row["cohort_median"])
    (75.0, 25.0)
    """
    rows = []
    for pair in pairs.itertuples(index=False):
        name = pair.radiomic_feature
        value = float(case_values.get(name, np.nan))
        values = cohort[name].dropna().to_numpy(dtype=float) if name in cohort else np.array([])
        row = {
            "deep_feature": pair.deep_feature,
            "radiomic_feature": name,
            "rho": float(pair.rho),
            "meaning": getattr(pair, "meaning", "") or "",
            "case_value": value,
            "cohort_median": np.nan,
            "cohort_q1": np.nan,
            "cohort_q3": np.nan,
            "percentile": np.nan,
            "z": np.nan,
        }
        if len(values) and np.isfinite(value):
            q1, median, q3 = np.percentile(values, [25, 50, 75])
            below, equal = float((values < value).sum()), float((values == value).sum())
            sd = values.std(ddof=1) if len(values) > 1 else 0.0
            row.update(
                cohort_median=median,
                cohort_q1=q1,
                cohort_q3=q3,
                percentile=100.0 * (below + 0.5 * equal) / len(values),
                z=(value - values.mean()) / sd if sd > 0 else np.nan,
            )
        rows.append(row)
    columns = [
        "deep_feature",
        "radiomic_feature",
        "rho",
        "meaning",
        "case_value",
        "cohort_median",
        "cohort_q1",
        "cohort_q3",
        "percentile",
        "z",
    ]
    return pd.DataFrame(rows, columns=columns)


def features_from_run(run: str | os.PathLike, top: int) -> tuple[list[str], pd.DataFrame]:
    """The radiomic features that explain a run's ``top`` most important deep features.

    Reads the run folder's explanations (the stored correlations at the run's M) and the classifier's
    importances (``importances.csv``; without it deep features are ranked by their strongest |rho|, see
    :meth:`~Rad4XCNNLogic.run.results.RunResults.ranked_deep_features`). Returns the radiomic feature names,
    in order of first appearance, and the pairs used (deep_feature, radiomic_feature, rho).
    """
    if int(top) < 1:
        raise Rad4XCNNError(f"--top must be at least 1, got {top}")
    results = RunResults.load(run)
    if results.explanation is None:
        raise Rad4XCNNError(f"run folder {run} holds no explanation (correlations) to pick features from")
    deep = list(results.ranked_deep_features(top=int(top)).index)
    pairs = results.explaining_pairs(deep)
    names = list(dict.fromkeys(pairs["radiomic_feature"].astype(str))) if len(pairs) else []
    if not names:
        raise Rad4XCNNError(
            f"none of the {len(deep)} most important deep features of {run} is explained by a radiomic "
            f"feature at M = {results.threshold}"
        )
    columns = [c for c in ("deep_feature", "radiomic_feature", "rho") if c in pairs.columns]
    return names, pairs[columns].reset_index(drop=True)
