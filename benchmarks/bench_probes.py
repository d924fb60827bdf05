"""Benchmark of the probes against a per-feature scikit-learn ``RidgeCV`` loop, measured in the same run.

Synthetic Gaussian data with planted structure (no images): N cases, 4 layers of ResNet50's widths (256,
512, 1024, 2048 features) and 474 radiomic features that share 16 latent factors with the layers, split
80/20 into training and held-out cases. Rad4XCNN probes every radiomic feature from every layer (penalty
grid of 8, 5-fold CV, 1,000 bootstrap resamples of the held-out R²) on numpy, torch on the CPU and, where
torch sees one, the GPU. The anchor is what one would write with scikit-learn: per radiomic feature,
``RidgeCV(alphas=grid, cv=the same 5 folds)`` on the standardised training features, then R² on the held-out
cases (no bootstrap, which favours the anchor); it runs on a subset of features per layer and is
extrapolated to 474 x 4. The values are checked to agree on that subset. Also timed: scikit-learn's own
multi-target path, ``RidgeCV(alpha_per_target=True)`` with its leave-one-out shortcut (another CV).

    python benchmarks/bench_probes.py              # N = 780, 474 features, 4 layers; anchor on 3 per layer
    python benchmarks/bench_probes.py --quick      # N = 200, 60 features: seconds
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import timed

from Rad4XCNNLogic.explain.probes import fold_labels, rank_transform, run_probes
from Rad4XCNNLogic.explain.settings import DEFAULT_PENALTIES, ProbeConfig
from Rad4XCNNLogic.infra.environment import available_cpus, cpu_name
from Rad4XCNNLogic.names import layer_columns

WIDTHS = {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048}


def make_tables(n: int, n_rad: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Four ReLU layers and a radiomic table sharing 16 latent factors (deeper layers carry more of them)."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n, 16))
    cases = [f"case{i:04d}" for i in range(n)]
    blocks = []
    for depth, (layer, width) in enumerate(WIDTHS.items(), start=1):
        signal = latent @ rng.normal(size=(16, width)) * (0.15 * depth)
        blocks.append(
            pd.DataFrame(
                np.maximum(signal + rng.standard_normal((n, width)), 0),
                index=cases,
                columns=layer_columns("resnet50", layer, width),
            )
        )
    rad = np.exp(0.3 * (latent @ rng.normal(size=(16, n_rad))) + rng.normal(size=(n, n_rad)))
    names = [f"original_firstorder_F{k}" for k in range(n_rad)]
    return pd.concat(blocks, axis=1), pd.DataFrame(rad, index=cases, columns=names)


def sklearn_loop(deep, rad, train, held, columns, features, folds: int, seed: int):
    """Per radiomic feature: StandardScaler + RidgeCV over the grid with the same folds, R² on held-out."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import PredefinedSplit

    x = deep.loc[train + held, columns].to_numpy(np.float64)
    mean, sd = x[: len(train)].mean(0), x[: len(train)].std(0)
    sd[sd == 0] = 1
    x = (x - mean) / sd
    y_all = rank_transform(rad.loc[train].to_numpy(np.float64), rad.loc[train + held].to_numpy(np.float64))
    split = PredefinedSplit(fold_labels(len(train), folds, seed))
    r2 = {}
    for name in features:
        j = rad.columns.get_loc(name)
        y_train, y_test = y_all[: len(train), j], y_all[len(train) :, j]
        model = RidgeCV(alphas=DEFAULT_PENALTIES, cv=split).fit(x[: len(train)], y_train)
        pred = model.predict(x[len(train) :])
        r2[name] = 1 - np.sum((y_test - pred) ** 2) / np.sum((y_test - y_train.mean()) ** 2)
    return r2


