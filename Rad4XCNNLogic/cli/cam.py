"""Saliency commands: ``cam`` (the CAM stage of a run on a manifest, made from its stage record by
:mod:`Rad4XCNNLogic.cli.stagecmd`) and ``case`` (one case against a finished
run, which the 3D Slicer module runs in the background)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from Rad4XCNNLogic.cli.featuremaps import add_featuremap_flags
from Rad4XCNNLogic.cli.options import config_from_args, print_failures
from Rad4XCNNLogic.cli.stagecmd import StageCommand
from Rad4XCNNLogic.errors import Rad4XCNNError, UsageError

NEEDS_CLASSIFIER = (
    "cam: CAMs need a classifier trained on the cohort: give a rad4xcnn checkpoint (rad4xcnn train)"
)


def _cam_config(args: argparse.Namespace) -> dict:
    """The run's ``models``: the one checkpoint of ``--weights`` (its model from its metadata, or
    ``--model``); none given: the ``--config`` file's."""
    from Rad4XCNNLogic.cli.features import checkpoint_model
    from Rad4XCNNLogic.features.settings import weights_kind

    if args.weights is None:
        if args.config is None:
            raise UsageError(NEEDS_CLASSIFIER)
        return {}
    if weights_kind(args.weights) != "file":
        raise UsageError(NEEDS_CLASSIFIER)
    try:
        name = checkpoint_model(args.weights)
    except UsageError:
        raise UsageError(NEEDS_CLASSIFIER) from None
    if args.model is not None and args.model != name:
        raise UsageError(f"cam: --model {args.model} but {args.weights} holds {name}")
    return {"models": [{"name": name, "weights": args.weights}], "control": "none"}


def show_cam(args: argparse.Namespace, run, summary: dict) -> int:
    """The terminal summary of the CAM stage: the maps, each method's checks and the methods' agreement."""
    result = summary["result"]
    s = result.settings
    print(
        f"wrote {s['maps']} maps of {s['cases']} case(s) to {run.out / 'cam'} ({s['model']}, "
        f"layer {s['target_layer']}, {s['device']}, {s['seconds']:.1f} s)"
    )
    table = result.summary()
    if not table.empty:
        print("  method        pointing game   energy in lesion (chance)   empty maps   flagged")
        for method, row in table.iterrows():
            print(
                f"  {method:<12}  {row['pointing_game']:>13.3f}   {row['energy_inside']:>16.3f} "
                f"({row['energy_chance']:.3f})   {int(row['empty_maps']):>10d}   "
                f"{int(row['flagged_maps']):>7d}"
            )
        print("  which map to trust:")
        for method, row in table.iterrows():
            print(f"  {method}: {row['verdict']}")
    agreement = result.agreement_summary()
    if not agreement.empty:
        iou = next(c for c in agreement.columns if c.endswith("_iou"))
        share = round(100 * s["top_fraction"])
        print(f"  agreement between methods (mean over cases): Spearman, top-{share}% IoU")
        for (a, b), row in agreement.iterrows():
            print(f"  {a} vs {b}: {row['spearman']:.3f}, {row[iou]:.3f}")
    print_failures(run.load_cohort().failures + summary["failures"], "the saliency maps")
    return 0


def _cam_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--weights",
        help="checkpoint of 'rad4xcnn train' (the model with its classifier trained on the cohort); "
        "without it, the --config file's models",
    )
    p.add_argument("--model", help="timm model name (default and check: the checkpoint's)")
    p.add_argument(
        "--split", choices=("train", "val", "test"), help="only the manifest's cases of this split"
    )


