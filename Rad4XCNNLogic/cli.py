"""The ``rad4xcnn`` command line: one sub-command per pipeline stage, printing for people.

Heavy libraries are imported inside each command, so ``rad4xcnn --help`` stays fast and works before they
are installed. Errors print as one line (no traceback unless ``--verbose``) and exit non-zero.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .errors import Rad4XCNNError

log = logging.getLogger("Rad4XCNNLogic")


def _setup_logging(verbosity: int) -> None:
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s" if verbosity > 0 else "%(message)s"))
    root = logging.getLogger("Rad4XCNNLogic")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def _shape(text: str) -> tuple[int, int]:
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ROWSxCOLS such as 256x320, got {text!r}") from None
    return rows, cols


# --------------------------------------------------------------------------------------------- commands
def cmd_synth(args: argparse.Namespace) -> int:
    from .cohort import format_summary, read_manifest
    from .synthetic import make_synthetic_cohort

    manifest = make_synthetic_cohort(
        args.out,
        args.n,
        seed=args.seed,
        n_external=args.external,
        malignant_fraction=args.malignant_fraction,
        normal_fraction=args.normal_fraction,
        shape=args.shape,
        separation=args.separation,
        fmt=args.format,
    )
    cohort = read_manifest(manifest, seed=args.seed)
    print(f"wrote {len(cohort)} synthetic cases to {Path(args.out)}")
    print(f"  manifest: {manifest}\n  factors:  {Path(args.out) / 'factors.csv'}")
    print(format_summary(cohort))
    return 0


def cmd_import_busi(args: argparse.Namespace) -> int:
    from .busi import import_busi
    from .cohort import format_summary

    result = import_busi(args.folder, args.out)
    cohort = result.cohort
    print(
        f"wrote {args.out}: {len(cohort)} cases "
        f"({sum(not c.has_lesion for c in cohort)} without a lesion, flagged has_lesion=false; "
        f"{len(result.multi_mask_cases)} with several masks, joined with ';')"
    )
    print(format_summary(cohort))
    return 0


def cmd_cohort(args: argparse.Namespace) -> int:
    from .cohort import format_summary, read_manifest, write_manifest

    cohort = read_manifest(args.manifest, check_images=args.check_images, seed=args.seed)
    print(format_summary(cohort))
    if args.write:
        write_manifest(cohort, args.write)
        print(f"wrote the manifest with its splits to {args.write}")
    return 1 if (args.strict and cohort.failures) else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .cohort import format_summary, read_manifest
    from .synthetic import make_synthetic_cohort

    out = Path(args.out)
    manifest = make_synthetic_cohort(out / "cohort", args.n, seed=args.seed, n_external=args.external)
    cohort = read_manifest(manifest, check_images=True, seed=args.seed)
    print(f"Rad4XCNN demo: synthetic breast-ultrasound cohort in {out / 'cohort'}")
    print(format_summary(cohort))
    return 0


def _threshold_or_none(text: str) -> float | None:
    if text.strip().lower() in {"none", "off"}:
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1] or 'none', got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1] or 'none', got {value}")
    return value


def cmd_classify(args: argparse.Namespace) -> int:
    from .classification import classify, read_explained, read_feature_tables, write_classification
    from .cohort import read_manifest

    features, missing = read_feature_tables(args.features)
    cohort = read_manifest(args.manifest, check_files=False, seed=args.seed)
    explained = read_explained(args.explained) if args.explained else None
    result = classify(
        features,
        cohort,
        explained=explained,
        feature_failures=missing,
        classifiers=args.classifiers,
        positive=args.positive,
        seed=args.seed,
        cv_folds=args.cv_folds,
        n_bootstrap=args.bootstrap,
        correlation_threshold=args.correlation_threshold,
        select_k=args.select_k,
        train_cohort=args.train_cohort,
        jobs=args.jobs,
        progress=args.verbosity >= 0,
    )
    paths = write_classification(result, args.out)
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
    print(f"wrote {', '.join(p.name for p in paths.values())} to {Path(args.out)}")
    return 0


# ----------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rad4xcnn",
        description="Explain a CNN's deep features through radiomic features (Rad4XCNN, Prinzi et al. 2024).",
    )
    parser.add_argument("--version", action="version", version=f"rad4xcnn {__version__}")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument(
        "-v",
        "--verbose",
        action="store_const",
        const=1,
        dest="verbosity",
        default=0,
        help="more detail, and a traceback on unexpected errors",
    )
    verbosity.add_argument(
        "-q", "--quiet", action="store_const", const=-1, dest="verbosity", help="only warnings and errors"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "synth",
        help="write a synthetic breast-ultrasound cohort with planted class factors",
        description="Write images, masks, manifest.csv and factors.csv of a synthetic cohort.",
    )
    p.add_argument("--n", type=_positive_int, default=200, help="internal cases (default 200)")
    p.add_argument("--external", type=int, default=0, help="cases of an external cohort (default 0)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--shape", type=_shape, default=(256, 320), help="image size ROWSxCOLS (default 256x320)")
    p.add_argument("--malignant-fraction", type=float, default=0.4, help="default 0.4")
    p.add_argument("--normal-fraction", type=float, default=0.0, help="cases without lesion (default 0)")
    p.add_argument("--separation", type=float, default=1.0, help="0-1, how distinct the classes are")
    p.add_argument("--format", choices=("png", "nrrd"), default="png", help="image format (default png)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser(
        "import-busi",
        help="write a manifest for a folder in the BUSI layout",
        description="Pair BUSI images with their masks (benign/, malignant/, normal/).",
    )
    p.add_argument("folder", help="the BUSI folder holding benign/, malignant/ and normal/")
    p.add_argument("--out", required=True, help="manifest CSV to write")
    p.set_defaults(func=cmd_import_busi)

    p = sub.add_parser(
        "cohort",
        help="check a manifest and summarise its cases",
        description="Validate a manifest, assign missing splits and print a summary.",
    )
    p.add_argument("manifest")
    p.add_argument("--check-images", action="store_true", help="read every image and mask")
    p.add_argument("--seed", type=int, default=0, help="seed of the split for cases without one")
    p.add_argument("--write", metavar="CSV", help="write the manifest with the assigned splits")
    p.add_argument("--strict", action="store_true", help="exit 1 if any case was left out")
    p.set_defaults(func=cmd_cohort)

    p = sub.add_parser(
        "classify",
        help="train RandomForest, XGBoost and SVM on feature tables and validate them",
        description=(
            "Train each classifier on each feature set (deep, radiomic, deep+radiomic, explained deep), "
            "choosing hyper-parameters by cross-validation on the training split (train + val), and "
            "evaluate on the internal test split and every other cohort, with bootstrap 95% CIs. "
            "Writes classification.csv, roc.csv, importances.csv, predictions.csv and classification.json."
        ),
    )
    p.add_argument(
        "--features", nargs="+", required=True, metavar="FILE", help="feature CSVs, joined on case_id"
    )
    p.add_argument("--manifest", required=True, help="the cohort manifest (labels, splits, cohorts)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--explained",
        metavar="CSV",
        help="explanations.csv (columns deep_feature, n_partners): its deep features with n_partners > 0 "
        "form the 'explained-deep' feature set",
    )
    p.add_argument(
        "--classifiers",
        nargs="+",
        choices=("rf", "xgb", "svm"),
        default=["rf", "xgb", "svm"],
        metavar="CLF",
        help="some of rf, xgb, svm (default: all three)",
    )
    p.add_argument(
        "--positive",
        help="name of the positive class (default: e.g. 'malignant'); with more "
        "than two labels, gives a positive-vs-rest task instead of a multi-class one",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="random seed, also of the manifest's split (default 0)"
    )
    p.add_argument("--cv-folds", type=_positive_int, default=5, help="cross-validation folds (default 5)")
    p.add_argument(
        "--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs (default 1000)"
    )
    p.add_argument(
        "--correlation-threshold",
        type=_threshold_or_none,
        default=0.95,
        help="drop features correlated above this |Spearman rho| with a stronger one (default 0.95; 'none')",
    )
    p.add_argument(
        "--select-k", type=_positive_int, help="keep the k features with the smallest Mann-Whitney p"
    )
    p.add_argument("--train-cohort", help="cohort that trains (default: internal)")
    p.add_argument("--jobs", type=_positive_int, help="parallel fits (default: all cores)")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser(
        "demo",
        help="run Rad4XCNN on the built-in synthetic cohort",
        description="Generate the synthetic demo cohort and run the pipeline on it.",
    )
    p.add_argument("--out", default="demo_run", help="output folder (default ./demo_run)")
    p.add_argument("--n", type=_positive_int, default=120, help="internal cases (default 120)")
    p.add_argument("--external", type=int, default=40, help="external cases (default 40)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbosity)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except Rad4XCNNError as exc:
        print(f"rad4xcnn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rad4xcnn: interrupted", file=sys.stderr)
        return 130
    except ImportError as exc:
        name = getattr(exc, "name", None) or str(exc)
        print(
            f"rad4xcnn: error: a required package is not installed ({name}); "
            "install the extras with: pip install 'rad4xcnn[all]'",
            file=sys.stderr,
        )
        if args.verbosity > 0:
            raise
        return 3
    except Exception as exc:
        if args.verbosity > 0:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(
            f"rad4xcnn: internal error: {type(exc).__name__}: {first} (run with --verbose for details)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
