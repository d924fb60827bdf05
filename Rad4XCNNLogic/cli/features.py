"""Commands that compute features: ``deep`` (deep features), ``train`` (fine-tuning) and ``radiomics``.
Each runs the work of its run stage (:mod:`Rad4XCNNLogic.run.work`) on the files it is given; ``radiomics``
is made from its stage record (:mod:`Rad4XCNNLogic.cli.stagecmd`) and runs the stage's plan."""

from __future__ import annotations

import argparse
from pathlib import Path

from Rad4XCNNLogic.cli.options import add_setting, config_from_args, given, print_failures, show_progress
from Rad4XCNNLogic.cli.stagecmd import StageCommand
from Rad4XCNNLogic.errors import UsageError
from Rad4XCNNLogic.features.settings import IMAGENET, normalise_weights, weights_kind
from Rad4XCNNLogic.names import RunFiles

WEIGHTS_HELP = (
    "imagenet (timm's weights; needs network once), a state dict file (.pth/.safetensors), or a "
    "checkpoint of 'rad4xcnn train'; none: random weights (seed), for testing only"
)


def _weights(text: str | None) -> tuple[str | None, bool]:
    """(weights file, pretrained) of a ``--weights`` value."""
    kind = weights_kind(text)
    if kind == "random":
        return None, False
    if kind == IMAGENET:
        return None, True
    return normalise_weights(text), False


def _need_model(args) -> None:
    if args.model is None and args.weights is None:
        raise UsageError("give --model NAME (a timm name such as resnet50), or --weights with a checkpoint")


def cmd_deep(args: argparse.Namespace) -> int:
    from Rad4XCNNLogic.cohort.manifest import read_manifest
    from Rad4XCNNLogic.run.work import DeepJob, deep_stage

    _need_model(args)
    cfg = config_from_args(args)
    cohort = read_manifest(cfg.manifest, seed=cfg.seed)
    weights, pretrained = _weights(args.weights)
    layers = tuple(p.strip() for p in args.layers.split(",") if p.strip()) if args.layers else None
    job = DeepJob(args.model, args.model, weights, pretrained, args.stage, layers)
    summary = deep_stage(
        cohort,
        [job],
        Path(args.out),
        deep=cfg.deep,
        device=cfg.device,
        seed=cfg.seed,
        cache_dir=args.cache,
        include_normal=not cfg.lesion_only,
        progress=show_progress(args),
    )
    (info,) = summary["models"].values()
    s = info["settings"]
    w = s["weights"]
    source = {
        "random": f"random initialisation (seed {w['seed']}): NOT a trained model",
        "imagenet": f"ImageNet ({w['tag']})",
        "file": f"{w['path']} (sha256 {str(w['sha256'])[:12]})",
    }[w["source"]]
    print(f"wrote {args.out}: {summary['cases']} cases x {s['feature_dim']} features of {s['model']}")
    print(f"  weights: {source}")
    print(
        f"  {s['device']}, {s['dtype']}, batch {s['batch_size_used']}, "
        f"input {s['preprocess']['input_size']} px, margin {s['preprocess']['margin']}; "
        f"{info['cache_hits']} from the cache, {info['computed']} computed in {s['seconds']:.1f} s"
    )
    print_failures(cohort.failures + summary["failures"], "the deep features")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from Rad4XCNNLogic.cohort.manifest import read_manifest
    from Rad4XCNNLogic.run.work import TrainJob, train_stage

    _need_model(args)
    cfg = config_from_args(args)
    # --cohort restricts training to one cohort; without it every train/val case trains
    train_cohort = cfg.split.train_cohort if given(args, "split.train_cohort") else None
    cohort = read_manifest(cfg.manifest, seed=cfg.seed, train_cohort=cfg.split.train_cohort)
    out = Path(args.out)
    job = TrainJob(args.model or out.stem, args.model, out, weights=args.weights)
    summary = train_stage(
        cohort,
        [job],
        out.parent / RunFiles.TRAINING_HISTORY,
        training=cfg.training,
        deep=cfg.deep,
        device=cfg.device,
        seed=cfg.seed,
        train_cohort=train_cohort,
        include_normal=not cfg.lesion_only,
        progress=show_progress(args),
    )
    info = summary["models"][job.label]
    s = info["settings"]
    print(
        f"wrote {out}: {s['model']} for {', '.join(info['classes'])}, best validation AUC "
        f"{info['best_val_auc']:.4f} at epoch {info['best_epoch']} of {info['epochs_run']} "
        f"({s['train_cases']} train / {s['val_cases']} val cases, {s['seconds']:.0f} s on {s['device']})"
    )
    if s["base_weights"]["random_init"]:
        print("  started from random weights (no --weights): expect less than with --weights imagenet")
    print_failures(cohort.failures + summary["failures"], "training")
    return 0


