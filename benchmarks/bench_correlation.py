"""Benchmark of the correlation engine against ``scipy.stats.spearmanr``, measured in the same run.

For each N it times scipy's Spearman (rho and p) on the deep and radiomic tables side by side, and
Rad4XCNN's chunked Spearman (rho, p and BH q) on the same tables, checks that the values agree, and prints
the ratio. Then it times the max-|rho| permutation null on the CPU and, where torch sees a GPU, on the GPU.
``--stratified`` times instead rho within strata (3 classes x 2 cohorts) against the pooled rho, the whole
stratified explanation against the pooled one, and the permutation null within strata against the pooled
null, in interleaved pairs (the median ratio of the pairs is printed, so that a loaded machine evens out).

    python benchmarks/bench_correlation.py            # N = 780 and 10,000; 2048 x 474; 1,000 permutations
    python benchmarks/bench_correlation.py --quick    # a small run, seconds
    python benchmarks/bench_correlation.py --stratified --repeat 5 --permutations 200
    python benchmarks/bench_correlation.py --n 100000 --no-anchor --permutations 0 --memory  # at scale
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import timed

from Rad4XCNNLogic.explain.correlation import spearman
from Rad4XCNNLogic.explain.explanation import explain
from Rad4XCNNLogic.explain.resampling import permutation_null
from Rad4XCNNLogic.explain.settings import ExplainConfig
from Rad4XCNNLogic.explain.strata import spearman_within


def make_tables(n: int, n_deep: int, n_rad: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ReLU-like deep features (many tied zeros, float32 as a network writes them) and radiomic features
    that share a few latent factors with them, so that some rhos are large."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n, 16), dtype=np.float32)
    deep = latent @ rng.normal(size=(16, n_deep)).astype(np.float32) * 0.3
    deep += rng.standard_normal((n, n_deep), dtype=np.float32)
    np.maximum(deep, 0, out=deep)
    rad = latent @ rng.normal(size=(16, n_rad)) * 0.3 + rng.normal(size=(n, n_rad))
    cases = [f"case{i:06d}" for i in range(n)]
    return (
        pd.DataFrame(deep, index=cases, columns=[f"resnet50_{k}" for k in range(n_deep)]),
        pd.DataFrame(rad, index=cases, columns=[f"original_firstorder_F{k}" for k in range(n_rad)]),
    )


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def versions() -> str:
    import scipy

    parts = [f"python {platform.python_version()}", f"numpy {np.__version__}", f"scipy {scipy.__version__}"]
    try:
        import torch

        parts.append(f"torch {torch.__version__}")
    except ImportError:
        pass
    return ", ".join(parts)


def gpu_name() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def bench_one_n(n: int, args: argparse.Namespace, backends: list[str], gpu: str | None, permutations: bool):
    deep, rad = make_tables(n, args.deep, args.radiomic)
    size_gb = (deep.memory_usage().sum() + rad.memory_usage().sum()) / 2**30
    print(f"\nN = {n:,} cases (input tables {size_gb:.2f} GB)")
    rss_before = peak_rss_gb()
    anchor = None
    if not args.no_anchor:
        from scipy import stats

        seconds, ref = timed(lambda: stats.spearmanr(deep.to_numpy(), rad.to_numpy()), args.repeat)
        anchor = (seconds, ref.statistic[: args.deep, args.deep :], ref.pvalue[: args.deep, args.deep :])
        print(f"  scipy.stats.spearmanr (rho, p):        {seconds:8.2f} s")
        del ref
        # The way the method is often coded: one spearmanr call per (deep, radiomic) pair; timed on a sample
        # of pairs and scaled to all of them.
        rng = np.random.default_rng(1)
        d_cols, r_cols = rng.integers(0, args.deep, 200), rng.integers(0, args.radiomic, 200)
        d_arr, r_arr = deep.to_numpy(), rad.to_numpy()
        t0 = time.perf_counter()
        for i, j in zip(d_cols, r_cols, strict=True):
            stats.spearmanr(d_arr[:, i], r_arr[:, j])
        per_pair = (time.perf_counter() - t0) / len(d_cols)
        loop_seconds = per_pair * args.deep * args.radiomic
        print(f"  scipy.stats.spearmanr, one call per pair: ~{loop_seconds:8.0f} s (from 200 pairs, scaled)")
    for backend in backends:
        spearman(deep.iloc[:50], rad.iloc[:50], backend=backend)  # warm-up: imports, CUDA context
        seconds, result = timed(lambda b=backend: spearman(deep, rad, backend=b), args.repeat)
        line = f"  rad4xcnn spearman {backend:<10} (rho, p, q): {seconds:8.2f} s"
        if anchor:
            d_rho = np.nanmax(np.abs(result.rho - anchor[1]))
            rel_p = np.nanmax(np.abs(result.p - anchor[2]) / np.maximum(anchor[2], 1e-300))
            line += (
                f"  {anchor[0] / seconds:6.1f}x faster ({loop_seconds / seconds:,.0f}x the per-pair loop); "
                f"max|d rho| {d_rho:.1e}, max rel d p {rel_p:.1e}"
            )
        print(line)
    print(f"  peak memory of the process: {peak_rss_gb():.2f} GB (before this N: {rss_before:.2f} GB)")
    if args.memory:
        import tracemalloc  # numpy reports its buffers to tracemalloc: the engine's own working memory

        tracemalloc.start()
        spearman(deep, rad, backend=backends[0])
        peak = tracemalloc.get_traced_memory()[1] / 2**30
        tracemalloc.stop()
        print(
            f"  working memory of rad4xcnn spearman ({backends[0]}), beyond the input tables: {peak:.2f} GB"
        )
    if not permutations:
        return
    runs = [(b, args.permutations) for b in backends if b != "torch:cuda" and args.permutations]
    if gpu and args.gpu_permutations:
        permutation_null(deep, rad, n_permutations=10, backend="torch:cuda")  # warm-up
        runs.append(("torch:cuda", args.gpu_permutations))
    for backend, count in runs:
        seconds, null = timed(
            lambda b=backend, k=count: permutation_null(deep, rad, n_permutations=k, backend=b), 1
        )
        where = gpu if backend == "torch:cuda" else backend
        line = (
            f"  {count:,} permutations, {where}: {seconds:8.2f} s ({count / seconds:,.0f}/s; "
            f"95th percentile of the null max|rho|: {np.quantile(null, 0.95):.3f})"
        )
        if anchor:
            line += f"; scipy, one call per permutation: ~{anchor[0] * count:,.0f} s (extrapolated)"
        print(line)


def make_strata(index: pd.Index, seed: int = 0) -> pd.Series:
    """Three classes (BUSI's proportions) x two cohorts (3:1), as ``label | cohort`` strata."""
    rng = np.random.default_rng(seed)
    label = rng.choice(["normal", "benign", "malignant"], len(index), p=[0.17, 0.56, 0.27])
    cohort = rng.choice(["internal", "external"], len(index), p=[0.75, 0.25])
    return pd.Series([f"{a} | {b}" for a, b in zip(label, cohort, strict=True)], index=index)


def _pairs(first, second, repeat: int) -> tuple[float, float, float]:
    """Interleaved timings of two calls: (median first, median second, median of the per-pair ratios)."""
    a, b = [], []
    for _ in range(repeat):
        a.append(timed(first)[0])
        b.append(timed(second)[0])
    ratios = [y / x for x, y in zip(a, b, strict=True)]
    return float(np.median(a)), float(np.median(b)), float(np.median(ratios))


def bench_stratified(n: int, args: argparse.Namespace, backend: str, permutations: bool) -> None:
    deep, rad = make_tables(n, args.deep, args.radiomic)
    strata = make_strata(deep.index)
    print(f"\nN = {n:,} cases, {strata.nunique()} strata (smallest {strata.value_counts().min()}), {backend}")
    spearman(deep.iloc[:50], rad.iloc[:50], backend=backend)  # warm-up
    pooled, within, ratio = _pairs(
        lambda: spearman(deep, rad, backend=backend),
        lambda: spearman_within(deep, rad, strata, backend=backend),
        args.repeat,
    )
    print(f"  rho, p, q pooled: {pooled:7.2f} s; within strata: {within:7.2f} s; ratio {ratio:.2f}x")
    pooled, within, ratio = _pairs(
        lambda: explain(
            deep, rad, ExplainConfig(thresholds=[0.6], bootstrap=0, backend=backend, fdr=None, permutations=0)
        ),
        lambda: explain(
            deep,
            rad,
            ExplainConfig(thresholds=[0.6], bootstrap=0, backend=backend, fdr=None, permutations=0),
            strata=strata,
        ),
        args.repeat,
    )
    print(
        f"  explain pooled: {pooled:7.2f} s; explain --stratify (pooled, within, clusters): {within:7.2f} s; "
        f"ratio {ratio:.2f}x"
    )
    if not (permutations and args.permutations):
        return
    count = args.permutations
    pooled, within, ratio = _pairs(
        lambda: permutation_null(deep, rad, n_permutations=count, backend=backend),
        lambda: permutation_null(deep, rad, n_permutations=count, backend=backend, strata=strata),
        max(1, args.repeat // 2),
    )
    print(
        f"  {count:,} permutations pooled: {pooled:7.2f} s ({count / pooled:,.0f}/s); within strata: "
        f"{within:7.2f} s ({count / within:,.0f}/s); ratio {ratio:.2f}x"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[780, 10_000], help="cases (default 780 10000)")
    parser.add_argument("--deep", type=int, default=2048, help="deep features (2048, ResNet50)")
    parser.add_argument("--radiomic", type=int, default=474, help="radiomic features (474, the paper's)")
    parser.add_argument("--permutations", type=int, default=1000, help="CPU permutations at the smallest N")
    parser.add_argument("--gpu-permutations", type=int, default=10_000, help="GPU permutations, if a GPU")
    parser.add_argument(
        "--backends", default="numpy,torch:cpu", help="CPU backends to time (comma-separated)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="repeats; the best time is kept")
    parser.add_argument("--no-anchor", action="store_true", help="skip scipy (for very large N)")
    parser.add_argument("--memory", action="store_true", help="also measure the engine's working memory")
    parser.add_argument("--quick", action="store_true", help="N = 300, 256 x 64 features, 50 permutations")
    parser.add_argument(
        "--stratified", action="store_true", help="time within-strata statistics against the pooled ones"
    )
    args = parser.parse_args()
    if args.quick:
        args.n, args.deep, args.radiomic, args.permutations, args.gpu_permutations = [300], 256, 64, 50, 200
    backends = [b for b in args.backends.split(",") if b]
    gpu = gpu_name()
    if gpu:
        backends.append("torch:cuda")

    print(f"rad4xcnn correlation benchmark: {args.deep} deep x {args.radiomic} radiomic features")
    print(f"  {versions()}; GPU: {gpu or 'none'}")
    if args.stratified:
        for n in args.n:
            for backend in backends:
                bench_stratified(n, args, backend, permutations=n == min(args.n))
        return 0
    for n in args.n:
        bench_one_n(n, args, backends, gpu, permutations=n == min(args.n))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
