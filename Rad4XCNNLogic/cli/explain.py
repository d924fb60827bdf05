"""The ``explain`` command: the explanation stage of a run on the deep and radiomic tables a user names."""

from __future__ import annotations

import argparse
from pathlib import Path

from Rad4XCNNLogic.cli.options import add_setting, config_from_args, show_progress
from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.names import RunFiles


def cmd_explain(args: argparse.Namespace) -> int:
    import pandas as pd

    from Rad4XCNNLogic.cohort.manifest import read_manifest
    from Rad4XCNNLogic.run.work import explain_stage

    cfg = config_from_args(args)
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
    cohort = None
    if args.cohorts:
        cohort = read_manifest(args.cohorts, check_files=False, assign_split=False)
    ec = cfg.explain
    out = Path(args.out)
    summary = explain_stage(
        Path(args.deep),
        Path(args.radiomics),
        out,
        explain=ec,
        seed=cfg.seed,
        cohort=cohort,
        importances=importances,
        progress=show_progress(args),
    )
    result = summary["result"]
    s = result.summary()
    rule = f"|rho| >= {result.threshold:.2f}" + (f" and q <= {ec.fdr:g}" if ec.fdr is not None else "")
    print(
        f"{s['n_cases']} cases ({len(result.dropped_cases)} left out), {s['n_deep_features']} deep x "
        f"{s['n_radiomic_features']} radiomic features; {len(result.correlations)} pairs with {rule}"
    )
    status = result.explanations.groupby("model", sort=False)["status"].value_counts().unstack(fill_value=0)
    for model, counts in status.iterrows():
        varying = int(counts.get("explained", 0) + counts.get("unexplained", 0))
        print(f"  {model}: {int(counts.get('explained', 0))} of {varying} varying deep features explained")
    zero = result.zero_variance
    if zero["deep"] or zero["radiomic"]:
        print(f"  constant, no rho: {len(zero['deep'])} deep and {len(zero['radiomic'])} radiomic feature(s)")
    if result.permutation_threshold is not None:
        print(
            f"  permutation test ({ec.permutations} shuffles): |rho| > {result.permutation_threshold:.3f} "
            f"keeps the family-wise error at {ec.alpha:g}; suggested M >= {result.suggested_M:.2f}"
        )
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
            "explanation stage of 'rad4xcnn run', with the same defaults. Writes correlations.csv, "
            "explanations.csv, coverage.csv, explained_by_threshold.csv, explanation.json and the "
            "rho/p/q matrices (and replicability/, explanations_by_importance.csv when asked)."
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
    p.add_argument(
        "--cohorts",
        metavar="MANIFEST",
        help="manifest with a cohort column: replicability between cohorts (replicability/)",
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
