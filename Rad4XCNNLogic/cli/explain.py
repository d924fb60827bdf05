"""The ``explain`` command: the explanation stage of a run on the deep and radiomic tables a user names."""

from __future__ import annotations

import argparse
from pathlib import Path

from Rad4XCNNLogic.cli.options import (
    add_setting,
    config_from_args,
    given,
    setting_dest,
    setting_type,
    show_progress,
)
from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.explain.settings import rule_text
from Rad4XCNNLogic.names import RunFiles
from Rad4XCNNLogic.run.config import setting


def cmd_explain(args: argparse.Namespace) -> int:
    import pandas as pd

    from Rad4XCNNLogic.run.stages import read_run_manifest
    from Rad4XCNNLogic.run.work import explain_stage

    # The run's settings: strata and the training cases come from the manifest, as in 'rad4xcnn run'.
    cfg = config_from_args(args)
    manifest = None
    if args.manifest:
        # cases without a split get the run's (a run folder's cohort.csv already holds them)
        manifest = read_run_manifest(cfg, args.manifest, check_files=False)
    else:
        asked = (given(args, "explain.stratify") and cfg.explain.stratify) or (
            given(args, "explain.cases") and cfg.explain.cases == "train"
        )
        if asked:
            raise Rad4XCNNError(
                "--stratify and --cases train need --manifest (the strata and splits of the cases)"
            )
        print("without --manifest there are no strata and no splits: the pooled rule on every case")
    importances = None
    if args.importances:
        if not Path(args.importances).is_file():
            raise Rad4XCNNError(f"importances table not found: {args.importances}")
        importances = pd.read_csv(args.importances)
        if args.classifier:
            importances = importances[importances["classifier"] == args.classifier]
            if importances.empty:
                raise Rad4XCNNError(
                    f"{args.importances} has no importances of classifier {args.classifier!r}"
                )
    # replicability between the manifest's cohorts, as in a run (--cohorts: another manifest's)
    cohort = manifest
    if args.cohorts:
        cohort = read_run_manifest(cfg, args.cohorts, check_files=False)
    ec = cfg.explain
    out = Path(args.out)
    summary = explain_stage(
        Path(args.deep),
        Path(args.radiomics),
        out,
        explain=ec,
        seed=cfg.seed,
        cohort=cohort,
        manifest=manifest,
        train_cohort=cfg.split.train_cohort,
        importances=importances,
        progress=show_progress(args),
    )
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


def register(sub, parents: dict) -> None:
    p = sub.add_parser(
        "explain",
        parents=[parents["seed"], parents["progress"]],
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
    )
    p.add_argument("--deep", required=True, help="deep_features.csv (case_id x deep features)")
    p.add_argument("--radiomics", required=True, help="radiomics.csv (case_id x radiomic features)")
    add_setting(p, "explain.thresholds", "--threshold", "-M", metavar="M")
    add_setting(
        p, "explain.fdr", "--fdr", help="also require a Benjamini-Hochberg q-value <= this ('none': not)"
    )
    add_setting(p, "explain.permutations", "--permutations")
    add_setting(p, "explain.alpha", "--alpha")
    add_setting(p, "explain.bootstrap", "--bootstrap")
    add_setting(p, "explain.backend", "--backend")
    add_setting(p, "explain.chunk_size", "--chunk-size")
    add_setting(p, "explain.min_stratum", "--min-stratum")
    add_setting(p, "explain.control_bootstrap", "--control-bootstrap")
    p.add_argument(
        "--manifest",
        metavar="MANIFEST",
        help="the cohort manifest: the strata (--stratify), splits (--cases train) and cohorts of the cases; "
        "without it, the pooled rule on every case",
    )
    p.add_argument(
        "--stratify",
        dest=setting_dest("explain.stratify"),
        type=setting_type("explain.stratify", comma=True),
        metavar="COLUMNS",
        help=(
            "manifest columns (e.g. label,cohort or scanner) within whose strata a pair must hold to "
            "explain; pairs that hold only pooled are 'confounded' or 'attenuated'; 'none': the paper's "
            "pooled rule "
            f"(default: {','.join(setting('explain.stratify').default)})"
        ),
    )
    p.add_argument(
        "--cases",
        dest=setting_dest("explain.cases"),
        type=setting_type("explain.cases"),
        choices=setting("explain.cases").choices,
        help=(
            "train: explain on the train and val cases of --train-cohort and re-measure the explained "
            "pairs on the other cases (heldout.csv); all: every case "
            f"(default: {setting('explain.cases').default})"
        ),
    )
    add_setting(
        p, "split.train_cohort", "--train-cohort", help="the cohort whose train/val cases --cases train uses"
    )
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
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_explain)
