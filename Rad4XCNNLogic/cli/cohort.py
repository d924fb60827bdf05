"""Commands on cohorts: ``synth`` (the synthetic cohort), ``import-busi`` and ``cohort`` (check a
manifest)."""

from __future__ import annotations

import argparse
from pathlib import Path

from Rad4XCNNLogic.cli.options import add_setting, config_from_args, value
from Rad4XCNNLogic.errors import UsageError


def _shape(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        sizes = ()
    if len(sizes) not in (2, 3):
        raise argparse.ArgumentTypeError(
            f"expected ROWSxCOLS such as 256x320 (or ROWSxCOLSxSLICES for --dims 3), got {text!r}"
        )
    return sizes


def _spacing(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected three positive numbers X,Y,Z in mm, got {text!r}")
    return values  # type: ignore[return-value]


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a number of at least {minimum}, got {value}")
        return value

    return parse


def cmd_synth(args: argparse.Namespace) -> int:
    from Rad4XCNNLogic.cohort.manifest import format_summary, read_manifest
    from Rad4XCNNLogic.cohort.synthetic import make_synthetic_cohort

    seed = value(args, "seed")
    if args.dims == 3:
        manifest = _synth_volumes(args, seed)
    elif len(args.shape or ()) == 3 or args.spacing is not None:
        raise UsageError("--shape ROWSxCOLSxSLICES and --spacing are for volumes: add --dims 3")
    else:
        manifest = make_synthetic_cohort(
            args.out,
            args.n,
            seed=seed,
            n_external=args.external,
            malignant_fraction=args.malignant_fraction,
            normal_fraction=args.normal_fraction,
            shape=args.shape or (256, 320),
            separation=args.separation,
            fmt=args.format,
        )
    cohort = read_manifest(manifest, seed=seed)
    print(f"wrote {len(cohort)} synthetic cases to {Path(args.out)}")
    print(f"  manifest: {manifest}\n  factors:  {Path(args.out) / 'factors.csv'}")
    print(format_summary(cohort))
    return 0


def _synth_volumes(args: argparse.Namespace, seed: int) -> Path:
    from Rad4XCNNLogic.cohort.synthetic3d import DEFAULT_SHAPE_3D, DEFAULT_SPACING_3D, make_synthetic_volumes

    shape = args.shape or DEFAULT_SHAPE_3D
    if len(shape) != 3:
        raise UsageError(f"--dims 3 needs --shape ROWSxCOLSxSLICES, e.g. 64x64x32; got {len(shape)} sizes")
    if args.format != "png":
        raise UsageError("--dims 3 writes NRRD volumes; leave out --format")
    return make_synthetic_volumes(
        args.out,
        args.n,
        seed=seed,
        n_external=args.external,
        malignant_fraction=args.malignant_fraction,
        normal_fraction=args.normal_fraction,
        shape=shape,
        spacing=args.spacing or DEFAULT_SPACING_3D,
        separation=args.separation,
    )


def cmd_import_busi(args: argparse.Namespace) -> int:
    from Rad4XCNNLogic.cohort.busi import import_busi
    from Rad4XCNNLogic.cohort.duplicates import find_near_duplicates, format_duplicates
    from Rad4XCNNLogic.cohort.grouping import format_conflicts, label_conflicts, near_duplicate_clusters
    from Rad4XCNNLogic.cohort.manifest import format_summary

    result = import_busi(args.folder, args.out)
    cohort = result.cohort
    print(
        f"wrote {args.out}: {len(cohort)} cases "
        f"({sum(not c.has_lesion for c in cohort)} without a lesion, flagged has_lesion=false; "
        f"{len(result.multi_mask_cases)} with several masks, joined with ';' and merged as their union)"
    )
    print("\n".join(result.describe()))
    print(format_summary(cohort))
    # no split yet: every pair may end up on two sides; the run keeps each cluster on one side
    pairs, _ = find_near_duplicates(
        cohort.cases, max_distance=value(args, "split.duplicate_distance"), warn=False
    )
    if pairs:
        clusters = len(set(near_duplicate_clusters(pairs).values()))
        print(
            f"{len(pairs)} near-duplicate pair(s) in {clusters} cluster(s); a run keeps each cluster on one "
            "side of the split (split.group_duplicates)"
        )
    print(format_duplicates(pairs, limit=20, every_pair=True))
    conflicts = format_conflicts(label_conflicts(pairs, cohort.cases), cohort.cases)
    if conflicts:
        print("\n".join(conflicts))
        print("  -> a run handles them as split.label_conflicts says")
    return 0


def cmd_cohort(args: argparse.Namespace) -> int:
    from Rad4XCNNLogic.cohort.grouping import format_grouping, group_and_split
    from Rad4XCNNLogic.cohort.manifest import format_summary, read_manifest, write_manifest

    cfg = config_from_args(args)
    split = cfg.split
    if args.no_duplicates:
        cohort = read_manifest(
            args.manifest,
            check_images=args.check_images,
            seed=cfg.seed,
            fractions=split.fractions,
            train_cohort=split.train_cohort,
        )
        print(format_summary(cohort))
    else:
        # the run's split: near-duplicates and patients kept whole, label conflicts as split.label_conflicts
        unsplit = read_manifest(args.manifest, check_images=args.check_images, assign_split=False)
        grouping = group_and_split(unsplit, split, seed=cfg.seed)
        cohort = grouping.cohort
        print(format_summary(cohort))
        if cohort.dims == 3:
            print("near-duplicate images: not checked (the check reads 2D images; these are 3D volumes)")
        else:
            print(format_grouping(grouping, unsplit.cases))
    if args.write:
        write_manifest(cohort, args.write)
        print(f"wrote the manifest with its splits to {args.write}")
    return 1 if (args.strict and cohort.failures) else 0


def register(sub, parents: dict) -> None:
    p = sub.add_parser(
        "synth",
        parents=[parents["seed"]],
        help="write a synthetic breast-ultrasound cohort with planted class factors",
        description="Write images, masks, manifest.csv and factors.csv of a synthetic cohort.",
    )
    p.add_argument("--n", type=_count(1), default=200, help="internal cases (default 200)")
    p.add_argument("--external", type=_count(0), default=0, help="cases of an external cohort (default 0)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--shape",
        type=_shape,
        default=None,
        help="image size ROWSxCOLS (default 256x320); with --dims 3 ROWSxCOLSxSLICES (default 64x64x32)",
    )
    p.add_argument(
        "--dims",
        type=int,
        choices=(2, 3),
        default=2,
        help="2: ultrasound-like images (default); 3: CT-like NRRD volumes with planted lesion volume, "
        "sphericity and texture",
    )
    p.add_argument(
        "--spacing",
        type=_spacing,
        default=None,
        help="voxel spacing X,Y,Z in mm for --dims 3 (default 0.8,0.8,2)",
    )
    p.add_argument("--malignant-fraction", type=float, default=0.4, help="default 0.4")
    p.add_argument("--normal-fraction", type=float, default=0.0, help="cases without lesion (default 0)")
    p.add_argument("--separation", type=float, default=1.0, help="0-1, how distinct the classes are")
    p.add_argument("--format", choices=("png", "nrrd"), default="png", help="image format (default png)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser(
        "import-busi",
        help="write a manifest for a folder in the BUSI layout",
        description="Pair BUSI images with their masks (benign/, malignant/, normal/), in BUSI's own layout "
        "or with images/ and masks/ sub-folders per class, and list the near-duplicates and label conflicts.",
    )
    p.add_argument("folder", help="the BUSI folder holding benign/, malignant/ and normal/")
    p.add_argument("--out", required=True, help="manifest CSV to write")
    add_setting(p, "split.duplicate_distance", "--duplicate-distance")
    p.set_defaults(func=cmd_import_busi)

    p = sub.add_parser(
        "cohort",
        parents=[parents["seed"]],
        help="check a manifest and summarise its cases",
        description="Validate a manifest, assign missing splits and print a summary.",
    )
    p.add_argument("manifest")
    p.add_argument("--check-images", action="store_true", help="read every image and mask")
    p.add_argument("--write", metavar="CSV", help="write the manifest with the assigned splits")
    p.add_argument("--strict", action="store_true", help="exit 1 if any case was left out")
    p.add_argument(
        "--no-duplicates",
        action="store_true",
        help="skip the search for near-duplicate images (it reads every image): split by patient only",
    )
    add_setting(p, "split.group_duplicates", "--group-duplicates")
    add_setting(p, "split.duplicate_distance", "--duplicate-distance")
    add_setting(p, "split.label_conflicts", "--label-conflicts")
    p.set_defaults(func=cmd_cohort)