COMMAND = StageCommand(
    "cam",
    help="saliency maps (Grad-CAM, EigenCAM, ScoreCAM, ...) in image geometry, with their metrics",
    description=(
        "Compute class activation maps of a trained model on the lesion crops of the run's gallery "
        "(--gallery test cases, the classes in turn) or of --cases, map them back onto the image (NRRD in "
        "the image's size, spacing and origin, and a PNG overlay) and measure them: the CAM energy inside "
        "the lesion, the pointing game, and the agreement between methods (Spearman correlation, top-20% "
        "IoU); writes OUT/cam/: the CAM stage of 'rad4xcnn run'. Cost: ScoreCAM runs one forward pass per "
        "channel of the target layer for every case (2048 for ResNet50's last stage, 1024 for "
        "DenseNet121, 768 for ViT-B, 512 for ResNet18), --batch-size at a time: hundreds of times "
        "Grad-CAM's cost."
    ),
    settings=(
        ("cam.methods", ("--methods",), {"comma": True, "help": "CAM methods, comma-separated"}),
        ("cam.gallery", ("--gallery",), {}),
        (
            "cam.cases",
            ("--cases",),
            {"comma": True, "help": "case ids, comma-separated (default: the gallery)"},
        ),
        ("cam.target_class", ("--target-class",), {}),
        ("cam.target_layer", ("--target-layer",), {}),
        (
            "cam.batch_size",
            ("--batch-size",),
            {"help": "images per forward pass: cases for Grad-CAM and EigenCAM, masked inputs for ScoreCAM"},
        ),
        ("cam.tolerance", ("--tolerance",), {}),
        ("cam.faithfulness", ("--faithfulness",), {}),
        ("cam.deletion_steps", ("--deletion-steps",), {}),
        ("cam.randomisation", ("--randomisation",), {}),
    ),
    show=show_cam,
    flags=_cam_flags,
    config=_cam_config,
    options=lambda args: {"split": args.split},
    out_help="output folder; the maps and tables go to OUT/cam/",
    parents=("seed", "device", "progress"),
)


def cmd_case(args: argparse.Namespace) -> int:
    """One case against a finished run: its radiomic features with the run's own parameters, and its CAM."""
    from Rad4XCNNLogic.cohort.manifest import read_manifest
    from Rad4XCNNLogic.features.radiomics import extract_radiomics
    from Rad4XCNNLogic.features.radiomics_result import write_radiomics
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
        from Rad4XCNNLogic.cam.volumes import compute_maps

        cfg = config_from_args(args)
        # writes <out>/cam/<case>_<method>.nrrd in the image's geometry, which the module overlays; a volume
        # case's maps are volumes, as in the run
        cams = compute_maps(
            cohort,
            args.weights,
            dataclasses.replace(cfg.cam, methods=[args.cam]),
            deep=cfg.deep,
            model=args.model or (None if args.weights else "resnet50"),  # a checkpoint names its model
            device=cfg.device,
            out_dir=out,
            progress=args.verbosity >= 0,
        )
        if cams.failures:
            raise Rad4XCNNError(str(cams.failures[0]))
        print(f"case {case.case_id}: {args.cam} map in {out / 'cam'}")
    if args.features or args.top_from_run:
        from Rad4XCNNLogic.cam.featuremaps import compute_feature_maps
        from Rad4XCNNLogic.cli.featuremaps import features_to_map, print_feature_maps

        if args.top_from_run and not args.run:
            raise UsageError("--top-from-run needs the run folder (--run)")
        from_run = args.run if args.top_from_run else None
        features, pairs = features_to_map(args.features, from_run, args.top)
        maps = compute_feature_maps(
            cohort,
            features,
            from_run=from_run,
            top=args.top,
            pairs=pairs,
            params=params,
            kernel_radius=args.kernel_radius,
            cam_dir=out / "cam" if (out / "cam").is_dir() else None,
            out_dir=out / "featuremaps",
            jobs=args.jobs,
        )
        if maps.failures:
            raise Rad4XCNNError(str(maps.failures[0]))
        print_feature_maps(maps, out / "featuremaps")
    return 0


def register(sub, parents: dict) -> None:
    p = sub.add_parser(
        "case",
        parents=[parents["device"]],
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
    p.add_argument(
        "--model", help="backbone of the CAM (timm name; default: the checkpoint's, else resnet50)"
    )
    p.add_argument("--weights", help="weights of the CAM's network: imagenet or a checkpoint file")
    p.add_argument("--cam", help="CAM method (gradcam, eigencam, ...)")
    add_featuremap_flags(p, with_run=False)
    p.add_argument(
        "--top-from-run",
        action="store_true",
        help="map the radiomic features that explain the run's --top most important deep features",
    )
    p.set_defaults(func=cmd_case)
