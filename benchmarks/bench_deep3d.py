"""2.5D deep features: seconds per volume of 128 x 128 x 64 (spacing 0.8 x 0.8 x 2 mm) on the CPU.

Each volume's lesion slices (at most ``--max-slices``) go through resnet50 (random weights: the time does not
depend on them) at 224 pixels, pooled by mean and max. Run from the repository root:

    python benchmarks/bench_deep3d.py --n 4 --threads 2
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
        extract_deep_features(warm, args.model, device="cpu", progress=False, max_slices=2)
        t0 = time.perf_counter()
        result = extract_deep_features(
            cohort, args.model, device="cpu", progress=False, max_slices=args.max_slices
        )
        seconds = time.perf_counter() - t0
    slices = result.settings["volumes"]["slices_computed"]
    print(
        f"{args.n} volumes 128x128x64, {args.model} at {result.settings['preprocess']['input_size']} px, "
        f"{slices} slices (max {args.max_slices} per volume), {args.threads} threads, load "
        f"{os.getloadavg()[0]:.1f}: {seconds:.1f} s, {seconds / args.n:.2f} s per volume, "
        f"{seconds / slices:.3f} s per slice"
    )


if __name__ == "__main__":
    main()
