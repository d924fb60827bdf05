"""Whole-pipeline commands: ``run`` (a configuration file and/or flags) and ``demo`` (the synthetic
cohort)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from Rad4XCNNLogic.cli.options import add_setting, config_from_args, show_progress, value
from Rad4XCNNLogic.errors import UsageError

#: The demo's classes overlap somewhat, so that its classifiers and explanations are not trivially perfect.
DEMO_SEPARATION = 0.6


def _print_run(result) -> int:
    print(f"\nrun folder: {result.out}")
    if result.report.is_file():
        print(f"report:     {result.report}")
    if result.failures:
        print(f"{len(result.failures)} case failure(s), listed in run.json and the report")
    for record in result.failed_stages:
        print(f"stage {record.name} failed: {record.error}", file=sys.stderr)
    if result.failed_stages:
        print(
            "the outputs of the stages before it are kept; fix the cause and run again to continue",
            file=sys.stderr,
        )
    return 0 if result.ok else 1


def _models(args: argparse.Namespace) -> dict:
    """The ``models`` section of ``--model`` / ``--weights`` pairs (empty: the configuration's)."""
    if not args.model:
        if args.weights:
            raise UsageError("--weights needs --model")
        return {}
    weights = args.weights or []
    if len(weights) > len(args.model):
        raise UsageError("more --weights than --model: give one --weights per --model, in order")
    return {
        "models": [
            {"name": name, "weights": weights[i] if i < len(weights) and weights[i] != "none" else None}
            for i, name in enumerate(args.model)
        ]
    }


def cmd_run(args: argparse.Namespace) -> int:
    from Rad4XCNNLogic.run.config import reference_yaml
    from Rad4XCNNLogic.run.runner import run_pipeline

    if args.print_config:
        print(reference_yaml(), end="")
        return 0
    config = config_from_args(args, args.config, _models(args))
    return _print_run(run_pipeline(config, progress=show_progress(args), force=args.force))


def _demo3d(args: argparse.Namespace) -> int:
    """``demo --dims 3``: the 3D profile (Rad4XCNNLogic.run.demo3d): the pipeline on synthetic volumes."""
    from Rad4XCNNLogic.run.demo3d import run_demo3d

    if args.external is not None:
        raise UsageError("--external is for the 2D demo: the 3D demo has one cohort")
    out = Path(args.out or "demo3d_run")
    result = run_demo3d(out, args.n or 24, seed=value(args, "seed"), progress=show_progress(args))
    status = _print_run(result.run)
    print(f"feature maps: {result.maps} in {result.featuremaps} (NRRD in each volume's geometry)")
    return status


def cmd_demo(args: argparse.Namespace) -> int:
    import json

    from Rad4XCNNLogic.cohort.synthetic import make_synthetic_cohort
    from Rad4XCNNLogic.run.runner import demo_config, run_pipeline

    if args.dims == 3:
        return _demo3d(args)
    args.out = args.out or "demo_run"
    args.n = 120 if args.n is None else args.n
    args.external = 40 if args.external is None else args.external
    out = Path(args.out)
    cohort_dir = out / "cohort"
    seed = value(args, "seed")
    spec = {"n": args.n, "n_external": args.external, "seed": seed, "separation": DEMO_SEPARATION}
    try:
        written = json.loads((cohort_dir / "synthetic.json").read_text(encoding="utf-8"))
        same = all(written.get(k) == v for k, v in spec.items())
    except (OSError, ValueError):
        same = False
    manifest = cohort_dir / "manifest.csv"
    if not (same and manifest.is_file()):
        print(f"writing the synthetic cohort ({args.n} + {args.external} external cases) to {cohort_dir}")
        manifest = make_synthetic_cohort(
            cohort_dir, args.n, seed=seed, n_external=args.external, separation=DEMO_SEPARATION
        )
    result = run_pipeline(
        demo_config(out / "run", manifest, seed), progress=show_progress(args), force=args.force
    )
    code = _print_run(result)
    if result.report.is_file():
        # the last line, with the folder as the user typed it: `open demo_run/run/report.html`
        print(f"open {Path(args.out) / 'run' / result.report.name}")
    return code


def register(sub, parents: dict) -> None:
    p = sub.add_parser(
        "run",
        parents=[parents["seed"], parents["device"], parents["progress"]],
        help="run the whole pipeline (config file and/or flags) into a run folder",
        description="Cohort -> fine-tuning -> deep features -> radiomics -> explanation -> classification -> "
        "CAMs -> report, in one run folder; a re-run recomputes only what changed. Settings come from "
        "CONFIG (see --print-config for every setting and its default), then from the flags.",
    )
    p.add_argument("config", nargs="?", help="YAML configuration file")
    p.add_argument(
        "--print-config", action="store_true", help="print every setting with its default and exit"
    )
    add_setting(p, "manifest", "--manifest")
    add_setting(p, "out", "--out")
    p.add_argument(
        "--model", action="append", help="timm backbone, or a 3D network on volumes (repeat for several)"
    )
    p.add_argument(
        "--weights",
        action="append",
        help="weights of each --model, in order: none, imagenet, trained (fine-tune here) or a file",
    )
    add_setting(p, "radiomics.params", "--radiomics-params")
    add_setting(p, "radiomics.jobs", "--jobs")
    add_setting(p, "explain.thresholds", "--threshold", "-M", metavar="M")
    add_setting(p, "explain.fdr", "--fdr")
    add_setting(p, "explain.permutations", "--permutations")
    add_setting(p, "explain.bootstrap", "--bootstrap")
    add_setting(p, "training.epochs", "--epochs")
    add_setting(p, "training.pretrained", "--pretrained")
    add_setting(p, "classification.enabled", "--classify", help="train and validate the classifiers")
    add_setting(p, "cam.enabled", "--cam", help="compute the saliency maps")
    p.add_argument("--force", action="store_true", help="recompute every stage")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "demo",
        parents=[parents["seed"], parents["progress"]],
        help="run the whole pipeline on the built-in synthetic cohort (a few minutes on a laptop)",
        description="Write the synthetic demo cohort (if not there yet) and run the whole pipeline on it: "
        "a ResNet18 fine-tuned on the cohort, compared with the same network left random.",
    )
    p.add_argument(
        "--out", default=None, help="output folder (default ./demo_run; ./demo3d_run with --dims 3)"
    )
    p.add_argument(
        "--n", type=int, default=None, help="internal cases (default 120; 24 volumes with --dims 3)"
    )
    p.add_argument("--external", type=int, default=None, help="external cases (default 40; 2D only)")
    p.add_argument("--force", action="store_true", help="recompute every stage")
    p.add_argument(
        "--dims",
        type=int,
        choices=(2, 3),
        default=2,
        help="2: the whole pipeline on ultrasound-like images (default); 3: the 3D profile, CT-like volumes "
        "with 3D radiomics and voxel-based feature maps (what runs on volumes today)",
    )
    p.set_defaults(func=cmd_demo)
