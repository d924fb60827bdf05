"""The run's HTML report: one self-contained file (figures inline) that a clinician can read.

It is built from the files of the run folder alone, so it can be re-made from any finished or partly finished
run. Every string from the data (case ids, labels, feature names, error messages) is HTML-escaped: the
template is rendered by Jinja2 with autoescaping, and tables are built here cell by cell with escaping.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from Rad4XCNNLogic import __version__
from Rad4XCNNLogic.explain.settings import rule_text
from Rad4XCNNLogic.run.claims_report import claims_section
from Rad4XCNNLogic.run.concepts_report import concepts_section
from Rad4XCNNLogic.run.results import read_optional_csv

log = logging.getLogger(__name__)

TEMPLATE = "report.html.j2"


# -------------------------------------------------------------------------------------------- tables
def html_table(
    frame,
    formats: Mapping[str, Callable[[Any], str]] | None = None,
    index: bool = False,
    max_rows: int | None = None,
):
    """An HTML table of a DataFrame with every header and cell escaped; numbers right-aligned."""
    import pandas as pd
    from markupsafe import Markup, escape

    if frame is None or len(frame) == 0:
        return Markup("")
    if index:
        frame = frame.reset_index()
    if max_rows is not None:
        frame = frame.head(max_rows)
    formats = dict(formats or {})
    head = "".join(f"<th>{escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for _, row in frame.iterrows():
        cells = []
        for col in frame.columns:
            value = row[col]
            numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
            if col in formats:
                text = formats[col](value)
            elif value is None or (numeric and pd.isna(value)):
                text = ""
            elif isinstance(value, (float, np.floating)):
                text = f"{value:.3g}"
            else:
                text = str(value)
            cls = ' class="num"' if numeric else ""
            cells.append(f"<td{cls}>{escape(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return Markup(f"<table><tr>{head}</tr>{''.join(rows)}</table>")


def _with_ci(frame, metric: str) -> list[str]:
    low, high = f"{metric}_ci_low", f"{metric}_ci_high"
    out = []
    for _, row in frame.iterrows():
        value = row.get(metric)
        if value is None or not np.isfinite(value):
            out.append("")
        elif low in row and np.isfinite(row[low]) and np.isfinite(row[high]):
            out.append(f"{value:.3f} ({row[low]:.2f}–{row[high]:.2f})")
        else:
            out.append(f"{value:.3f}")
    return out


# ------------------------------------------------------------------------------------------- figures
def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def coverage_figure(coverage) -> str:
    """Fraction explained versus M, one line per backbone (base64 PNG)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    for model, group in coverage.groupby("model", sort=False):
        ax.plot(group["M"], group["fraction"], marker="o", label=str(model))
    ax.set_xlabel("M (smallest |rho| that explains)")
    ax.set_ylabel("fraction of deep features explained")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(title="backbone", fontsize=8)
    return _png(fig)


def select_heatmap(rho, deep_names: Sequence[str], radiomic_names: Sequence[str], n: int):
    """The ``n`` deep and ``n`` radiomic features with the strongest |rho|, ordered by clustering."""
    from scipy.cluster.hierarchy import leaves_list, linkage

    abs_rho = np.nan_to_num(np.abs(rho), nan=0.0)
    rows = np.argsort(-abs_rho.max(axis=1), kind="stable")[:n]
    cols = np.argsort(-abs_rho[rows].max(axis=0), kind="stable")[:n]
    block = np.nan_to_num(rho[np.ix_(rows, cols)], nan=0.0)

    def order(matrix):
        if matrix.shape[0] < 3:
            return np.arange(matrix.shape[0])
        return leaves_list(linkage(matrix, method="average", metric="euclidean"))

    r_order, c_order = order(block), order(block.T)
    return (
        block[np.ix_(r_order, c_order)],
        [deep_names[i] for i in rows[r_order]],
        [radiomic_names[j] for j in cols[c_order]],
    )


