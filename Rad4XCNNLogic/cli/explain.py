"""The ``explain`` command: the explanation stage of a run on the deep and radiomic tables a user names
(made from its stage record by :mod:`Rad4XCNNLogic.cli.stagecmd`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from Rad4XCNNLogic.cli.options import given
from Rad4XCNNLogic.cli.stagecmd import StageCommand
from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.explain.settings import rule_text
from Rad4XCNNLogic.names import RunFiles


def _without_manifest(args: argparse.Namespace, run) -> None:
    """Without a manifest there are neither strata nor splits: say so in one line (or refuse a flag that
    needs them)."""
    if run.files.get(RunFiles.COHORT) is not None:
        return
    ec = run.cfg.explain
    asked = (given(args, "explain.stratify") and ec.stratify) or (
        given(args, "explain.cases") and ec.cases == "train"
    )
    if asked:
        raise Rad4XCNNError(
            "--stratify and --cases train need --manifest (the strata and splits of the cases)"
        )
    print("without --manifest there are no strata and no splits: the pooled rule on every case")


def _before(args: argparse.Namespace, run) -> None:
    _without_manifest(args, run)
    args.importance_table = _importances(args) if args.importances else None


def _importances(args: argparse.Namespace):
    """The table of --importances (one classifier's with --classifier), checked before the work."""
    import pandas as pd

    if not Path(args.importances).is_file():
        raise Rad4XCNNError(f"importances table not found: {args.importances}")
    importances = pd.read_csv(args.importances)
    if args.classifier:
        importances = importances[importances["classifier"] == args.classifier]
        if importances.empty:
            raise Rad4XCNNError(f"{args.importances} has no importances of classifier {args.classifier!r}")
    return importances


def show_explain(args: argparse.Namespace, run, summary: dict) -> int:
    """The terminal summary of the explanation (and, with --importances, the ranked explained features)."""
    import pandas as pd

    from Rad4XCNNLogic.run.work import write_by_importance

    ec = run.cfg.explain
    out = run.out
    # replicability between the manifest's cohorts, as in a run (--cohorts: another manifest's)
    cohort = run.cohorts if run.cohorts is not None else run.load_cohort()
    importances = args.importance_table
    if importances is not None:
        summary["outputs"] += write_by_importance(summary["result"], importances, out)
    result = summary["result"]
    s = result.summary()
    rule = rule_text(result.threshold, ec.fdr)
    print(
        f"{s['n_cases']} cases ({len(result.dropped_cases)} left out), {s['n_deep_features']} deep x "
        f"{s['n_radiomic_features']} radiomic features; {len(result.correlations)} pairs with {rule}"
    )
    status = result.explanations.groupby("model", sort=False)["status"].value_counts().unstack(fill_value=0)
    kinds = ("explained", "reversed", "confounded", "attenuated", "unexplained")
    fwer = s.get("n_explained_fwer_by_model") or {}
    for model, counts in status.iterrows():
        varying = int(sum(counts.get(k, 0) for k in kinds))
        constant = int(counts.get("zero variance", 0))
        line = f"  {model}: {int(counts.get('explained', 0))} of {varying} varying deep features explained"
        if result.within is not None:
            line += f" within {','.join(result.within.columns)}, " + ", ".join(
                f"{int(counts.get(k, 0))} {k}" for k in kinds[1:4]
            )
        if constant:
            line += f" ({constant} constant, left out of the fraction)"
        if s.get("n_explained_fwer_by_model") is not None:
            line += f"; {int(fwer.get(model, 0))} above the permutation threshold"
        print(line)
    for count, error in s["error_control"].items():
        print(f"  {count}: {error}")
    for model in s["M_below_permutation_threshold"]:
        print(
            f"  warning: {model}: M = {result.threshold:g} is not above the permutation threshold "
            f"{result.permutation_thresholds[model]:.3f}: some explained features may be chance"
        )
    if result.within is not None and result.within.small_strata:
        small = ", ".join(f"{k} ({v})" for k, v in result.within.small_strata.items())
        print(
            f"  strata of fewer than {s['strata']['min_stratum']} cases, left out of the within-stratum "
            f"rho: {small}"
        )
    for verdict in summary.get("control_verdicts") or []:
        print(f"  control: {verdict['text']}")
    if summary.get("test_cases_warning"):
        print(f"  warning: {summary['test_cases_warning']}")
    if summary["heldout"]:
        for row in summary["heldout"]:
            print(
                f"  held out {row['set']} ({row['n_cases']} cases): {row['n_replicated']} of "
                f"{row['n_measured']} explained pairs replicated"
            )
    zero = result.zero_variance
    if zero["deep"] or zero["radiomic"]:
        print(f"  constant, no rho: {len(zero['deep'])} deep and {len(zero['radiomic'])} radiomic feature(s)")
    if result.permutation_threshold is not None:
        print(
            f"  permutation test ({ec.permutations} shuffles): |rho| > {result.permutation_threshold:.3f} "
            f"keeps the family-wise error at {ec.alpha:g}; suggested M >= {result.suggested_M:.2f}"
        )
        if len(result.suggested_Ms) > 1:
            per_model = ", ".join(f"{m} {v:.2f}" for m, v in result.suggested_Ms.items())
            print(f"  suggested M per backbone (each its own family of tests): {per_model}")
    ranked = out / RunFiles.BY_IMPORTANCE
    if importances is not None and ranked.is_file() and ranked in map(Path, summary["outputs"]):
        top = pd.read_csv(ranked).head(args.top)
        explained = int((top["status"] == "explained").sum())
        print(f"  of the {len(top)} most important deep features, {explained} are explained")
    rep = summary["replicability"]
    if rep is not None:
        for row in rep.summary.itertuples():
            print(
                f"  replicability {row.cohort_a} -> {row.cohort_b}: {row.n_replicated} of {row.n_kept_a} "
                f"pairs hold in both; rho agreement r = {row.rho_agreement:.2f}"
            )
    elif cohort is not None:
        print("  replicability: needs two cohorts of at least 10 cases each")
    print(f"wrote {', '.join(sorted(Path(p).name for p in summary['outputs']))} to {out}")
    return 0


def _flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cohorts",
        metavar="MANIFEST",
        help="another manifest whose cohort column groups the cases for replicability/ (default: --manifest)",
    )
    p.add_argument(
        "--importances", metavar="CSV", help="importances.csv: rank the explained features by importance"
    )
    p.add_argument("--classifier", help="only this classifier's importances (default: all, averaged)")
    p.add_argument(
        "--top", type=int, default=20, help="important features summarised on the terminal (default 20)"
    )


