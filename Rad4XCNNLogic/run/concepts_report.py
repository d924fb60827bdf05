"""The report's "Where concepts live" section, from the probe command's files in the run folder: selectivity
by layer and radiomic family (a heatmap), linear CKA by layer against the radiomic table and the control,
and the radiomic concepts the classifier is sensitive to (``probes.csv``, ``cka.csv``, ``concepts.csv``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from Rad4XCNNLogic.names import RunFiles, parse_radiomic_name
from Rad4XCNNLogic.run.results import read_optional_csv

log = logging.getLogger(__name__)


def by_layer_and_family(probes):
    """Median selectivity (R² where no control was probed) per ``<model>.<layer>`` (rows, in the table's
    order) and radiomic feature class (columns); returns ``(table, what)`` with ``what`` the measure's name.

    Examples
    --------
    >>> import pandas as pd
    >>> probes = pd.DataFrame({"model": ["r"] * 3, "layer": ["l2", "l2", "l4"],
    ...     "radiomic_feature": ["original_glcm_Contrast", "original_glcm_Idm", "original_glcm_Idm"],
    ...     "r2": [0.5, 0.1, 0.6], "selectivity": [0.4, 0.0, 0.5]})
    >>> by_layer_and_family(probes)[0].to_dict()
    {'glcm': {'r.l2': 0.2, 'r.l4': 0.5}}
    """
    what = "selectivity" if probes["selectivity"].notna().any() else "r2"
    frame = probes.assign(
        where=probes["model"] + "." + probes["layer"],
        family=probes["radiomic_feature"].map(lambda n: parse_radiomic_name(n).feature_class or "other"),
    )
    table = frame.pivot_table(index="where", columns="family", values=what, aggfunc="median", sort=False)
    table.index.name, table.columns.name = None, None
    return table, what


def selectivity_figure(table, what: str):
    """A heatmap of :func:`by_layer_and_family`'s table, diverging around 0 (a matplotlib figure)."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * table.shape[1], 1.2 + 0.45 * table.shape[0]))
    values = table.to_numpy(dtype=float)
    limit = max(float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 0.0, 0.05)
    image = ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(table.shape[1]), table.columns, rotation=45, ha="right")
    ax.set_yticks(range(table.shape[0]), table.index)
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, label=f"median {what}")
    fig.tight_layout()
    return fig


@dataclass
class ConceptsSection:
    """What the report shows of the probes: the heatmap figure and its measure, the CKA rows against the
    radiomics and the control, and the concept sensitivity table (each None when its file is absent)."""

    figure: Any = None
    measure: str | None = None
    cka: Any = None
    sensitivity: Any = None
    #: the most selective concept, as chosen (training folds' CV) and measured (held out), in words
    chosen: str | None = None


def chosen_concept(probes) -> str | None:
    """One sentence: the most selective concept by the training folds' cross-validated selectivity, the
    number of targets x layers it was chosen among, and its held-out selectivity with the paired interval;
    None for a ``probes.csv`` without the CV columns or without a control.

    Examples
    --------
    >>> import pandas as pd
    >>> probes = pd.DataFrame({"model": ["r", "r"], "layer": ["l4", "l4"], "radiomic_feature": ["a", "b"],
    ...     "r2": [0.5, 0.2], "r2_control": [0.1, 0.1], "selectivity": [0.4, 0.1],
    ...     "selectivity_ci_low": [0.3, 0.0], "selectivity_ci_high": [0.5, 0.2],
    ...     "cv_selectivity": [0.35, 0.05]})
    >>> text = chosen_concept(probes)
    >>> "among 2 radiomic features x layers searched: a in r.l4" in text, "+0.40 (95% interval +0.30" in text
    (True, True)
    """
    if "cv_selectivity" not in probes or not probes["cv_selectivity"].notna().any():
        return None
    from Rad4XCNNLogic.explain.probes import rank_concepts

    row = rank_concepts(probes).iloc[0]
    return (
        f"Most selective by the training folds' cross-validated error, among {len(probes)} radiomic "
        f"features x layers searched: {row['radiomic_feature']} in {row['model']}.{row['layer']}, held-out "
        f"selectivity {row['selectivity']:+.2f} (95% interval {row['selectivity_ci_low']:+.2f} to "
        f"{row['selectivity_ci_high']:+.2f})."
    )


def concepts_section(out: Path) -> ConceptsSection:
    """The section's content from the run folder ``out`` (empty when it holds no probes)."""
    out = Path(out)
    section = ConceptsSection()
    probes = read_optional_csv(out / RunFiles.PROBES)
    if probes is not None and len(probes):
        table, section.measure = by_layer_and_family(probes)
        section.figure = selectivity_figure(table, section.measure)
        section.chosen = chosen_concept(probes)
    cka = read_optional_csv(out / RunFiles.CKA, keep_default_na=False, na_values=[""])
    if cka is not None and len(cka):
        columns = ["kind", "model_a", "layer_a", "model_b", "layer_b", "cka", "null_mean", "p"]
        section.cka = cka.loc[cka["kind"].isin(["radiomics", "control"]), columns]
    concepts = read_optional_csv(out / RunFiles.CONCEPTS)
    if concepts is not None and len(concepts):
        section.sensitivity = concepts
    return section
