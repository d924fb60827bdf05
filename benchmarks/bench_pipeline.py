"""Benchmark of the whole pipeline: the demo's wall time per stage, and a BUSI-sized cohort end to end.

The BUSI-sized cohort is synthetic: 780 cases of 500 x 500 pixels, of which 133 have no lesion (BUSI's
``normal`` class, left out of the lesion analyses as in BUSI) and 647 benign or malignant, plus the pipeline
with ResNet50 fine-tuned on it, the paper's radiomics preset, five values of M with a 1,000-permutation null,
the three classifiers on every feature set, and CAMs for a gallery. Each stage's time comes from the run's
own ``run.json``; a second run with nothing changed shows the cache.

    python benchmarks/bench_pipeline.py --demo     # `rad4xcnn demo`, per stage (under 3 min on 2 cores)
    python benchmarks/bench_pipeline.py --busi     # BUSI-sized, CPU or the GPU when present
    python benchmarks/bench_pipeline.py --busi --epochs 3 --cam-methods gradcam,eigencam   # a shorter CPU run

Target (issue 8): on one GPU, the whole BUSI-sized run in under 2 minutes with ResNet50.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def stage_table(run_dir: Path) -> tuple[dict[str, float], dict[str, str]]:
    run = json.loads((run_dir / "run.json").read_text())
    return run["timings_s"], {name: stage["status"] for name, stage in run["stages"].items()}


def report(title: str, run_dir: Path, wall: float) -> None:
    times, statuses = stage_table(run_dir)
    print(f"\n{title}: {wall:.1f} s wall")
    for name, seconds in times.items():
        print(f"  {name:<10} {statuses[name]:<9} {seconds:8.1f} s")


def run_timed(config, label: str) -> float:
    from Rad4XCNNLogic.run.runner import run_pipeline

    start = time.perf_counter()
    result = run_pipeline(config, progress=False)
    wall = time.perf_counter() - start
    if not result.ok:
        for record in result.failed_stages:
            print(f"  stage {record.name} failed: {record.error}")
    report(label, Path(config.out), wall)
    return wall


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (radiomics workers, ...)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def bench_demo(root: Path, seed: int) -> None:
    """``rad4xcnn demo`` itself (the README's first command), twice: the first run, then the re-run."""
    import os

    from Rad4XCNNLogic.cli import main

    out = root / "demo_run"
    for label in ("demo, first run (cohort written too)", "demo, re-run with nothing changed"):
        load = os.getloadavg()[0]
        start, cpu = time.perf_counter(), _cpu_seconds()
        code = main(["-q", "demo", "--out", str(out), "--seed", str(seed), "--no-progress"])
        wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
        report(f"{label}, exit {code}", out / "run", wall)
        print(f"  CPU time {cpu:.1f} s; load average {load:.2f} before, {os.getloadavg()[0]:.2f} after")


def bench_busi(root: Path, args: argparse.Namespace) -> None:
    from Rad4XCNNLogic.cohort.synthetic import make_synthetic_cohort
    from Rad4XCNNLogic.run.config import config_from_dict

    start = time.perf_counter()
    manifest = make_synthetic_cohort(
        root / "cohort",
        780,
        seed=args.seed,
        n_external=args.external,
        shape=(500, 500),
        malignant_fraction=210 / 780,
        normal_fraction=133 / 780,
        separation=0.6,
    )
    print(
        f"BUSI-sized cohort written in {time.perf_counter() - start:.1f} s "
        f"(780 + {args.external} external cases of 500 x 500)"
    )
    config = config_from_dict(
        {
            "manifest": str(manifest),
            "out": str(root / "run"),
            "device": args.device,
            "training": {
                "pretrained": False,
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "patience": 3,
            },
            "models": [{"name": "resnet50", "weights": "trained"}],
            "deep": {"batch_size": args.batch_size},
            "explain": {"thresholds": [0.5, 0.6, 0.7, 0.8, 0.9], "permutations": 1000, "bootstrap": 200},
            "cam": {"methods": args.cam_methods.split(","), "gallery": args.gallery},
        }
    )
    run_timed(config, "BUSI-sized (ResNet50), first run")
    run_timed(config, "BUSI-sized (ResNet50), re-run with nothing changed")


def main(argv=None) -> int:
    from Rad4XCNNLogic.infra.environment import cpu_name, device_info

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--demo", action="store_true", help="the demo, per stage")
    parser.add_argument("--busi", action="store_true", help="a BUSI-sized cohort with ResNet50")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--epochs", type=int, default=5, help="fine-tuning epochs (BUSI-sized run)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--external", type=int, default=0, help="external cases besides the 780")
    parser.add_argument("--cam-methods", default="gradcam,eigencam,scorecam")
    parser.add_argument("--gallery", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", metavar="DIR", help="write here and keep (default: a temporary folder)")
    args = parser.parse_args(argv)
    if not (args.demo or args.busi):
        parser.error("choose --demo and/or --busi")
    info = device_info(args.device)
    print(f"machine: {cpu_name()}, {info['cpus']} cores; GPU: {info.get('gpu', 'none')}")
    with tempfile.TemporaryDirectory(prefix="rad4xcnn-bench-") as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        if args.demo:
            bench_demo(root / "demo", args.seed)
        if args.busi:
            bench_busi(root / "busi", args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
