"""The ``featuremaps`` command: voxel-based radiomic feature maps of some cases (named features, or those that
explain a run's most important deep features), with their agreement with the cases' CAMs; its flags are
shared with ``case``."""

from __future__ import annotations

import argparse
from pathlib import Path

from Rad4XCNNLogic.cam.settings import DEFAULT_KERNEL_RADIUS
from Rad4XCNNLogic.cli.options import print_failures
from Rad4XCNNLogic.errors import UsageError


def add_featuremap_flags(p: argparse.ArgumentParser, with_run: bool = True) -> None:
    """The feature-map flags: ``--features``, ``--from-run`` (with ``with_run``), ``--top``,
    ``--kernel-radius``, ``--jobs``."""
    p.add_argument(
        "--features",
        metavar="NAMES",
        help="PyRadiomics feature names, comma-separated (e.g. original_glcm_Contrast,"
        "original_firstorder_Mean); shape features have no voxel-based form and are skipped",
    )
    if with_run:
        p.add_argument(
            "--from-run",
            metavar="RUN",
            help="a run folder: map the radiomic features explaining its --top most important deep features",
        )
    p.add_argument(
        "--top",
        type=int,
        default=5,
        metavar="K",
        help="with a run: the K most important deep features (classifier importances) (default: 5)",
    )
    p.add_argument(
        "--kernel-radius",
        type=int,
        default=DEFAULT_KERNEL_RADIUS,
        metavar="R",
        help="each pixel's value is the feature of the (2R+1) x (2R+1) lesion pixels around it "
        f"(default: {DEFAULT_KERNEL_RADIUS}: 5 x 5); a kernel larger than a lesion fails that case",
    )
    p.add_argument("--jobs", type=int, default=1, help="worker processes, one (case, feature) map each")


def print_feature_maps(result, out: Path) -> None:
    """What the feature maps gave, for people."""
    s = result.settings
    print(
        f"wrote {len(result.table)} feature map(s) of {result.table['case_id'].nunique()} case(s) to {out} "
        f"(kernel {s['kernel']}, parameters {s['params']}, {s['seconds']:.1f} s)"
    )
    for name in result.skipped:
        print(f"  skipped {name}: a shape feature has no voxel-based form")
    if len(result.agreement):
        print("  agreement with the CAMs inside the lesion (Spearman, mean over cases):")
        mean = result.agreement.groupby(["feature", "method"], sort=False)["spearman"].mean()
        for (feature, method), rho in mean.items():
            print(f"  {feature} vs {method}: {rho:+.3f}")
    print_failures(result.failures, "the feature maps")


def features_to_map(features, run, top: int):
    """(features, pairs): the named features, or those that explain the run's ``top`` most important deep
    features (with the pairs that chose them)."""
    if features:
        return features, None
    from Rad4XCNNLogic.run.results import features_from_run

    return features_from_run(run, top)


def cmd_featuremaps(args: argparse.Namespace) -> int:
    from Rad4XCNNLogic.cam.featuremaps import compute_feature_maps
    from Rad4XCNNLogic.cohort.manifest import read_manifest

    if not args.features and not args.from_run:
        raise UsageError("name the radiomic features (--features), or give a run (--from-run RUN --top K)")
    cohort = read_manifest(args.manifest)
    out = Path(args.out)
    features, pairs = features_to_map(args.features, args.from_run, args.top)
    result = compute_feature_maps(
        cohort,
        features,
        cases=args.cases,
        from_run=args.from_run,
        top=args.top,
        pairs=pairs,
        params=args.params,
        kernel_radius=args.kernel_radius,
        cam_dir=args.cams,
        out_dir=out,
        jobs=args.jobs,
    )
    print_feature_maps(result, out)
    return 0


def register(sub, parents: dict) -> None:
    p = sub.add_parser(
        "featuremaps",
        help="voxel-based radiomic feature maps (NRRD in image geometry) and their agreement with the CAMs",
        description=(
            "PyRadiomics' voxel-based extraction of the named radiomic features, or of those that explain a "
            "run's K most important deep features: one NRRD per case and feature in the input image's "
            "geometry (size, spacing, origin, direction), values inside the lesion, 0 outside. With CAMs "
            "(--cams, or the run's cam/ folder) the Spearman agreement inside the lesion between each "
            "feature map and each CAM is written to OUT/featuremap_agreement.csv. Cost: one small-window "
            "extraction per lesion pixel; texture features take seconds per feature for a 100 x 100 pixel "
            "lesion on one core."
        ),
    )
    p.add_argument("--manifest", required=True, help="the cohort manifest CSV")
    p.add_argument("--cases", help="case ids, comma-separated (default: every case)")
    add_featuremap_flags(p)
    p.add_argument(
        "--params", default="paper", help="radiomics preset (paper, extended) or PyRadiomics YAML file"
    )
    p.add_argument("--cams", metavar="DIR", help="a CAM folder (default: RUN/cam with --from-run)")
    p.add_argument("--out", required=True, help="output folder for the maps and tables")
    p.set_defaults(func=cmd_featuremaps)
