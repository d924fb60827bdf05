"""Benchmark of 3D radiomics: the radiomics stage against PyRadiomics alone on the same volumes, measured
in the same run, serial and with worker processes (figures in BENCHMARKS.md, "Radiomics on 3D volumes").

The volumes are the synthetic 3D cohort (``rad4xcnn synth --dims 3``): NRRD, int16, anisotropic voxels of
0.8 x 0.8 x 2.0 mm. PyRadiomics alone means one ``RadiomicsFeatureExtractor`` built from the same parameter
file, ``execute()`` on each image and mask file; with N processes, a pool of N workers each holding one.

    python benchmarks/bench_radiomics3d.py                  # 100 volumes of 128 x 128 x 64, paper3d
    python benchmarks/bench_radiomics3d.py --n 8 --jobs 2   # fewer volumes on a busy machine
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

_EXTRACTOR = None


def _init(params_path: str) -> None:
    global _EXTRACTOR
    from radiomics import featureextractor

    from Rad4XCNNLogic.features.radiomics import init_worker

    init_worker()  # one thread per worker, as the radiomics stage's workers
    _EXTRACTOR = featureextractor.RadiomicsFeatureExtractor(params_path)


def _one(paths: tuple[str, str]) -> dict:
    image, mask = paths
    return {k: v for k, v in _EXTRACTOR.execute(image, mask, label=1).items() if not k.startswith("diag")}


def direct(cases, params_path: Path, jobs: int) -> tuple[float, float, list[dict]]:
    """Wall and CPU seconds (CPU: this process only) of PyRadiomics alone over the cases, in this process
    (jobs 1) or a pool of ``jobs``."""
    from Rad4XCNNLogic.features.radiomics import worker_context

    paths = [(str(c.image), str(c.masks[0])) for c in cases]
    start, cpu = time.perf_counter(), time.process_time()
    if jobs == 1:
        _init(str(params_path))
        values = [_one(p) for p in paths]
    else:
        with worker_context().Pool(jobs, initializer=_init, initargs=(str(params_path),)) as pool:
            values = pool.map(_one, paths, chunksize=1)
    return time.perf_counter() - start, time.process_time() - cpu, values


def ours(cases, params, jobs: int):
    from Rad4XCNNLogic.features.radiomics import extract_radiomics

    start, cpu = time.perf_counter(), time.process_time()
    result = extract_radiomics(cases, params, jobs=jobs, cache_dir=None, progress=False)
    return time.perf_counter() - start, time.process_time() - cpu, result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="volumes (default 100)")
    parser.add_argument("--shape", default="128x128x64", help="ROWSxCOLSxSLICES (default 128x128x64)")
    parser.add_argument("--params", default="paper3d", help="preset or YAML file (default paper3d)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes besides the serial run")
    args = parser.parse_args(argv)
    shape = tuple(int(v) for v in args.shape.lower().split("x"))

    import numpy as np

    from Rad4XCNNLogic.cohort.manifest import read_manifest
    from Rad4XCNNLogic.cohort.synthetic3d import make_synthetic_volumes
    from Rad4XCNNLogic.features.radiomics import library_versions, prepare_process
    from Rad4XCNNLogic.features.radiomics_params import resolve_params
    from Rad4XCNNLogic.infra.environment import available_cpus, cpu_name

    logging.basicConfig(level=logging.WARNING)
    prepare_process(limit_threads=False)
    params = resolve_params(args.params)
    print(f"machine: {cpu_name()}, {available_cpus()} cores usable; Python {platform.python_version()}")
    print("load average before: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    print("versions: " + ", ".join(f"{k} {v}" for k, v in library_versions().items()))
    with tempfile.TemporaryDirectory(prefix="bench_radiomics3d_") as tmp:
        start = time.perf_counter()
        manifest = make_synthetic_volumes(Path(tmp), args.n, seed=0, shape=shape)
        cases = read_manifest(manifest).cases
        print(
            f"cohort: {len(cases)} volumes of {shape[0]}x{shape[1]}x{shape[2]} voxels (0.8 x 0.8 x 2.0 mm), "
            f"written in {time.perf_counter() - start:.1f} s; params {params.name}"
        )
        ours(cases[:1], params, 1)  # warm imports and the extractor
        runs = {}
        for jobs in sorted({1, args.jobs}):
            runs[("PyRadiomics alone", jobs)] = direct(cases, params.path, jobs)
            runs[("Rad4XCNN radiomics stage", jobs)] = ours(cases, params, jobs)
        n_features = runs[("Rad4XCNN radiomics stage", 1)][2].features.shape[1]
        print(
            f"\n{'':28}{'processes':>10}{'wall s':>10}{'s / volume':>12}{'CPU s / volume':>16}"
            f"   ({n_features} features; CPU: serial runs only)"
        )
        for (what, jobs), (seconds, cpu, _) in runs.items():
            cpu_text = f"{cpu / len(cases):16.2f}" if jobs == 1 else f"{'':16}"
            print(f"{what:<28}{jobs:>10}{seconds:>10.1f}{seconds / len(cases):>12.2f}{cpu_text}")
        table = runs[("Rad4XCNN radiomics stage", 1)][2].features
        alone = runs[("PyRadiomics alone", 1)][2]
        worst = 0.0
        for case, values in zip(cases, alone, strict=True):
            mine = table.loc[case.case_id]
            for name, value in values.items():
                a, b = float(mine[name]), float(value)
                if np.isfinite(a) and np.isfinite(b):
                    worst = max(worst, abs(a - b) / max(1e-12, abs(b)))
        print(f"largest relative difference of a feature, stage vs PyRadiomics alone: {worst:.2e}")
    print("load average after: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
