"""Commands that compute features: ``deep`` (deep features), ``train`` (fine-tuning) and ``radiomics``.
Each is made from its stage record (:mod:`Rad4XCNNLogic.cli.stagecmd`) and runs the stage's plan on the
files it is given; ``--model`` and ``--weights`` describe the one backbone of the run's ``models``."""

from __future__ import annotations

import argparse
from pathlib import Path

from Rad4XCNNLogic.cli.options import print_failures
from Rad4XCNNLogic.cli.stagecmd import StageCommand
from Rad4XCNNLogic.errors import UsageError
from Rad4XCNNLogic.features.settings import IMAGENET, TRAINED, weights_kind
from Rad4XCNNLogic.names import RunFiles

WEIGHTS_HELP = (
    "imagenet (timm's weights; needs network once), a state dict file (.pth/.safetensors), or a "
    "checkpoint of 'rad4xcnn train'; none: random weights (seed), for testing only"
)


def checkpoint_model(weights: str) -> str:
    """The timm name of the model in a ``rad4xcnn train`` checkpoint (its metadata's ``model_name``)."""
    from Rad4XCNNLogic.features.backbones import read_weights_file

    _, meta = read_weights_file(weights)
    if not meta or not meta.get("model_name"):
        raise UsageError(f"{weights} is not a checkpoint of 'rad4xcnn train': give --model NAME with it")
    return str(meta["model_name"])


def _backbone(args: argparse.Namespace) -> dict | None:
    """The one backbone that ``--model`` and ``--weights`` describe, as a ``models`` entry (its ``weights``
    read by the setting's own parser); None when neither is given (the configuration's ``models``)."""
    if args.model is None and args.weights is None:
        return None
    name = args.model
    if name is None:
        if weights_kind(args.weights) != "file":
            raise UsageError(
                "give --model NAME (a timm name such as resnet50) with --weights " + args.weights
            )
        name = checkpoint_model(args.weights)
    return {"name": name, "weights": args.weights}


def _deep_config(args: argparse.Namespace) -> dict:
    model = _backbone(args)
    if model is None:
        return {}
    if args.stage is not None:
        model["stage"] = args.stage
    if args.layers:
        model["layers"] = [p.strip() for p in args.layers.split(",") if p.strip()]
    return {"models": [model]}


def show_deep(args: argparse.Namespace, run, summary: dict) -> int:
    """The terminal summary of the deep stage: cases and features, and each backbone's weights and cost."""
    models = summary["models"]
    first = next(iter(models.values()))["settings"]
    dims = " + ".join(f"{info['settings']['feature_dim']} of {key}" for key, info in models.items())
    print(f"wrote {args.out}: {summary['cases']} cases x {dims} features")
    for key, info in models.items():
        s = info["settings"]
        w = s["weights"]
        source = {
            "random": f"random initialisation (seed {w['seed']}): NOT a trained model",
            "imagenet": f"ImageNet ({w['tag']})",
            "file": f"{w['path']} (sha256 {str(w['sha256'])[:12]})",
        }[w["source"]]
        print(f"  {key} ({s['model']}) weights: {source}")
        print(f"    {info['cache_hits']} from the cache, {info['computed']} computed in {s['seconds']:.1f} s")
    side = first["preprocess"]["input_size"]
    native = (first.get("volumes") or {}).get("network") == "3d"
    shown = f"a cube of {side}^3 voxels" if native else f"{side} px"
    print(
        f"  {first['device']}, {first['dtype']}, batch {first['batch_size_used']}, "
        f"input {shown}, margin {first['preprocess']['margin']}"
    )
    print_failures(run.load_cohort().failures + summary["failures"], "the deep features")
    return 0


def _deep_options(args: argparse.Namespace) -> dict:
    # the manifest's image and mask files are checked as it is read, as before any extraction
    return {"files": {RunFiles.CACHE: args.cache}, "checks": {"check_files": True}}


def _deep_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        help="timm model name, e.g. resnet50, densenet121, vit_base_patch16_224 (default: the --weights "
        "checkpoint's; neither: the --config file's models)",
    )
    p.add_argument("--weights", help=WEIGHTS_HELP)
    p.add_argument("--stage", type=int, help="pool this intermediate stage instead of the final features")
    p.add_argument(
        "--layers",
        metavar="LAYER[,LAYER...]",
        help="pool these layers instead, side by side, as columns <model>.<layer>_<index>: timm's "
        "feature_info modules (layer2, layer4 for ResNets; blocks.11 for ViTs, its CLS token) and "
        "pre_logits for the final features; an unknown name lists the model's layers",
    )
    p.add_argument("--cache", metavar="DIR", help="cache folder: reruns reuse finished cases")


