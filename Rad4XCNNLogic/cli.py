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

from Rad4XCNNLogic import __version__
from Rad4XCNNLogic.errors import Rad4XCNNError

log = logging.getLogger("Rad4XCNNLogic")
#: The demo's classes overlap somewhat, so that its classifiers and explanations are not trivially perfect.
DEMO_SEPARATION = 0.6


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


def _unit_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {value}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of at least 0, got {value}")
    return value


# --------------------------------------------------------------------------------------------- commands
def cmd_synth(args: argparse.Namespace) -> int:
    from Rad4XCNNLogic.cohort.manifest import format_summary, read_manifest
    from Rad4XCNNLogic.cohort.synthetic import make_synthetic_cohort

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
    from Rad4XCNNLogic.cohort.busi import import_busi
    from Rad4XCNNLogic.cohort.manifest import format_summary

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
    from Rad4XCNNLogic.cohort.manifest import format_summary, read_manifest, write_manifest

    cohort = read_manifest(args.manifest, check_images=args.check_images, seed=args.seed)
    print(format_summary(cohort))
    if args.write:
        write_manifest(cohort, args.write)
        print(f"wrote the manifest with its splits to {args.write}")
    return 1 if (args.strict and cohort.failures) else 0


def cmd_radiomics(args: argparse.Namespace) -> int:
    from Rad4XCNNLogic.cohort.manifest import read_manifest
    from Rad4XCNNLogic.features.radiomics import extract_radiomics, side_files, write_radiomics

    out = Path(args.out)
    cohort = read_manifest(args.manifest, seed=args.seed)
    cache_dir = None if args.no_cache else Path(args.cache_dir or out.parent / ".rad4xcnn_cache")
    result = extract_radiomics(
        cohort,
        args.params,
        jobs=args.jobs,
        cache_dir=cache_dir,
        scheduler=args.scheduler,
        lesion_only=not args.include_normal,
    )
    paths = write_radiomics(result, out, extra_failures=cohort.failures)
    s = result.summary()
    left_out = len(cohort) - s["cases"]
    print(
        f"radiomics ({s['params']}, {s['features']} features): "
        f"{s['extracted']} of {s['cases']} cases extracted"
        + (f", {left_out} without a lesion left out" if left_out else "")
        + f"; {s['cache_hits']} from the cache, {s['cache_misses']} computed in {s['seconds']:.1f} s"
    )
    failed = len(cohort.failures) + len(result.failures)
    if failed:
        print(f"  {failed} case(s) failed (reasons above), listed in {paths['failures']}")
    if len(result.nonfinite):
        print(f"  {len(result.nonfinite)} feature(s) have NaN or infinite values: see {paths['quality']}")
    if result.constant:
        print(
            f"  {len(result.constant)} feature(s) are constant across the cases and cannot be correlated "
            f"(e.g. {result.constant[0]}): see {paths['quality']}"
        )
    extras = ", ".join(p.name for role, p in side_files(out).items() if role != "features")
    print(f"wrote {out} (and {extras})")
    if s["extracted"] == 0:
        raise Rad4XCNNError(f"no case gave radiomic features; the reasons are in {paths['failures']}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    import pandas as pd

    from Rad4XCNNLogic.cohort.manifest import read_manifest
    from Rad4XCNNLogic.explain.correlation import read_feature_table
    from Rad4XCNNLogic.explain.explanation import (
        explain,
        rank_by_importance,
        replicate,
        write_explanation,
        write_replicability,
    )
    from Rad4XCNNLogic.infra.storage import write_csv_atomic

    deep = read_feature_table(args.deep, "deep-feature")
    radiomics = read_feature_table(args.radiomics, "radiomics")
    importances = None
    if args.importances:
        if not Path(args.importances).is_file():
            raise Rad4XCNNError(f"importances table not found: {args.importances}")
        importances = pd.read_csv(args.importances)
    groups = None
    if args.cohorts:
        cohort = read_manifest(args.cohorts, check_files=False, assign_split=False)
        groups = pd.Series({case.case_id: case.cohort for case in cohort.cases}, dtype=object)
    result = explain(
        deep,
        radiomics,
        args.threshold,
        fdr=args.fdr,
        permutations=args.permutations,
        alpha=args.alpha,
        bootstrap=args.bootstrap,
        seed=args.seed,
        backend=args.backend,
        chunk_size=args.chunk_size,
        progress=args.verbosity >= 0,
    )
    out = Path(args.out)
    written = write_explanation(result, out)
    summary = result.summary()
    rule = f"|rho| >= {args.threshold:.2f}" + (f" and q <= {args.fdr:g}" if args.fdr is not None else "")
    n_left = len(result.dropped_cases)
    print(
        f"{summary['n_cases']} cases ({n_left} left out), {summary['n_deep_features']} deep x "
        f"{summary['n_radiomic_features']} radiomic features; {len(result.correlations)} pairs with {rule}"
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
            f"  permutation test ({args.permutations} shuffles): |rho| > {result.permutation_threshold:.3f} "
            f"keeps the family-wise error at {args.alpha:g}; suggested M >= {result.suggested_M:.2f}"
        )
    if importances is not None:
        ranked = rank_by_importance(result, importances, classifier=args.classifier)
        written["by_importance"] = write_csv_atomic(out / "explanations_by_importance.csv", ranked)
        top = ranked.head(args.top)
        print(
            f"  of the {len(top)} most important deep features, {int((top['status'] == 'explained').sum())} "
            "are explained"
        )
    if groups is not None:
        rep = replicate(deep, radiomics, groups, args.threshold, fdr=args.fdr, backend=args.backend)
        written.update(write_replicability(rep, out))
        for row in rep.summary.itertuples():
            print(
                f"  replicability {row.cohort_a} -> {row.cohort_b}: {row.n_replicated} of {row.n_kept_a} "
                f"pairs hold in both; rho agreement r = {row.rho_agreement:.2f}"
            )
    print(f"wrote {', '.join(sorted(p.name for p in written.values()))} to {out}")
    return 0


def _print_run(result) -> int:
    failures = result.failures
    print(f"\nrun folder: {result.out}")
    if result.report.is_file():
        print(f"report:     {result.report}")
    if failures:
        print(f"{len(failures)} case failure(s), listed in run.json and the report")
    for record in result.failed_stages:
        print(f"stage {record.name} failed: {record.error}", file=sys.stderr)
    if result.failed_stages:
        print(
            "the outputs of the stages before it are kept; fix the cause and run again to continue",
            file=sys.stderr,
        )
    return 0 if result.ok else 1


def _run_overrides(args: argparse.Namespace) -> dict:
    overrides: dict = {}
    for key in ("manifest", "out", "seed", "device"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if args.model:
        weights = args.weights or []
        if len(weights) > len(args.model):
            raise Rad4XCNNError("more --weights than --model: give one --weights per --model, in order")
        overrides["models"] = [
            {"name": name, "weights": weights[i] if i < len(weights) and weights[i] != "none" else None}
            for i, name in enumerate(args.model)
        ]
    elif args.weights:
        raise Rad4XCNNError("--weights needs --model")
    sections = {
        "radiomics": {"params": args.radiomics_params, "jobs": args.jobs},
        "explain": {
            "thresholds": args.threshold,
            "fdr": args.fdr,
            "permutations": args.permutations,
            "bootstrap": args.bootstrap,
        },
        "training": {"epochs": args.epochs, "pretrained": args.pretrained},
        "classification": {"enabled": False if args.no_classify else None},
        "cam": {"enabled": False if args.no_cam else None},
    }
    for section, values in sections.items():
        values = {k: v for k, v in values.items() if v is not None}
        if values:
            overrides[section] = values
    return overrides


def cmd_run(args: argparse.Namespace) -> int:
    from Rad4XCNNLogic.run.config import load_config, reference_yaml
    from Rad4XCNNLogic.run.runner import run_pipeline

    if args.print_config:
        print(reference_yaml(), end="")
        return 0
    config = load_config(args.config, _run_overrides(args))
    result = run_pipeline(config, progress=args.verbosity >= 0, force=args.force)
    return _print_run(result)


def cmd_demo(args: argparse.Namespace) -> int:
    import json

    from Rad4XCNNLogic.cohort.synthetic import make_synthetic_cohort
    from Rad4XCNNLogic.run.runner import demo_config, run_pipeline

    out = Path(args.out)
    cohort_dir = out / "cohort"
    spec = {"n": args.n, "n_external": args.external, "seed": args.seed, "separation": DEMO_SEPARATION}
    spec_file = cohort_dir / "synthetic.json"
    try:
        written = json.loads(spec_file.read_text(encoding="utf-8"))
        same = all(written.get(k) == v for k, v in spec.items())
    except (OSError, ValueError):
        same = False
    manifest = cohort_dir / "manifest.csv"
    if not (same and manifest.is_file()):
        print(f"writing the synthetic cohort ({args.n} + {args.external} external cases) to {cohort_dir}")
        manifest = make_synthetic_cohort(
            cohort_dir, args.n, seed=args.seed, n_external=args.external, separation=DEMO_SEPARATION
        )
    config = demo_config(out / "run", manifest, args.seed)
    result = run_pipeline(config, progress=args.verbosity >= 0, force=args.force)
    code = _print_run(result)
    if result.report.is_file():
        print(f"open {result.report} in a browser to read the explanation")
    return code


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 5.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 5, got {value}")
    return value


def _print_failures(failures, what: str) -> None:
    if failures:
        print(f"{len(failures)} case(s) left out of {what}:")
        for failure in failures:
            print(f"  {failure}")


def cmd_deep(args: argparse.Namespace) -> int:
    from Rad4XCNNLogic.cohort.manifest import read_manifest
    from Rad4XCNNLogic.features.deep import extract_deep_features, write_deep_features

    if args.model is None and args.weights is None:
        raise Rad4XCNNError(
            "give --model NAME (a timm name such as resnet50), or --weights with a checkpoint"
        )
    cohort = read_manifest(args.manifest, seed=args.seed)
    result = extract_deep_features(
        cohort,
        args.model,
        args.weights,
        device=args.device,
        batch_size=args.batch_size,
        num_workers=args.workers,
        margin=args.margin,
        input_size=args.input_size,
        stage=args.stage,
        dtype=args.dtype,
        include_normal=args.include_normal,
        cache_dir=args.cache,
        progress=not args.no_progress and args.verbosity >= 0,
        seed=args.seed,
    )
    out = write_deep_features(result, args.out)
    s = result.settings
    weights = s["weights"]
    source = {
        "random": f"random initialisation (seed {weights['seed']}): NOT a trained model",
        "imagenet": f"ImageNet ({weights['tag']})",
        "file": f"{weights['path']} (sha256 {str(weights['sha256'])[:12]})",
    }[weights["source"]]
    print(f"wrote {out}: {len(result.features)} cases x {s['feature_dim']} features of {s['model']}")
    print(f"  weights: {source}")
    print(
        f"  {s['device']}, {s['dtype']}, batch {s['batch_size_used']}, "
        f"input {s['preprocess']['input_size']} px, margin {s['preprocess']['margin']}; "
        f"{result.cache_hits} from the cache, {result.computed} computed "
        f"in {s['seconds']:.1f} s"
    )
    _print_failures(cohort.failures + result.failures, "the deep features")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from Rad4XCNNLogic.cohort.manifest import DEFAULT_COHORT, read_manifest
    from Rad4XCNNLogic.features.training import train_model

    if args.model is None and args.weights is None:
        raise Rad4XCNNError(
            "give --model NAME (a timm name such as resnet50), or --weights with a checkpoint"
        )
    cohort = read_manifest(args.manifest, seed=args.seed, train_cohort=args.cohort or DEFAULT_COHORT)
    result = train_model(
        cohort,
        args.model,
        epochs=args.epochs,
        device=args.device,
        out=args.out,
        weights=args.weights,
        batch_size=args.batch_size,
        lr=args.lr,
        patience=args.patience,
        input_size=args.input_size,
        margin=args.margin,
        augment=not args.no_augment,
        train_cohort=args.cohort,
        val_fraction=args.val_fraction,
        include_normal=args.include_normal,
        num_workers=args.workers,
        dtype=args.dtype,
        seed=args.seed,
        progress=not args.no_progress and args.verbosity >= 0,
    )
    s = result.settings
    print(
        f"wrote {result.checkpoint}: {s['model']} for {', '.join(result.class_names)}, best validation AUC "
        f"{result.best_val_auc:.4f} at epoch {result.best_epoch} of {len(result.history)} "
        f"({s['train_cases']} train / {s['val_cases']} val cases, {s['seconds']:.0f} s on {s['device']})"
    )
    if s["base_weights"]["random_init"]:
        print("  started from random weights (no --weights): expect less than with --weights imagenet")
    _print_failures(cohort.failures + result.failures, "training")
    return 0


def cmd_cam(args: argparse.Namespace) -> int:
    from Rad4XCNNLogic.cam.maps import compute_cams
    from Rad4XCNNLogic.cohort.manifest import read_manifest

    if args.model is None and args.weights is None:
        raise Rad4XCNNError("give --weights with a checkpoint of 'rad4xcnn train' (or --model NAME)")
    cohort = read_manifest(args.manifest, seed=args.seed)
    if args.split:
        cohort = cohort.subset(split=args.split)
    result = compute_cams(
        cohort,
        args.weights,
        model=args.model,
        methods=args.methods,
        cases=args.cases,
        target_class=args.target_class,
        target_layer=args.target_layer,
        device=args.device,
        batch_size=args.batch_size,
        pointing_tolerance=args.tolerance,
        out_dir=args.out,
        seed=args.seed,
        progress=not args.no_progress and args.verbosity >= 0,
    )
    s = result.settings
    folder = Path(args.out) / "cam"
    print(
        f"wrote {s['maps']} maps of {s['cases']} case(s) to {folder} ({s['model']}, "
        f"layer {s['target_layer']}, {s['device']}, {s['seconds']:.1f} s)"
    )
    if not s["task_classifier"]:
        print("  the model has no classifier trained for the task: the maps are not meaningful for it")
    summary = result.summary()
    if not summary.empty:
        print("  method        pointing game   energy in lesion (chance)   empty maps")
        for method, row in summary.iterrows():
            print(
                f"  {method:<12}  {row['pointing_game']:>13.3f}   {row['energy_inside']:>16.3f} "
                f"({row['energy_chance']:.3f})   {int(row['empty_maps']):>10d}"
            )
    agreement = result.agreement_summary()
    if not agreement.empty:
        iou = next(c for c in agreement.columns if c.endswith("_iou"))
        share = round(100 * s["top_fraction"])
        print(f"  agreement between methods (mean over cases): Spearman, top-{share}% IoU")
        for (a, b), row in agreement.iterrows():
            print(f"  {a} vs {b}: {row['spearman']:.3f}, {row[iou]:.3f}")
    _print_failures(cohort.failures + result.failures, "the saliency maps")
    return 0


def cmd_case(args: argparse.Namespace) -> int:
    """One case against a finished run: its radiomic features with the run's own parameters, and its CAM;
    the 3D Slicer module runs this in the background."""
    from Rad4XCNNLogic.cohort.manifest import read_manifest
    from Rad4XCNNLogic.features.radiomics import extract_radiomics, write_radiomics
    from Rad4XCNNLogic.run.results import case_radiomics_params

    cohort = read_manifest(args.manifest)
    if cohort.failures:
        raise Rad4XCNNError(str(cohort.failures[0]))
    if len(cohort) != 1:
        raise Rad4XCNNError(f"a case manifest holds one case; {args.manifest} holds {len(cohort)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    params = case_radiomics_params(args.run, args.radiomics_params, out)
    result = extract_radiomics(cohort, params, jobs=1, cache_dir=None, lesion_only=False)
    if result.failures:
        raise Rad4XCNNError(str(result.failures[0]))
    write_radiomics(result, out / "radiomics.csv")
    case = cohort.cases[0]
    print(
        f"case {case.case_id}: {result.features.shape[1]} radiomic features in {out / 'radiomics.csv'} "
        f"(parameters: {params})"
    )
    if args.cam:
        from Rad4XCNNLogic.cam.maps import compute_cams

        # writes <out>/cam/<case>_<method>.nrrd in the image's geometry, which the module overlays
        cams = compute_cams(
            cohort,
            args.weights,
            model=args.model,
            methods=[args.cam],
            device=args.device,
            out_dir=out,
            progress=args.verbosity >= 0,
        )
        if cams.failures:
            raise Rad4XCNNError(str(cams.failures[0]))
        print(f"case {case.case_id}: {args.cam} map in {out / 'cam'}")
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
    from Rad4XCNNLogic.classify.classifiers import (
        classify,
        read_explained,
        read_feature_tables,
        write_classification,
    )
    from Rad4XCNNLogic.cohort.manifest import read_manifest

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

    device_help = "auto (CUDA, else MPS, else CPU), cpu, cuda[:N] or mps (default auto)"
    weights_help = (
        "imagenet (timm's weights; needs network once), a state dict file (.pth/.safetensors), or a "
        "checkpoint of 'rad4xcnn train'; none: random weights (seed), for testing only"
    )
    p = sub.add_parser(
        "deep",
        help="extract deep features (one pooled vector per lesion) with a timm backbone",
        description="Crop each lesion, run it through the backbone and write deep_features.csv.",
    )
    p.add_argument("--manifest", required=True, help="cohort manifest CSV")
    p.add_argument("--model", help="timm model name, e.g. resnet50, densenet121, vit_base_patch16_224")
    p.add_argument("--weights", help=weights_help)
    p.add_argument("--device", default="auto", help=device_help)
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    p.add_argument("--batch-size", type=_positive_int, default=32, help="images per batch (default 32)")
    p.add_argument("--workers", type=int, help="image-decoding processes (default: by device)")
    p.add_argument("--margin", type=_fraction, help="crop margin, fraction of the lesion size (default 0.1)")
    p.add_argument("--input-size", type=_positive_int, help="model input size (default: the model's)")
    p.add_argument("--stage", type=int, help="pool this intermediate stage instead of the final features")
    p.add_argument("--include-normal", action="store_true", help="keep cases without a lesion (whole image)")
    p.add_argument("--cache", metavar="DIR", help="cache folder: reruns reuse finished cases")
    p.add_argument("--seed", type=int, default=0, help="seed of random weights and of missing splits")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, help="deep_features.csv to write")
    p.set_defaults(func=cmd_deep)

    p = sub.add_parser(
        "train",
        help="fine-tune a backbone on the manifest's train split, validating on val",
        description=(
            "Transfer learning with ultrasound augmentation, class-weighted loss, AdamW and early stopping "
            "on the validation AUC. Two-phase protocol: train on one cohort, then --weights PHASE1.pt "
            "--cohort OTHER."
        ),
    )
    p.add_argument("--manifest", required=True, help="cohort manifest CSV")
    p.add_argument("--model", help="timm model name (default: the --weights checkpoint's)")
    p.add_argument("--weights", help="starting weights: " + weights_help)
    p.add_argument("--epochs", type=_positive_int, default=30, help="at most this many epochs (default 30)")
    p.add_argument("--patience", type=_positive_int, default=8, help="early-stopping patience (default 8)")
    p.add_argument("--device", default="auto", help=device_help)
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    p.add_argument("--batch-size", type=_positive_int, default=32, help="default 32")
    p.add_argument("--lr", type=float, default=3e-4, help="AdamW learning rate (default 3e-4)")
    p.add_argument("--input-size", type=_positive_int, help="model input size (default: the model's)")
    p.add_argument("--margin", type=_fraction, help="crop margin, fraction of the lesion size (default 0.1)")
    p.add_argument("--cohort", help="train and validate on this cohort only (default: every train/val case)")
    p.add_argument("--val-fraction", type=float, default=0.15, help="val share of train when no val split")
    p.add_argument("--no-augment", action="store_true", help="no data augmentation")
    p.add_argument("--include-normal", action="store_true", help="keep cases without a lesion (whole image)")
    p.add_argument("--workers", type=int, help="image-decoding processes (default: by machine)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, help="checkpoint to write, e.g. model.pt")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "radiomics",
        help="compute PyRadiomics features for every lesion case of a manifest",
        description="Radiomic features (PyRadiomics) of every lesion case, in parallel, cached and "
        "resumable; writes radiomics.csv and its side files (diagnostics, failures, quality, settings).",
    )
    p.add_argument("--manifest", required=True, help="the cohort manifest CSV")
    p.add_argument("--out", required=True, help="features CSV to write (e.g. run/radiomics.csv)")
    p.add_argument(
        "--params",
        default="paper",
        help="'paper' (474 features: shape2D, original, 4 wavelet sub-bands; default), 'extended' "
        "(adds LoG and other filters) or a PyRadiomics YAML file",
    )
    p.add_argument(
        "--jobs", type=_positive_int, help="worker processes (default: all cores; not with --scheduler)"
    )
    p.add_argument(
        "--scheduler", metavar="ADDR", help="run the cases on this Dask scheduler (tcp://host:8786)"
    )
    p.add_argument(
        "--cache-dir", help="on-disk cache of per-case results (default: OUT's folder/.rad4xcnn_cache)"
    )
    p.add_argument("--no-cache", action="store_true", help="compute every case, read and write no cache")
    p.add_argument(
        "--include-normal",
        action="store_true",
        help="also try cases with has_lesion=false (empty masks fail)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the split for cases without one")
    p.set_defaults(func=cmd_radiomics)

    p = sub.add_parser(
        "explain",
        help="explain deep features by correlated radiomic features (Spearman, |rho| >= M)",
        description=(
            "Correlate every deep feature with every radiomic feature (Spearman's rho over the cases in "
            "both tables) and explain each deep feature by the radiomic features with |rho| >= M. Writes "
            "correlations.csv, explanations.csv, coverage.csv, explanation.json and the rho/p/q matrices."
        ),
    )
    p.add_argument("--deep", required=True, help="deep_features.csv (case_id x deep features)")
    p.add_argument("--radiomics", required=True, help="radiomics.csv (case_id x radiomic features)")
    p.add_argument("--threshold", "-M", type=_unit_interval, default=0.6, help="M, the smallest |rho| (0.6)")
    p.add_argument("--fdr", type=_unit_interval, help="also require a Benjamini-Hochberg q-value <= this")
    p.add_argument("--permutations", type=_count, default=0, help="case shuffles for the max-|rho| null (0)")
    p.add_argument("--alpha", type=_unit_interval, default=0.05, help="family-wise error level (0.05)")
    p.add_argument("--bootstrap", type=_count, default=200, help="resamples for rho intervals (200; 0: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of permutations and bootstrap (0)")
    p.add_argument("--cohorts", metavar="MANIFEST", help="manifest with a cohort column: replicability")
    p.add_argument("--importances", metavar="CSV", help="importances.csv: explain important features first")
    p.add_argument("--classifier", help="the classifier whose importances to use (default: all, averaged)")
    p.add_argument("--top", type=_positive_int, default=20, help="important features to report (20)")
    p.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "numpy", "torch", "torch:cpu", "torch:cuda"),
        help="auto: torch on a GPU when present, else numpy",
    )
    p.add_argument("--chunk-size", type=_positive_int, help="deep features per chunk (default: by memory)")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser(
        "cam",
        help="saliency maps (Grad-CAM, EigenCAM, ScoreCAM, ...) in image geometry, with their metrics",
        description=(
            "Compute class activation maps of a trained model on each case's lesion crop, map them back onto "
            "the image (NRRD in the image's size, spacing and origin, and a PNG overlay) and measure them: "
            "the CAM energy inside the lesion, the pointing game, and the agreement between methods "
            "(Spearman correlation, top-20% IoU); writes OUT/cam/. Cost: ScoreCAM runs one forward pass "
            "per channel of the target layer for every case (2048 for ResNet50's last stage, 1024 for "
            "DenseNet121, 768 for ViT-B, 512 for ResNet18), --batch-size at a time: hundreds of times "
            "Grad-CAM's cost."
        ),
    )
    p.add_argument("--manifest", required=True, help="cohort manifest CSV")
    p.add_argument(
        "--weights",
        help="checkpoint of 'rad4xcnn train' (the model with its trained classifier); with --model also "
        "imagenet or a state dict file, whose maps explain ImageNet's classes, not the task",
    )
    p.add_argument("--model", help="timm model name (default: the checkpoint's)")
    p.add_argument(
        "--methods",
        default="gradcam,eigencam,scorecam",
        help="comma-separated: gradcam, gradcam++, xgradcam, hirescam, layercam, eigencam, eigengradcam, "
        "scorecam (default gradcam,eigencam,scorecam)",
    )
    p.add_argument("--cases", help="comma-separated case ids (default: every case)")
    p.add_argument("--split", choices=("train", "val", "test"), help="only the cases of this split")
    p.add_argument("--target-class", help="the class explained, by name (default: each case's prediction)")
    p.add_argument(
        "--target-layer",
        help="dotted module name, e.g. layer4.1 or layer4[-1] (default: layer4[-1] for ResNets, "
        "features.norm5 for DenseNets, blocks[-1].norm1 for ViTs)",
    )
    p.add_argument("--device", default="auto", help=device_help)
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=32,
        help="images per forward pass: cases for Grad-CAM and EigenCAM, masked inputs for ScoreCAM "
        "(default 32)",
    )
    p.add_argument(
        "--tolerance", type=float, default=0.0, help="pointing game: pixels around the lesion that count"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of missing splits (and of random weights)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, help="output folder; the maps and tables go to OUT/cam/")
    p.set_defaults(func=cmd_cam)

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
        "run",
        help="run the whole pipeline (config file and/or flags) into a run folder",
        description="Cohort -> fine-tuning -> deep features -> radiomics -> explanation -> classification -> "
        "CAMs -> report, in one run folder; a re-run recomputes only what changed. Settings come from "
        "CONFIG (see --print-config for every setting and its default), then from the flags.",
    )
    p.add_argument("config", nargs="?", help="YAML configuration file")
    p.add_argument(
        "--print-config", action="store_true", help="print every setting with its default and exit"
    )
    p.add_argument("--manifest", help="cohort manifest CSV")
    p.add_argument("--out", help="run folder")
    p.add_argument("--model", action="append", help="timm backbone (repeat for several)")
    p.add_argument(
        "--weights",
        action="append",
        help="weights of each --model, in order: none, imagenet, trained (fine-tune here) or a file",
    )
    p.add_argument("--radiomics-params", help="paper, extended or a PyRadiomics YAML file")
    p.add_argument("--threshold", "-M", action="append", type=_unit_interval, help="M (repeat for several)")
    p.add_argument("--fdr", type=_unit_interval, help="also require q <= this")
    p.add_argument("--permutations", type=_count, help="permutations of the max-|rho| null")
    p.add_argument("--bootstrap", type=_count, help="bootstrap resamples for rho intervals")
    p.add_argument("--epochs", type=_positive_int, help="fine-tuning epochs")
    p.add_argument(
        "--pretrained",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="fine-tune from ImageNet weights (default) or, with --no-pretrained, from random initialisation",
    )
    p.add_argument("--jobs", type=_positive_int, help="radiomics worker processes")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument("--seed", type=int)
    p.add_argument("--no-classify", action="store_true", help="skip the classifiers")
    p.add_argument("--no-cam", action="store_true", help="skip the saliency maps")
    p.add_argument("--force", action="store_true", help="recompute every stage")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "demo",
        help="run the whole pipeline on the built-in synthetic cohort (a few minutes on a laptop)",
        description="Write the synthetic demo cohort (if not there yet) and run the whole pipeline on it: "
        "a ResNet18 fine-tuned on the cohort, compared with the same network left random.",
    )
    p.add_argument("--out", default="demo_run", help="output folder (default ./demo_run)")
    p.add_argument("--n", type=_positive_int, default=120, help="internal cases (default 120)")
    p.add_argument("--external", type=int, default=40, help="external cases (default 40)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="recompute every stage")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser(
        "case",
        help="compute one case's radiomic features (and CAM) against a finished run",
        description="For the 3D Slicer module: the radiomic features of the one case of MANIFEST, with the "
        "radiomics parameters of the run folder RUN (so that they compare with its cohort), written to OUT.",
    )
    p.add_argument("--manifest", required=True, help="a manifest with one case")
    p.add_argument("--run", help="the cohort's run folder (its radiomics settings are reused)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--radiomics-params", default="paper", help="preset or YAML file when the run folder records none"
    )
    p.add_argument("--model", default="resnet50", help="backbone of the CAM (timm name)")
    p.add_argument("--weights", help="weights of the CAM's network: imagenet or a checkpoint file")
    p.add_argument("--cam", help="CAM method (gradcam, eigencam, ...)")
    p.add_argument("--device", default="auto", help="where the network runs (auto, cpu, cuda)")
    p.set_defaults(func=cmd_case)
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
