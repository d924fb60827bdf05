"""The ``classify`` command: the classification stage of a run on the feature tables a user names (made
from its stage record by :mod:`Rad4XCNNLogic.cli.stagecmd`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from Rad4XCNNLogic.cli.stagecmd import StageCommand
from Rad4XCNNLogic.errors import UsageError
from Rad4XCNNLogic.names import RunFiles


def _before(args: argparse.Namespace, run) -> None:
    """At least one feature table, and a manifest with the cohorts of the run's protocol."""
    from Rad4XCNNLogic.run.onfiles import check_protocol

    if not (run.more_features or run.files.get(RunFiles.DEEP) or run.files.get(RunFiles.RADIOMICS)):
        raise UsageError("give the feature tables: --deep and/or --radiomics, or --features")
    check_protocol(run)


def show_classify(args: argparse.Namespace, run, summary: dict) -> int:
    """The terminal summary: each model's AUC per evaluated cohort, the failures and the comparisons."""
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
    print(f"wrote {', '.join(Path(p).name for p in summary['outputs'])} to {run.out}")
    return 0


def _flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--features",
        nargs="+",
        default=[],
        metavar="[NAME=]FILE",
        help="feature CSVs (case_id first), joined on case_id with --deep and --radiomics; numeric columns "
        "that are neither deep (<model>_<index>) nor PyRadiomics features form a feature set named after "
        "the file, or NAME",
    )


COMMAND = StageCommand(
    "classify",
    help="train RandomForest, XGBoost and SVM on feature tables and validate them",
    description=(
        "Train each classifier on each feature set (deep, radiomic, deep+radiomic, explained deep), "
        "choosing hyper-parameters by cross-validation on the training split (train + val) of "
        "--train-cohort, and evaluate on its test split and every other cohort, with bootstrap 95% CIs: "
        "the classification stage of 'rad4xcnn run'. Writes classification.csv, roc.csv, importances.csv, "
        "predictions.csv, comparisons.csv (paired differences between feature sets) and "
        "classification.json (and explanations_by_importance.csv when --explained sits in an explanation "
        "folder)."
    ),
    settings=(
        ("classification.classifiers", ("--classifiers",), {"nargs": "+", "metavar": "CLF"}),
        ("classification.feature_sets", ("--feature-sets",), {"nargs": "+", "metavar": "KIND"}),
        ("classification.positive", ("--positive",), {}),
        ("classification.cv_folds", ("--cv-folds",), {}),
        ("classification.n_bootstrap", ("--bootstrap",), {}),
        ("classification.correlation_threshold", ("--correlation-threshold",), {}),
        ("classification.select_k", ("--select-k",), {}),
        ("split.train_cohort", ("--train-cohort",), {"help": "the cohort whose train split trains"}),
        ("classification.jobs", ("--jobs",), {}),
        ("classification.evaluate_on", ("--evaluate-on",), {"nargs": "+", "metavar": "COHORT"}),
        ("classification.compare", ("--compare",), {"nargs": "+", "metavar": "A:B"}),
    ),
    show=show_classify,
    optional=(RunFiles.DEEP, RunFiles.RADIOMICS, RunFiles.EXPLANATIONS),
    file_help={RunFiles.COHORT: "the cohort manifest (labels, splits, cohorts)"},
    flags=_flags,
    options=lambda args: {
        "more_features": args.features,
        # a manifest of labels alone (case_id, label, split, cohort, patient_id) is enough to classify
        "checks": {"check_files": False, "require_images": False},
    },
    before=_before,
)
