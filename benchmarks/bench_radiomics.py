"""Benchmark of the radiomics stage against its anchors, measured in the same run (figures in BENCHMARKS.md).

1. Overhead: our serial extraction per image vs a direct PyRadiomics loop over the same files with the
   same parameter file (target: at most 5% slower).
2. Scaling: wall time with N worker processes vs one (target: speed-up of at least 0.85 x N on N cores).
3. Cache: a re-run that finds every case in the cache vs the first run (target: at least 100x faster).

    python benchmarks/bench_radiomics.py            # 64 cases of 256 x 320 pixels
    python benchmarks/bench_radiomics.py --quick    # 12 cases of 128 x 160, for a smoke test
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path


def direct_loop(cases, params_path: Path) -> tuple[float, float]:
    """Wall and CPU seconds of PyRadiomics alone: one extractor, execute() on each image and mask file."""
    from radiomics import featureextractor

    extractor = featureextractor.RadiomicsFeatureExtractor(str(params_path))
    start, cpu = time.perf_counter(), time.process_time()
    for case in cases:
        extractor.execute(str(case.image), str(case.masks[0]), label=255)
    return time.perf_counter() - start, time.process_time() - cpu


def ours(cases, params: str, jobs: int, cache_dir=None) -> tuple[float, object, float]:
    """Wall seconds, the result, and this process's CPU seconds (all of it when jobs is 1)."""
    from Rad4XCNNLogic.features.radiomics import extract_radiomics

    start, cpu = time.perf_counter(), time.process_time()
    result = extract_radiomics(cases, params, jobs=jobs, cache_dir=cache_dir, progress=False)
    return time.perf_counter() - start, result, time.process_time() - cpu


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="cases in the synthetic cohort (default 64)")
    parser.add_argument("--shape", default="256x320", help="image size ROWSxCOLS (default 256x320)")
    parser.add_argument("--params", default="paper", help="preset or YAML file (default paper)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the overhead pair (median)")
    parser.add_argument(
        "--jobs", type=int, nargs="*", help="process counts to time besides 1 (default 2..cores)"
    )
    parser.add_argument("--quick", action="store_true", help="12 cases of 128x160, one repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.shape, args.repeats = 12, "128x160", 1
    rows, cols = (int(v) for v in args.shape.lower().split("x"))

    import numpy as np
    import radiomics

    from Rad4XCNNLogic.cohort.manifest import read_manifest
    from Rad4XCNNLogic.cohort.synthetic import make_synthetic_cohort
    from Rad4XCNNLogic.features.radiomics import _quiet_pyradiomics, library_versions, resolve_params
    from Rad4XCNNLogic.infra.environment import available_cpus, cpu_name

    logging.basicConfig(level=logging.WARNING)
    _quiet_pyradiomics()
    cores = available_cpus()
    jobs_list = sorted({1, *(args.jobs or range(2, cores + 1))})  # one process is the baseline
    params = resolve_params(args.params)
    versions = library_versions()
    cpu = cpu_name()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    print(f"machine: {cpu}, {cores} cores usable; Python {platform.python_version()}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"cohort: {args.n} synthetic cases of {rows}x{cols} pixels; params {params.name}")

    with tempfile.TemporaryDirectory(prefix="bench_radiomics_") as tmp:
        tmp = Path(tmp)
        manifest = make_synthetic_cohort(tmp / "cohort", args.n, seed=0, shape=(rows, cols))
        cases = read_manifest(manifest).cases

        # warm both paths (imports, extractor construction, file cache, the fork server) before timing
        direct_loop(cases[:1], params.path)
        ours(cases[:1], args.params, 1)
        if max(jobs_list) > 1:
            ours(cases[:2], args.params, 2)

        # 1. overhead, alternating the two so that a busy neighbour slows both alike; CPU time is
        #    reported too, as it is far less disturbed by other processes than wall time
        direct_t, ours_t, direct_cpu, ours_cpu = [], [], [], []
        for _ in range(args.repeats):
            wall, cpu = direct_loop(cases, params.path)
            direct_t.append(wall)
            direct_cpu.append(cpu)
            wall, result, cpu = ours(cases, args.params, 1)
            ours_t.append(wall)
            ours_cpu.append(cpu)
        n = len(cases)
        print(
            f"\n1. per image ({result.features.shape[1]} features; median of {args.repeats}; target <= +5%)"
        )
        for what, d, o in (
            ("wall", statistics.median(direct_t), statistics.median(ours_t)),
            ("CPU ", statistics.median(direct_cpu), statistics.median(ours_cpu)),
        ):
            print(
                f"   {what}: direct PyRadiomics {1000 * d / n:.1f} ms, ours (1 job) {1000 * o / n:.1f} ms; "
                f"ours/direct = {o / d:.3f} (overhead {100 * (o / d - 1):+.1f}%)"
            )

        # 2. scaling with processes (the pool's start-up included: it is part of a user's run); the
        #    process counts are interleaved and repeated so that a busy neighbour hits them alike
        print("\n2. processes   wall s (median)   speed-up   speed-up/N (target >= 0.85)")
        walls: dict[int, list[float]] = {jobs: [] for jobs in jobs_list}
        reference = None
        same = True
        for _ in range(args.repeats):
            for jobs in jobs_list:
                seconds, result, _ = ours(cases, args.params, jobs)
                walls[jobs].append(seconds)
                reference = result.features if reference is None else reference
                same &= np.array_equal(result.features.to_numpy(), reference.to_numpy(), equal_nan=True)
        base = statistics.median(walls[1])
        for jobs in jobs_list:
            wall = statistics.median(walls[jobs])
            print(f"   {jobs:>9}   {wall:15.2f}   {base / wall:8.2f}   {base / wall / jobs:10.2f}")
        print(f"   values {'identical' if same else 'DIFFER'} across process counts")

        # 3. cache: first run fills it, the second reads it
        cache = tmp / "cache"
        cold, first, _ = ours(cases, args.params, 1, cache)
        warm, again, _ = ours(cases, args.params, 1, cache)
        same = np.array_equal(first.features.to_numpy(), again.features.to_numpy(), equal_nan=True)
        print(
            f"\n3. cache: first run {cold:.2f} s, cached re-run {warm:.3f} s "
            f"({again.cache_hits} hits); first/cached = {cold / warm:.0f}x (target >= 100x); "
            f"{'same values' if same else 'VALUES DIFFER'}"
        )
    print(f"\ncommand: {' '.join([Path(sys.executable).name, *sys.argv])}; radiomics {radiomics.__version__}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