DEEP = StageCommand(
    "deep",
    help="extract deep features (one pooled vector per lesion) with a timm backbone",
    description="Crop each lesion, run it through the backbone and write deep_features.csv (and its "
    "settings, deep_features.json, beside it): the deep stage of 'rad4xcnn run'. Like the run, it also "
    "extracts the backbone's random-weights control (columns <key>-random_<index>) unless --controls none.",
    settings=(
        ("control", ("--controls",), {}),
        ("deep.dtype", ("--dtype",), {}),
        ("deep.batch_size", ("--batch-size",), {}),
        ("deep.num_workers", ("--workers",), {}),
        ("deep.margin", ("--margin",), {}),
        ("deep.input_size", ("--input-size",), {}),
    ),
    show=show_deep,
    flags=_deep_flags,
    config=_deep_config,
    options=_deep_options,
    out_help="deep_features.csv to write",
    out_file=RunFiles.DEEP,
    parents=("seed", "device", "progress", "normal"),
)


def _train_config(args: argparse.Namespace) -> dict:
    model = _backbone(args)
    if model is None:
        return {}
    # the backbone is fine-tuned from --weights: ImageNet's, a file's, or (none) a seeded random start
    start = weights_kind(args.weights)
    return {
        "models": [dict(model, weights=TRAINED)],
        "control": "none",
        "training": {"pretrained": start == IMAGENET},
    }


def _train_options(args: argparse.Namespace) -> dict:
    """--out is the checkpoint: the stage's models/<key>.pt, with training_history.csv beside it."""
    out = Path(args.out)
    files = {RunFiles.TRAINING_HISTORY: out.parent / RunFiles.TRAINING_HISTORY}
    model = _backbone(args)
    if model is None:
        return {"files": files, "out": out.parent}
    files[RunFiles.checkpoint(model["name"])] = out
    start = {model["name"]: args.weights} if weights_kind(args.weights) == "file" else {}
    return {"files": files, "out": out.parent, "start_weights": start}


def show_train(args: argparse.Namespace, run, summary: dict) -> int:
    """The terminal summary of the training stage: each backbone's best validation AUC."""
    for key, info in summary["models"].items():
        s = info["settings"]
        print(
            f"wrote {run.path(RunFiles.checkpoint(key))}: {s['model']} for {', '.join(info['classes'])}, "
            f"best validation AUC {info['best_val_auc']:.4f} at epoch {info['best_epoch']} of "
            f"{info['epochs_run']} ({s['train_cases']} train / {s['val_cases']} val cases, "
            f"{s['seconds']:.0f} s on {s['device']})"
        )
        if s["base_weights"]["random_init"] and (s.get("volumes") or {}).get("network") == "3d":
            print("  started from random weights: a 3D network has no ImageNet weights (--weights FILE takes")
            print("  a MONAI or MedicalNet state dict)")
        elif s["base_weights"]["random_init"]:
            print("  started from random weights (no --weights): expect less than with --weights imagenet")
    print_failures(run.load_cohort().failures + summary["failures"], "training")
    return 0


def _train_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", help="timm model name (default: the --weights checkpoint's; neither: --config's models)"
    )
    p.add_argument("--weights", help="starting weights: " + WEIGHTS_HELP)


TRAIN = StageCommand(
    "train",
    help="fine-tune a backbone on the manifest's train split, validating on val",
    description=(
        "Transfer learning with ultrasound augmentation, class-weighted loss, AdamW and early stopping "
        "on the validation AUC: the training stage of 'rad4xcnn run', for one backbone. Writes the "
        "checkpoint and training_history.csv beside it. Two-phase protocol: --phases FIRST SECOND, or train "
        "on one cohort, then --weights PHASE1.pt --cohort OTHER."
    ),
    settings=(
        ("training.epochs", ("--epochs",), {}),
        ("training.patience", ("--patience",), {}),
        ("training.batch_size", ("--batch-size",), {}),
        ("training.learning_rate", ("--lr",), {}),
        ("training.input_size", ("--input-size",), {}),
        ("training.val_fraction", ("--val-fraction",), {}),
        ("training.augment", ("--augment",), {}),
        ("training.phases", ("--phases",), {"nargs": "+", "metavar": "COHORT"}),
        ("training.finetune_manifest", ("--finetune",), {"metavar": "MANIFEST"}),
        ("deep.margin", ("--margin",), {}),
        ("training.dtype", ("--dtype",), {}),
        ("deep.num_workers", ("--workers",), {}),
        ("split.train_cohort", ("--cohort",), {"help": "train and validate on this cohort"}),
    ),
    show=show_train,
    flags=_train_flags,
    config=_train_config,
    options=_train_options,
    out_help="checkpoint to write, e.g. model.pt",
    parents=("seed", "device", "progress", "normal"),
)


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