def sklearn_multitarget(deep, rad, train, columns):
    from sklearn.linear_model import RidgeCV

    x = deep.loc[train, columns].to_numpy(np.float64)
    x = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1)
    y = rank_transform(rad.loc[train].to_numpy(np.float64), rad.loc[train].to_numpy(np.float64))
    return RidgeCV(alphas=DEFAULT_PENALTIES, alpha_per_target=True).fit(x, y)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=780)
    parser.add_argument("--radiomic", type=int, default=474)
    parser.add_argument("--anchor-features", type=int, default=3, help="radiomic features per layer, anchor")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    logging.getLogger("Rad4XCNNLogic").setLevel(logging.ERROR)  # no control here: no warning per run
    if args.quick:
        args.n, args.radiomic, args.anchor_features, args.repeat = 200, 60, 2, 1
    folds, seed = 5, 0
    import sklearn
    import torch

    print(
        f"machine: {cpu_name()}, {available_cpus()} usable cores; python {platform.python_version()}, "
        f"numpy {np.__version__}, torch {torch.__version__}, scikit-learn {sklearn.__version__}"
    )
    deep, rad = make_tables(args.n, args.radiomic)
    ids = list(deep.index)
    cut = int(0.8 * len(ids))
    train, held = ids[:cut], ids[cut:]
    layers = len(WIDTHS)
    print(
        f"N = {args.n} ({len(train)} training, {len(held)} held-out), {args.radiomic} radiomic features x "
        f"{layers} layers ({', '.join(f'{k} {v}' for k, v in WIDTHS.items())}); {len(DEFAULT_PENALTIES)} "
        f"penalties, {folds}-fold CV, {args.bootstrap} bootstrap resamples"
    )
    backends = ["numpy", "torch:cpu"] + (["torch:cuda"] if torch.cuda.is_available() else [])
    results = {}
    for backend in backends:
        if backend == "torch:cuda":  # warm-up: CUDA context and kernels
            run_probes(deep, rad, train, held, ProbeConfig(bootstrap=10, backend=backend))
        seconds, result = timed(
            lambda b=backend: run_probes(
                deep,
                rad,
                train,
                held,
                ProbeConfig(folds=folds, bootstrap=args.bootstrap, backend=b),
                seed=seed,
            ),
            repeat=args.repeat,
        )
        results[backend] = (seconds, result.probes)
        name = torch.cuda.get_device_name(0) if backend == "torch:cuda" else "CPU"
        print(f"  rad4xcnn probes, {backend:10s} ({name}): {seconds:7.2f} s for {len(result.probes)} probes")
    base = results["numpy"][1]
    for backend, (_, probes) in results.items():
        diff = np.nanmax(np.abs(probes["r2"].to_numpy() - base["r2"].to_numpy()))
        print(f"  max |R² difference| {backend} vs numpy: {diff:.2e}")

    rng = np.random.default_rng(1)
    subset = list(rng.choice(rad.columns, size=min(args.anchor_features, args.radiomic), replace=False))
    anchor_seconds, worst = 0.0, 0.0
    for layer in WIDTHS:
        columns = [c for c in deep.columns if c.startswith(f"resnet50.{layer}_")]
        seconds, r2 = timed(lambda c=columns: sklearn_loop(deep, rad, train, held, c, subset, folds, seed))
        anchor_seconds += seconds
        ours = base[base["layer"] == layer].set_index("radiomic_feature")["r2"]
        worst = max(worst, max(abs(ours[k] - v) for k, v in r2.items()))
    per_feature = anchor_seconds / len(subset)
    extrapolated = per_feature * args.radiomic
    print(
        f"  scikit-learn RidgeCV loop: {anchor_seconds:.2f} s for {len(subset)} features x {layers} layers "
        f"= {per_feature:.2f} s per feature (4 layers); x {args.radiomic} = {extrapolated:.0f} s "
        "(extrapolated)"
    )
    print(f"  max |R² difference| on that subset, RidgeCV vs rad4xcnn: {worst:.2e}")
    ours = results["numpy"][0]
    print(f"  ratio: {extrapolated / ours:.0f}x (numpy, with the bootstrap; the loop has none)")
    multi = 0.0
    for layer in WIDTHS:
        columns = [c for c in deep.columns if c.startswith(f"resnet50.{layer}_")]
        seconds, _ = timed(lambda c=columns: sklearn_multitarget(deep, rad, train, c))
        multi += seconds
    print(
        "  scikit-learn RidgeCV(alpha_per_target=True), leave-one-out GCV, all features at once: "
        f"{multi:.2f} s for the 4 layers (no held-out R², no K-fold)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