def heatmap_figure(block, deep_labels: Sequence[str], radiomic_labels: Sequence[str]) -> str:
    plt = _pyplot()
    height = max(3.0, 0.18 * len(deep_labels) + 2.2)
    width = max(5.0, 0.2 * len(radiomic_labels) + 3.0)
    fig, ax = plt.subplots(figsize=(width, height))
    image = ax.imshow(block, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
    ax.set_yticks(range(len(deep_labels)), deep_labels, fontsize=6)
    ax.set_xticks(range(len(radiomic_labels)), radiomic_labels, fontsize=6, rotation=90)
    fig.colorbar(image, ax=ax, label="Spearman rho", shrink=0.6)
    return _png(fig)


def roc_figure(roc, metrics=None) -> str:
    """ROC curves, one panel per evaluation set; with ``metrics``, one curve per feature set: its
    classifier with the best cross-validated AUC on the training data - never chosen by a test AUC, which
    would then be optimistic (all classifiers are in ``roc.csv``)."""
    from Rad4XCNNLogic.classify.comparisons import select_by_cv

    plt = _pyplot()
    if metrics is not None and len(metrics) and "cv_auc" in metrics:
        best = select_by_cv(metrics)
        keep = set(zip(best["feature_set"], best["classifier"], strict=True))
        roc = roc[[(f, c) in keep for f, c in zip(roc["feature_set"], roc["classifier"], strict=True)]]
    sets = list(dict.fromkeys(roc["evaluated_on"]))
    fig, axes = plt.subplots(1, len(sets), figsize=(3.8 * len(sets) + 2.6, 3.8), squeeze=False)
    for ax, where in zip(axes[0], sets, strict=True):
        part = roc[roc["evaluated_on"] == where]
        for (fs, clf), curve in part.groupby(["feature_set", "classifier"], sort=False):
            if "class" in curve and curve["class"].nunique() > 1:
                curve = curve[curve["class"] == curve["class"].iloc[0]]
            ax.plot(curve["fpr"], curve["tpr"], lw=1.3, label=f"{fs} / {clf}")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.set_title(str(where), fontsize=10)
        ax.set_xlabel("1 - specificity")
        ax.set_ylabel("sensitivity")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return _png(fig)


def training_figure(history) -> str:
    """Training loss and validation AUC per epoch, one panel per fine-tuned backbone (base64 PNG)."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    groups = list(history.groupby("model", sort=False)) if "model" in history else [("", history)]
    fig, axes = plt.subplots(1, len(groups), figsize=(5.0 * len(groups), 3.2), squeeze=False)
    for ax, (name, part) in zip(axes[0], groups, strict=True):
        epochs = np.arange(1, len(part) + 1)
        ax.plot(epochs, part["train_loss"], color="tab:blue", marker=".", label="training loss")
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss", color="tab:blue")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(str(name), fontsize=10)
        twin = ax.twinx()
        twin.plot(epochs, part["val_auc"], color="tab:red", marker=".", label="validation AUC")
        twin.set_ylabel("validation AUC", color="tab:red")
        twin.set_ylim(0, 1.02)
    fig.tight_layout()
    return _png(fig)


# ------------------------------------------------------------------------------------------ sections
#: The paper's claims that the paired comparisons measure: (pair kind, what the paper states).
CLAIMS = (
    ("cnn-vs-vit", "CNN-derived deep features classify better than ViT-derived ones"),
    ("deep-vs-radiomic", "deep features classify better than radiomic features"),
    ("explained-vs-deep", "keeping only the explained deep features costs no accuracy"),
)


def _pair_kinds(comparisons) -> list[str]:
    if "family" in comparisons:  # written since the comparisons are adjusted per family
        return [str(f) for f in comparisons["family"]]
    from Rad4XCNNLogic.classify.comparisons import comparison_pairs

    names = list(dict.fromkeys([*comparisons["set_a"], *comparisons["set_b"]]))
    kinds = {(p.set_a, p.set_b): p.kind for p in comparison_pairs(names)}
    pairs = zip(comparisons["set_a"], comparisons["set_b"], strict=True)
    return [kinds.get(pair, "other") for pair in pairs]


def _judged_interval(comparisons) -> tuple[str, str, str]:
    """(low column, high column, words): the simultaneous band where ``comparisons.csv`` has it, else the
    per-comparison interval of an older table."""
    if "sim_ci_low" in comparisons and comparisons["sim_ci_low"].notna().any():
        return "sim_ci_low", "sim_ci_high", "simultaneous 95% band"
    return "ci_low", "ci_high", "95% interval"


def forest_figure(comparisons) -> str:
    """Forest plot of ``comparisons.csv``: each difference of AUC (set a - set b) with its paired 95%
    bootstrap interval (thick) and its family's simultaneous band (thin, which sets the colour), one row per
    pair and classifier, one panel per evaluation set."""
    plt = _pyplot()
    low_col, high_col, words = _judged_interval(comparisons)
    where = list(dict.fromkeys(comparisons["evaluated_on"]))
    most = int(comparisons.groupby("evaluated_on").size().max())
    fig, axes = plt.subplots(len(where), 1, figsize=(7.5, len(where) * (0.9 + 0.26 * most)), squeeze=False)
    for ax, name in zip(axes[:, 0], where, strict=True):
        part = comparisons[comparisons["evaluated_on"] == name]
        y = np.arange(len(part))[::-1]
        delta = part["delta_auc"].to_numpy(dtype=float)
        low = part[low_col].to_numpy(dtype=float)
        high = part[high_col].to_numpy(dtype=float)
        colour = np.where(low > 0, "tab:blue", np.where(high < 0, "tab:red", "grey")).tolist()
        for k in range(len(part)):
            ax.plot([low[k], high[k]], [y[k], y[k]], color=colour[k], lw=0.9)
            ax.plot([part["ci_low"].iloc[k], part["ci_high"].iloc[k]], [y[k], y[k]], color=colour[k], lw=2.4)
        ax.scatter(delta, y, c=colour, s=18, zorder=3)
        ax.axvline(0, color="black", lw=0.8, ls="--")
        labels = [f"{r.set_a} - {r.set_b} ({r.classifier})" for r in part.itertuples()]
        ax.set_yticks(y, labels, fontsize=7)
        ax.set_title(str(name), fontsize=10)
    axes[-1, 0].set_xlabel(f"difference of AUC: 95% interval (thick), {words} (thin)")
    fig.tight_layout()
    return _png(fig)


def claims_as_measured(comparisons) -> list[str]:
    """The paper's claims (:data:`CLAIMS`) as measured by the paired comparisons: first the number of
    comparisons and families, then one sentence per claim and evaluation set, counting the comparisons whose
    family-adjusted interval - the simultaneous band of ``comparisons.csv`` - lies above 0, below 0, or
    across it (no difference shown - which is not a proof of equivalence), and those with Holm p < 0.05.
    Comparisons a user named, or every pair, are counted as claims of their own."""
    if comparisons is None or not len(comparisons):
        return []
    kinds = _pair_kinds(comparisons)
    table = comparisons.assign(kind=kinds)
    low_col, high_col, words = _judged_interval(table)
    families = table.groupby(["kind", "evaluated_on"]).ngroups
    lines = [
        f"{len(table)} paired comparison(s) in {families} famil(ies) of claim x evaluation set; each claim "
        f"is judged on its family's {words}"
        + (" and Holm-adjusted DeLong p" if "p_holm" in table else "")
        + ", not on the comparisons one by one."
    ]
    claims = list(CLAIMS) + [(k, _OTHER_CLAIMS[k]) for k in _OTHER_CLAIMS if k in set(kinds)]
    for kind, claim in claims:
        part = table[table["kind"] == kind]
        if part.empty:
            lines.append(f"{claim}: not measured (no such pair of feature sets in this run).")
            continue
        for name, rows in part.groupby("evaluated_on", sort=False):
            above = int((rows[low_col] > 0).sum())
            below = int((rows[high_col] < 0).sum())
            n = len(rows)
            holm_text = ""
            if "p_holm" in rows and rows["p_holm"].notna().any():
                holm_text = f"; Holm p < 0.05 in {int((rows['p_holm'] < 0.05).sum())}"
            lines.append(
                f"{claim} - on {name}: {n} comparison(s) ({', '.join(sorted(set(rows['classifier'])))}); "
                f"difference of AUC from {rows['delta_auc'].min():+.3f} to {rows['delta_auc'].max():+.3f}; "
                f"{words} above 0 in {above}, below 0 in {below}, across 0 in {n - above - below}{holm_text}."
            )
    return lines


#: Families of comparisons that are no claim of the paper, reported after them.
_OTHER_CLAIMS = {
    "named": "the pairs named in classification.compare differ",
    "all-pairs": "the feature sets differ (every pair compared)",
    "combined-vs-deep": "adding radiomic features to the deep features changes the AUC",
    "trained-vs-control": "the trained network's features classify better than its control's",
}


def _cohort_section(out: Path) -> dict:
    import pandas as pd

    frame = read_optional_csv(out / "cohort.csv", dtype=str, keep_default_na=False)
    if frame is None:
        return {"cohort_table": None, "cohort_note": ""}
    frame["label"] = frame["label"].replace("", "unlabelled")
    table = pd.crosstab([frame["cohort"], frame["split"]], frame["label"], margins=True, margins_name="total")
    note = f"{len(frame)} cases"
    if "has_lesion" in frame:
        n_no = int((frame["has_lesion"].str.lower() == "false").sum())
        if n_no:
            note += f"; {n_no} without a lesion (left out of lesion analyses)"
    return {"cohort_table": html_table(table, index=True), "cohort_note": note}


def _explain_section(out: Path, cfg, top: int, heat_n: int) -> dict:
    import pandas as pd

    result: dict[str, Any] = {}
    coverage = read_optional_csv(out / "coverage.csv")
    if coverage is not None and len(coverage):
        result["coverage_fig"] = coverage_figure(coverage)
    by_m = read_optional_csv(out / "explained_by_threshold.csv")
    if by_m is not None:
        columns = [
            "model",
            "threshold",
            "n_explained",
            "n_varying",
            "n_constant",
            "fraction_explained",
            "n_pairs",
        ]
        shown = by_m[[c for c in columns if c in by_m.columns]]
        result["threshold_table"] = html_table(shown, {"fraction_explained": lambda v: f"{100 * v:.1f}%"})
    summary_path = out / "explanation.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        pt = summary.get("permutation_threshold")
        if pt is not None:
            n_perm = summary.get("settings", {}).get("permutations")
            result["permutation_note"] = (
                f"Permutation test ({n_perm} shuffles of the cases): by chance alone, the largest |rho| of "
                f"all pairs exceeds {pt:.3f} in only 5% of shuffles; M = {summary.get('suggested_M')} keeps "
                "the family-wise error below 5%."
            )
    rep = read_optional_csv(out / "replicability" / "replicability.csv")
    if rep is not None:
        result["replicability_table"] = html_table(rep)
    try:
        from Rad4XCNNLogic.explain.explanation import load_explanation

        if not (out / "correlation.json").is_file():
            raise FileNotFoundError("the explanation stage wrote no correlation matrices")
        explanation = load_explanation(out)
        rho = explanation.correlation.rho
        if rho.size and np.isfinite(rho).any():
            block, rows, cols = select_heatmap(
                rho, explanation.correlation.deep_features, explanation.correlation.radiomic_features, heat_n
            )
            result["heatmap_fig"] = heatmap_figure(block, rows, cols)
            result["heatmap_n"] = len(rows)
    except FileNotFoundError:
        pass
    except Exception as exc:  # the report shows what exists; a broken matrix file is reported, not fatal
        log.warning("report: no heatmap (%s)", exc)
    ranked = read_optional_csv(out / "explanations_by_importance.csv", index_col=0)
    table = ranked if ranked is not None else read_optional_csv(out / "explanations.csv", index_col=0)
    if table is not None and len(table):
        result["ranked"] = ranked is not None
        if ranked is None:  # no classifier: the explained features with the strongest partners
            explained = table[table["status"] == "explained"]
            order = explained["strongest_rho"].abs().sort_values(ascending=False, kind="stable").index
            table = explained.loc[order]
        group = "feature_set" if "feature_set" in table else "model"
        if ranked is not None:
            table = table[table["importance"] > 0]
            if table.empty:
                result["ranked_note"] = (
                    "No single deep feature changed the classifiers' held-out performance when shuffled "
                    "(the features are redundant), so none is listed by importance."
                )
        table = table.groupby(group, sort=False).head(top)
        columns = [
            c for c in (group, "importance_rank", "importance_method", "status", "summary") if c in table
        ]
        shown = (
            table[columns]
            .reset_index()
            .rename(
                columns={
                    "feature_set": "feature set",
                    "importance_rank": "rank",
                    "importance_method": "ranked by",
                    "deep_feature": "deep feature",
                }
            )
        )
        result["explained_table"] = html_table(shown)
        partners = [p for p in table["strongest_partner"].dropna().unique() if isinstance(p, str) and p]
        if partners:
            from Rad4XCNNLogic.explain.glossary import describe_feature, image_type_label, parse_radiomic_name

            parsed = [parse_radiomic_name(p) for p in partners]
            gl = pd.DataFrame(
                {
                    "radiomic feature": partners,
                    "computed on": [image_type_label(n.image_type) for n in parsed],
                    "what it measures": [describe_feature(n.feature_class, n.feature) for n in parsed],
                }
            )
            result["glossary_table"] = html_table(gl)
    return result


def _trust_section(out: Path) -> dict:
    """What "explained" means under the rule used; pooled against stratified counts, the confounded pairs,
    each backbone beside its random-weights control, and the explanation re-measured on held-out cases."""
    summary_path = out / "explanation.json"
    if not summary_path.is_file():
        return {}
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    settings = summary.get("settings", {})
    m, fdr = settings.get("threshold", 0.6), settings.get("fdr")
    rule = rule_text(m, fdr)
    strata = summary.get("strata")
    result: dict[str, Any] = {"stratified": bool(strata)}
    if strata:
        columns = ", ".join(strata["columns"])
        result["strata_columns"] = columns
        note = (
            f"Rule used: {rule} within the strata of {columns} ({len(strata['sizes'])} strata, "
            f"{strata['n_cases']} cases). A deep feature is explained when it co-varies with a radiomic "
            f"feature among cases of the same {columns}: co-variation within class and site, not proof that "
            "the network computes that property, nor a meaning beyond it. A deep feature that meets the rule "
            "only pooled over the strata is confounded when it has no significant association within them "
            "(both features differ between the strata: classes, sites, scanners), attenuated when it has a "
            "significant but weaker one, and reversed when its strata disagree in sign."
        )
        if strata.get("left_out"):
            small = ", ".join(f"{k} ({v})" for k, v in strata["left_out"].items())
            least = strata.get("min_stratum", 3)
            note += f" Strata of fewer than {least} cases are left out of the within-stratum rho: {small}."
    else:
        note = (
            f"Rule used: the paper's pooled rule, {rule} over all cases together. It does not tell a "
            "co-variation within class and site from a shared difference between classes or sites."
        )
    if settings.get("cases") == "train":
        note += (
            f" The explanation, its permutation null and the suggested M come from the {summary['n_cases']} "
            "training cases (train and val of the training cohort) only; the other cases re-measure it below."
        )
    result["rule_note"] = note
    table = read_optional_csv(out / "explanations.csv", index_col=0)
    pairs = read_optional_csv(out / "correlations.csv")
    if table is not None and len(table):
        counts = table.groupby("model", sort=False)["status"].value_counts().unstack(fill_value=0)
        shown = {"explained": counts.get("explained", 0)}
        if strata:
            for status in ("reversed", "confounded", "attenuated"):
                shown[status] = counts.get(status, 0)
        shown["unexplained"] = counts.get("unexplained", 0)
        frame = counts.assign(**shown)[list(shown)]
        if strata and pairs is not None:
            kept = pairs["rho"].abs() >= m - 1e-12
            if fdr is not None:
                kept &= pairs["q"] <= fdr
            pooled = pairs.loc[kept, "deep_feature"].drop_duplicates()
            by_model = table.loc[pooled, "model"].value_counts() if len(pooled) else None
            frame["explained by the pooled rule alone"] = [
                int(by_model.get(model, 0)) if by_model is not None else 0 for model in frame.index
            ]
        result["counts_table"] = html_table(frame.rename_axis("backbone").reset_index())
    if strata and pairs is not None and "status" in pairs:
        confounded = pairs[pairs["status"] == "confounded"]
        confounded = confounded.reindex(confounded["rho"].abs().sort_values(ascending=False).index)
        result["n_confounded_pairs"] = len(confounded)
        shown = confounded[["deep_feature", "radiomic_feature", "rho", "rho_within"]].rename(
            columns={
                "deep_feature": "deep feature",
                "radiomic_feature": "radiomic feature",
                "rho": "rho pooled",
                "rho_within": "rho within strata",
            }
        )
        result["confounded_table"] = html_table(shown, max_rows=20)
    percent = {c: (lambda v: f"{100 * v:.0f}%") for c in ("fraction", "fraction_control", "gain")}
    control = read_optional_csv(out / "control_coverage.csv")
    if control is not None and len(control):
        columns = [
            "model",
            "control",
            "M",
            "fraction",
            "fraction_control",
            "gain",
            "gain_ci_low",
            "gain_ci_high",
        ]
        shown = control[[c for c in columns if c in control.columns]]
        percent.update({c: (lambda v: f"{100 * v:+.0f}%") for c in ("gain_ci_low", "gain_ci_high")})
        result["control_table"] = html_table(shown, percent)
    held = read_optional_csv(out / "heldout.csv")
    if held is not None and len(held):
        result["heldout_table"] = html_table(
            held.rename(columns={"set": "held-out cases"}), {"fraction_replicated": percent["fraction"]}
        )
    return result


def _classification_section(out: Path) -> dict:
    import pandas as pd

    result: dict[str, Any] = {}
    metrics = read_optional_csv(out / "classification.csv")
    if metrics is not None and len(metrics):
        shown = pd.DataFrame(
            {
                "feature set": metrics["feature_set"],
                "classifier": metrics["classifier"],
                "evaluated on": metrics["evaluated_on"],
                "cases": metrics.get("n_cases"),
            }
        )
        for metric in ("auc", "balanced_accuracy", "sensitivity", "specificity", "f1", "accuracy"):
            if metric in metrics:
                shown[metric.replace("_", " ")] = _with_ci(metrics, metric)
        result["metrics_table"] = html_table(shown)
        auc = metrics.assign(auc_text=_with_ci(metrics, "auc")).pivot_table(
            index=["feature_set", "classifier"],
            columns="evaluated_on",
            values="auc_text",
            aggfunc="first",
            sort=False,
        )
        auc.columns = [f"AUC, {c}" for c in auc.columns]
        result["auc_table"] = html_table(auc.reset_index().rename(columns={"feature_set": "feature set"}))
    roc = read_optional_csv(out / "roc.csv")
    if roc is not None and len(roc):
        result["roc_fig"] = roc_figure(roc, metrics)
    comparisons = read_optional_csv(out / "comparisons.csv")
    if comparisons is not None and len(comparisons):
        result["forest_fig"] = forest_figure(comparisons)
        result["claims"] = claims_as_measured(comparisons)
        result["comparisons_table"] = html_table(comparisons)
    history = read_optional_csv(out / "training_history.csv")
    if history is not None and len(history):
        result["training_fig"] = training_figure(history)
    return result


def _cam_section(out: Path, cohort_labels: Mapping[str, str]) -> dict:
    cam_dir = out / "cam"
    metrics = read_optional_csv(cam_dir / "cam_metrics.csv")
    if metrics is None or not len(metrics):
        return {
            "cam_note": "Not available: saliency maps need a fine-tuned backbone (weights: trained) or a "
            "checkpoint with its classifier head."
        }
    from Rad4XCNNLogic.cam.images import cam_paths
    from Rad4XCNNLogic.cam.methods import METHODS

    methods = list(dict.fromkeys(metrics["method"]))
    gallery = []
    for case_id in dict.fromkeys(metrics["case_id"].astype(str)):
        images = []
        for method in methods:
            png = cam_paths(out, case_id, method)["png"] if method in METHODS else cam_dir / "-"
            images.append(base64.b64encode(png.read_bytes()).decode("ascii") if png.is_file() else None)
        gallery.append({"case_id": case_id, "label": cohort_labels.get(case_id, ""), "images": images})
    summary_cols = [c for c in ("energy_inside", "pointing_hit") if c in metrics]
    summary = (
        metrics.groupby("method", sort=False)[summary_cols].mean().reset_index() if summary_cols else None
    )
    if summary is not None:
        summary = summary.rename(
            columns={"energy_inside": "mean energy inside lesion", "pointing_hit": "pointing game (hit rate)"}
        )
    agreement = read_optional_csv(cam_dir / "cam_agreement.csv")
    agree_table = None
    if agreement is not None and len(agreement):
        value_cols = [c for c in ("spearman", "top20_iou") if c in agreement]
        agree_table = html_table(agreement.groupby(["method_a", "method_b"])[value_cols].mean().reset_index())
    return {
        "gallery": gallery,
        "cam_methods": methods,
        "cam_summary_table": html_table(summary),
        "agreement_table": agree_table,
        **_cam_trust_section(cam_dir, metrics),
    }


def _cam_trust_section(cam_dir: Path, metrics) -> dict:
    """Which map to trust: per method the flags, faithfulness, randomisation result and verdict
    (``cam_summary.csv``), and the flagged maps (left out of the agreement table)."""
    summary = read_optional_csv(cam_dir / "cam_summary.csv", index_col=0)
    if summary is None or "verdict" not in summary:
        return {}
    columns = {
        "verdict": "verdict on this cohort",
        "flagged_maps": "flagged maps",
        "road_combined": "ROAD (combined)",
        "deletion_auc": "deletion AUC (lower is better)",
        "insertion_auc": "insertion AUC (higher is better)",
        "randomisation_similarity": "Spearman with randomised weights (median)",
    }
    table = summary[[c for c in columns if c in summary]].rename(columns=columns)
    for name, values in _cam_gain_columns(summary).items():
        table.insert(len(table.columns) - 1, name, values)
    table.index.name = "method"
    flagged = None
    if "flags" in metrics:
        chosen = metrics[metrics["flags"].astype("string").fillna("") != ""]
        flagged = chosen[["case_id", "method", "flags"]] if len(chosen) else None
    return {"trust_table": html_table(table, index=True), "flagged_table": html_table(flagged)}


def _cam_gain_columns(summary) -> dict[str, list[str]]:
    """The trust table's paired gains over the baseline maps: per baseline and score, ``mean [low, high]``
    over the cases paired (columns of ``cam_summary.csv``; none for a summary without them)."""

    def text(value: float) -> str:
        return f"{value:+.2f}" if np.isfinite(value) else "n/a"

    out: dict[str, list[str]] = {}
    for baseline, label in (("random", "a random map"), ("shuffled", "its map shuffled in the lesion")):
        for gain, score in (("road", "ROAD"), ("insdel", "insertion - deletion AUC")):
            key = f"{gain}_gain_{baseline}"
            if not {key, f"{key}_low", f"{key}_high"} <= set(summary.columns):
                continue
            cases = summary.get(f"cases_{baseline}")
            out[f"{score} gain over {label} [95% interval] (cases)"] = [
                f"{text(float(m))} [{text(float(lo))}, {text(float(hi))}]"
                + ("" if cases is None else f" ({int(cases.loc[method])})")
                for method, m, lo, hi in zip(
                    summary.index, summary[key], summary[f"{key}_low"], summary[f"{key}_high"], strict=True
                )
            ]
    return out


def _leakage_sections(out: Path, cfg, records: Mapping[str, Any]) -> dict:
    """Near-duplicates (thumbnails of the closest pairs and of every label conflict) and the repeated
    splits (split luck, and the leakage the grouping prevents): :mod:`Rad4XCNNLogic.run.leakage_report`."""
    from Rad4XCNNLogic.features.settings import TRAINED
    from Rad4XCNNLogic.run.leakage_report import duplicates_section, repeated_section

    cohort_record = records.get("cohort")
    context = duplicates_section(out, getattr(cohort_record, "summary", None))
    fine_tuned = any(m.weights_kind == TRAINED for m in cfg.models)
    repeated = repeated_section(out, fine_tuned)
    if repeated:
        context.update(
            repeated_table=html_table(repeated["repeated_table"]), repeated_note=repeated["repeated_note"]
        )
    return context


def write_report(out: str | os.PathLike, cfg, records: Mapping[str, Any], failures: Sequence[Any]) -> Path:
    """Write ``report.html`` into the run folder ``out`` from the files there; return its path."""
    import pandas as pd
    from jinja2 import Environment, PackageLoader, select_autoescape

    from Rad4XCNNLogic.infra.storage import write_text_atomic

    out = Path(out)
    env = Environment(
        loader=PackageLoader("Rad4XCNNLogic.run", "data"), autoescape=select_autoescape(["j2", "html"])
    )
    template = env.get_template(TEMPLATE)
    cohort = read_optional_csv(out / "cohort.csv", dtype=str, keep_default_na=False)
    labels = dict(zip(cohort["case_id"], cohort["label"], strict=True)) if cohort is not None else {}
    context: dict[str, Any] = {
        "title": out.name,
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "version": __version__,
        "fdr": cfg.explain.fdr,
        "failed_stages": [r for r in records.values() if getattr(r, "status", "") == "failed"],
    }
    context.update(_cohort_section(out))
    context.update(_explain_section(out, cfg, cfg.report.top_features, cfg.report.heatmap_features))
    context.update(_trust_section(out))
    claims = claims_section(out)  # what the counts claim; its tables escaped here like the others
    context.update(
        {k: html_table(v, max_rows=20) if isinstance(v, pd.DataFrame) else v for k, v in claims.items()}
    )
    context.update(_classification_section(out))
    concepts = concepts_section(out)
    context.update(
        concepts_fig=None if concepts.figure is None else _png(concepts.figure),
        concepts_measure=concepts.measure,
        cka_table=html_table(concepts.cka),
        sensitivity_table=html_table(concepts.sensitivity),
        concepts_chosen=concepts.chosen,
    )
    context.update(_cam_section(out, labels))
    context.update(_leakage_sections(out, cfg, records))
    if failures:
        frame = pd.DataFrame([f.to_dict() if hasattr(f, "to_dict") else dict(f) for f in failures])
        context["failures_table"] = html_table(frame)
    stages = pd.DataFrame(
        [
            {
                "stage": r.name,
                "status": r.status,
                "seconds": round(r.seconds, 2),
                "summary": r.error or r.summary.get("text", ""),
            }
            for r in records.values()
        ]
    )
    context["stages_table"] = html_table(stages)
    return write_text_atomic(out / "report.html", template.render(**context))