COMMAND = StageCommand(
    "explain",
    help="explain deep features by correlated radiomic features (Spearman, |rho| >= M)",
    description=(
        "Correlate every deep feature with every radiomic feature (Spearman's rho over the cases in "
        "both tables) and explain each deep feature by the radiomic features with |rho| >= M: the "
        "explanation stage of 'rad4xcnn run', with the same defaults: with --manifest, within the "
        "strata of label and cohort, on the training cases, re-measured on the held-out ones, "
        "replicated between cohorts, and each backbone beside its random-weights control "
        "(<key>-random) when the table has it. Writes correlations.csv, explanations.csv, coverage.csv, "
        "explained_by_threshold.csv, explanation.json and the rho/p/q matrices (and heldout.csv, "
        "replicability/, control_coverage.csv, explanations_by_importance.csv where they apply)."
    ),
    settings=(
        ("explain.thresholds", ("--threshold", "-M"), {"metavar": "M"}),
        (
            "explain.fdr",
            ("--fdr",),
            {"help": "also require a Benjamini-Hochberg q-value <= this ('none': not)"},
        ),
        ("explain.permutations", ("--permutations",), {}),
        ("explain.alpha", ("--alpha",), {}),
        ("explain.bootstrap", ("--bootstrap",), {}),
        ("explain.backend", ("--backend",), {}),
        ("explain.chunk_size", ("--chunk-size",), {}),
        ("explain.min_stratum", ("--min-stratum",), {}),
        ("explain.control_bootstrap", ("--control-bootstrap",), {}),
        (
            "explain.stratify",
            ("--stratify",),
            {
                "comma": True,
                "metavar": "COLUMNS",
                "help": "manifest columns (e.g. label,cohort or scanner) within whose strata a pair must "
                "hold to explain; pairs that hold only pooled are 'confounded'; 'none': the paper's "
                "pooled rule",
            },
        ),
        (
            "explain.cases",
            ("--cases",),
            {
                "help": "train: explain on the train and val cases of --train-cohort and re-measure the "
                "explained pairs on the other cases (heldout.csv); all: every case"
            },
        ),
        (
            "split.train_cohort",
            ("--train-cohort",),
            {"help": "the cohort whose train/val cases --cases train uses"},
        ),
    ),
    show=show_explain,
    optional=(RunFiles.COHORT,),
    file_help={
        RunFiles.COHORT: "the cohort manifest: the strata (--stratify), splits (--cases train) and cohorts "
        "of the cases; without it, the pooled rule on every case"
    },
    flags=_flags,
    options=lambda args: {"cohorts": args.cohorts},
    before=_before,
)
