"""Deep features of volumes: seconds per volume of 128 x 128 x 64 (spacing 0.8 x 0.8 x 2 mm) on the CPU.

2.5D (a timm model, default resnet50 at 224 pixels): each volume's lesion slices (at most ``--max-slices``),
pooled by mean and max. A native 3D network (``--model monai_resnet18``, needs MONAI): one lesion cube per
volume, ``--input-size`` voxels a side (default the network's, 64). Random weights: the time does not depend
on them. Run from the repository root:

    python benchmarks/bench_deep3d.py --n 100 --threads 2
    python benchmarks/bench_deep3d.py --n 100 --threads 2 --model monai_resnet18
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4, help="volumes")
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--max-slices", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--input-size", type=int, default=None, help="model input (None: the model's)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from Rad4XCNNLogic.cohort.manifest import read_manifest
    from Rad4XCNNLogic.cohort.synthetic3d import make_synthetic_volumes
    from Rad4XCNNLogic.features.deep import extract_deep_features

    with tempfile.TemporaryDirectory() as folder:
        manifest = make_synthetic_volumes(folder, n=args.n, seed=0, shape=(128, 128, 64))
        cohort = read_manifest(manifest)
        warm = cohort.cases[:1]
        common = {"device": "cpu", "progress": False, "input_size": args.input_size}
        extract_deep_features(warm, args.model, max_slices=2, **common)
        t0 = time.perf_counter()
        result = extract_deep_features(cohort, args.model, max_slices=args.max_slices, **common)
        seconds = time.perf_counter() - t0
    size = result.settings["preprocess"]["input_size"]
    volumes = result.settings["volumes"]
    if volumes.get("network") == "3d":
        what = f"one cube of {size}^3 voxels per volume"
        per_item = ""
    else:
        slices = volumes["slices_computed"]
        what = f"{size} px, {slices} slices (max {args.max_slices} per volume)"
        per_item = f", {seconds / slices:.3f} s per slice"
    print(
        f"{args.n} volumes 128x128x64, {args.model}, {what}, {args.threads} threads, load "
        f"{os.getloadavg()[0]:.1f}: {seconds:.1f} s, {seconds / args.n:.2f} s per volume{per_item}"
    )


if __name__ == "__main__":
    main()
