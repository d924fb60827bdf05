"""The ``classify`` command: the classification stage of a run on the feature tables a user names."""

from __future__ import annotations

import argparse
from pathlib import Path

from Rad4XCNNLogic.cli.options import add_setting, config_from_args, given, show_progress


def cmd_classify(args: argparse.Namespace) -> int:
    from Rad4XCNNLogic.classify.classifiers import read_explained, read_feature_tables
    from Rad4XCNNLogic.cohort.manifest import read_manifest
    from Rad4XCNNLogic.run.work import classify_stage

    cfg = config_from_args(args)
    features, missing = read_feature_tables(args.features)
    # a manifest of labels alone (case_id, label, split, cohort, patient_id) is enough to classify a table
    cohort = read_manifest(cfg.manifest, check_files=False, seed=cfg.seed, require_images=False)
    summary = classify_stage(
        features,
        cohort,
        Path(args.out),
        classification=cfg.classification,
        seed=cfg.seed,
        # without --train-cohort, the training split of every cohort trains
        train_cohort=cfg.split.train_cohort if given(args, "split.train_cohort") else None,
        explained=read_explained(args.explained) if args.explained else None,
        feature_failures=missing,
        progress=show_progress(args),
    )
    result = summary["result"]
    print(
        f"classes: {' / '.join(result.classes)}; cases: "
        + ", ".join(f"{k} {v}" for k, v in result.counts.items())
    )
    table = result.metrics
    width = max(len(s) for s in table["feature_set"]) + 2
    print(f"{'feature set':<{width}}{'clf':<5}{'evaluated on':<16}{'AUC (95% CI)':<22}{'bal. acc.':>10}")
    for _, row in table.iterrows():
        auc = f"{row.auc:.3f} ({row.auc_ci_low:.3f}-{row.auc_ci_high:.3f})"
        print(
            f"{row.feature_set:<{width}}{row.classifier:<5}{row.evaluated_on:<16}{auc:<22}"
            f"{row.balanced_accuracy:>10.3f}"
        )
    for failure in result.task_failures:
        print(f"  failed: {failure['feature_set']}/{failure['classifier']}: {failure['problem']}")
    if result.comparisons is not None and len(result.comparisons):
        table = result.comparisons
        families = table.groupby(["family", "evaluated_on"]).ngroups
        print(
            f"paired comparisons: {len(table)} in {families} famil(ies) of claim x evaluation set "
            "(delta AUC = a - b, 95% CI on the same bootstrap draws, DeLong p; simultaneous 95% band and "
            "Holm p within the family):"
        )
        for row in table.itertuples():
            print(
                f"  {row.evaluated_on:<16}{row.classifier:<5}{row.set_a} - {row.set_b}: "
                f"{row.delta_auc:+.3f} ({row.ci_low:+.3f} to {row.ci_high:+.3f}), p {row.p_delong:.3g}; "
                f"band {row.sim_ci_low:+.3f} to {row.sim_ci_high:+.3f}, Holm p {row.p_holm:.3g} "
                f"[{row.family}, {row.family_size}]"
            )
    print(f"wrote {', '.join(Path(p).name for p in summary['outputs'])} to {Path(args.out)}")
    return 0


def register(sub, parents: dict) -> None:
    p = sub.add_parser(
        "classify",
        parents=[parents["seed"], parents["progress"]],
        help="train RandomForest, XGBoost and SVM on feature tables and validate them",
        description=(
            "Train each classifier on each feature set (deep, radiomic, deep+radiomic, explained deep), "
            "choosing hyper-parameters by cross-validation on the training split (train + val), and "
            "evaluate on the internal test split and every other cohort, with bootstrap 95% CIs: the "
            "classification stage of 'rad4xcnn run'. Writes classification.csv, roc.csv, importances.csv, "
            "predictions.csv, comparisons.csv (paired differences between feature sets) and "
            "classification.json."
        ),
    )
    p.add_argument(
        "--features",
        nargs="+",
        required=True,
        metavar="[NAME=]FILE",
        help="feature CSVs (case_id first), joined on case_id; numeric columns that are neither deep "
        "(<model>_<index>) nor PyRadiomics features form a feature set named after the file, or NAME",
    )
    add_setting(
        p, "manifest", "--manifest", required=True, help="the cohort manifest (labels, splits, cohorts)"
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--explained",
        metavar="CSV",
        help="explanations.csv (columns deep_feature, n_partners): its deep features with n_partners > 0 "
        "form the 'explained-deep' feature set",
    )
    add_setting(p, "classification.classifiers", "--classifiers", nargs="+", metavar="CLF")
    add_setting(p, "classification.feature_sets", "--feature-sets", nargs="+", metavar="KIND")
    add_setting(p, "classification.positive", "--positive")
    add_setting(p, "classification.cv_folds", "--cv-folds")
    add_setting(p, "classification.n_bootstrap", "--bootstrap")
    add_setting(p, "classification.correlation_threshold", "--correlation-threshold")
    add_setting(p, "classification.select_k", "--select-k")
    add_setting(
        p,
        "split.train_cohort",
        "--train-cohort",
        help="cohort that trains (default: every cohort's train split)",
    )
    add_setting(p, "classification.jobs", "--jobs")
    add_setting(p, "classification.evaluate_on", "--evaluate-on", nargs="+", metavar="COHORT")
    add_setting(p, "classification.compare", "--compare", nargs="+", metavar="A:B")
    p.set_defaults(func=cmd_classify)