def show_radiomics(args: argparse.Namespace, run, s: dict) -> int:
    """The terminal summary of the radiomics stage: cases extracted, failures, feature quality."""
    from Rad4XCNNLogic.features.radiomics_result import side_files

    out = run.path(RunFiles.RADIOMICS)
    cohort = run.load_cohort()
    left_out = run.without_lesion
    print(
        f"radiomics ({s['params']}, {s['features']} features): {s['extracted']} of {s['cases']} cases "
        "extracted"
        + (f", {left_out} without a lesion left out" if left_out else "")
        + f"; {s['cache_hits']} from the cache, {s['cache_misses']} computed in {s['seconds']:.1f} s"
    )
    failed = len(cohort.failures) + len(s["failures"])
    if failed:
        print(f"  {failed} case(s) failed (reasons above), listed in {s['paths']['failures']}")
    if s["nonfinite"]:
        print(f"  {len(s['nonfinite'])} feature(s) have NaN or infinite values: see {s['paths']['quality']}")
    if s["constant"]:
        print(
            f"  {len(s['constant'])} feature(s) are constant across the cases and cannot be correlated "
            f"(e.g. {s['constant'][0]}): see {s['paths']['quality']}"
        )
    extras = ", ".join(p.name for role, p in side_files(out).items() if role != "features")
    print(f"wrote {out} (and {extras})")
    return 0


def _radiomics_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cache-dir", help="on-disk cache of per-case results (default: OUT's folder/.rad4xcnn_cache)"
    )
    p.add_argument("--no-cache", action="store_true", help="compute every case, read and write no cache")


def _radiomics_cache(args: argparse.Namespace) -> dict:
    cache = None if args.no_cache else Path(args.cache_dir or Path(args.out).parent / ".rad4xcnn_cache")
    # the manifest's image and mask files are checked as it is read, as before any extraction
    return {"files": {RunFiles.CACHE: cache}, "checks": {"check_files": True}}


RADIOMICS = StageCommand(
    "radiomics",
    help="compute PyRadiomics features for every lesion case of a manifest",
    description="Radiomic features (PyRadiomics) of every lesion case, in parallel, cached and "
    "resumable; writes radiomics.csv and its side files (diagnostics, failures, quality, settings): "
    "the radiomics stage of 'rad4xcnn run'.",
    settings=(
        ("radiomics.params", ("--params",), {}),
        ("radiomics.jobs", ("--jobs",), {}),
        ("radiomics.resample_spacing", ("--resample-spacing",), {"nargs": "+", "metavar": "MM"}),
        ("radiomics.scheduler", ("--scheduler",), {"metavar": "ADDR"}),
    ),
    show=show_radiomics,
    flags=_radiomics_flags,
    options=_radiomics_cache,
    out_help="features CSV to write (e.g. run/radiomics.csv)",
    out_file=RunFiles.RADIOMICS,
    parents=("seed", "progress", "normal"),
)


def register(sub, parents: dict) -> None:
    common = [parents["seed"], parents["device"], parents["progress"], parents["normal"]]
    p = sub.add_parser(
        "deep",
        parents=common,
        help="extract deep features (one pooled vector per lesion) with a timm backbone",
        description="Crop each lesion, run it through the backbone and write deep_features.csv (and its "
        "settings, deep_features.json, beside it): the deep stage of 'rad4xcnn run'.",
    )
    add_setting(p, "manifest", "--manifest", required=True)
    p.add_argument("--model", help="timm model name, e.g. resnet50, densenet121, vit_base_patch16_224")
    p.add_argument("--weights", help=WEIGHTS_HELP)
    p.add_argument("--stage", type=int, help="pool this intermediate stage instead of the final features")
    p.add_argument(
        "--layers",
        metavar="LAYER[,LAYER...]",
        help="pool these layers instead, side by side, as columns <model>.<layer>_<index>: timm's "
        "feature_info modules (layer2, layer4 for ResNets; blocks.11 for ViTs, its CLS token) and "
        "pre_logits for the final features; an unknown name lists the model's layers",
    )
    add_setting(p, "deep.dtype", "--dtype")
    add_setting(p, "deep.batch_size", "--batch-size")
    add_setting(p, "deep.num_workers", "--workers")
    add_setting(p, "deep.margin", "--margin")
    add_setting(p, "deep.input_size", "--input-size")
    p.add_argument("--cache", metavar="DIR", help="cache folder: reruns reuse finished cases")
    p.add_argument("--out", required=True, help="deep_features.csv to write")
    p.set_defaults(func=cmd_deep)

    p = sub.add_parser(
        "train",
        parents=common,
        help="fine-tune a backbone on the manifest's train split, validating on val",
        description=(
            "Transfer learning with ultrasound augmentation, class-weighted loss, AdamW and early stopping "
            "on the validation AUC: the training stage of 'rad4xcnn run', for one backbone. Writes the "
            "checkpoint and training_history.csv beside it. Two-phase protocol: train on one cohort, then "
            "--weights PHASE1.pt --cohort OTHER."
        ),
    )
    add_setting(p, "manifest", "--manifest", required=True)
    p.add_argument("--model", help="timm model name (default: the --weights checkpoint's)")
    p.add_argument("--weights", help="starting weights: " + WEIGHTS_HELP)
    add_setting(p, "training.epochs", "--epochs")
    add_setting(p, "training.patience", "--patience")
    add_setting(p, "training.batch_size", "--batch-size")
    add_setting(p, "training.learning_rate", "--lr")
    add_setting(p, "training.input_size", "--input-size")
    add_setting(p, "training.val_fraction", "--val-fraction")
    add_setting(p, "training.augment", "--augment")
    add_setting(p, "deep.margin", "--margin")
    add_setting(p, "training.dtype", "--dtype")
    add_setting(p, "deep.num_workers", "--workers")
    add_setting(
        p, "split.train_cohort", "--cohort", help="train and validate on this cohort only (default: all)"
    )
    p.add_argument("--out", required=True, help="checkpoint to write, e.g. model.pt")
    p.set_defaults(func=cmd_train)
