"""The 3D demo profile (``rad4xcnn demo --dims 3``): a small synthetic cohort of CT-like volumes through the
whole pipeline (``rad4xcnn run``: 3D radiomics with ``paper3d``, 2.5D deep features of a ResNet18
fine-tuned on the lesion slices beside its random-weights control, the explanation, the classifiers, CAM
volumes and the report), then voxel-based feature maps with a 3D kernel for the largest lesions.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

#: The 3D demo's volumes: (rows, columns, slices), small enough for a laptop in a few minutes.
DEMO3D_SHAPE = (32, 32, 16)
#: The voxel-based maps the demo draws (a first-order and a texture feature), and their kernel radius.
DEMO3D_FEATURES = ("original_firstorder_Mean", "original_glcm_Contrast")
DEMO3D_KERNEL_RADIUS = 1


@dataclass
class Demo3DResult:
    """What the 3D demo wrote: the cohort's manifest, the run (a
    :class:`~Rad4XCNNLogic.run.runner.RunResult`) and the feature-map folder with its number of maps."""

    manifest: Path
    run: object
    featuremaps: Path
    maps: int = 0


def demo3d_config(out: str | os.PathLike, manifest: str | os.PathLike, seed: int = 0):
    """The 3D demo's run settings: every stage on volumes with demo budgets (64 px slices, at most 4 lesion
    slices per case, 4 epochs, fewer resamples than a study would use)."""
    from Rad4XCNNLogic.run.config import load_config

    return load_config(
        None,
        {
            "manifest": str(manifest),
            "out": str(out),
            "seed": seed,
            "training": {
                "pretrained": False,
                "epochs": 4,
                "batch_size": 16,
                "patience": 2,
                "input_size": 64,
                "learning_rate": 1e-3,
            },
            "models": [{"name": "resnet18", "weights": "trained"}],
            "deep": {"input_size": 64, "max_slices": 4},
            "explain": {"permutations": 200, "bootstrap": 50, "control_bootstrap": 50},
            "classification": {
                "classifiers": ["rf", "svm"],
                "cv_folds": 3,
                "n_bootstrap": 200,
                "repeated_splits": 3,
            },
            "cam": {"methods": ["gradcam", "eigencam"], "gallery": 4, "randomisation": "all"},
        },
    )


def run_demo3d(
    out: str | os.PathLike,
    n: int = 24,
    *,
    seed: int = 0,
    separation: float = 0.6,
    shape: tuple[int, int, int] = DEMO3D_SHAPE,
    map_cases: int = 2,
    progress: bool = True,
) -> Demo3DResult:
    """Write the synthetic 3D cohort (if not there yet, for the same ``n``, ``seed`` and ``shape``) under
    ``out/cohort``, run the pipeline on it into ``out/run`` (:func:`demo3d_config`; a re-run recomputes
    nothing), then the voxel-based maps of :data:`DEMO3D_FEATURES` for the ``map_cases`` largest lesions in
    ``out/run/featuremaps``."""
    import json

    import pandas as pd

    from Rad4XCNNLogic.cam.featuremaps import compute_feature_maps
    from Rad4XCNNLogic.cohort.manifest import read_manifest
    from Rad4XCNNLogic.cohort.synthetic3d import make_synthetic_volumes
    from Rad4XCNNLogic.run.runner import run_pipeline

    out = Path(out)
    cohort_dir, run_dir = out / "cohort", out / "run"
    spec = {"n": n, "seed": seed, "separation": separation, "shape": list(shape)}
    spec_file = cohort_dir / "demo3d.json"
    manifest = cohort_dir / "manifest.csv"
    try:
        same = json.loads(spec_file.read_text(encoding="utf-8")) == spec and manifest.is_file()
    except (OSError, ValueError):
        same = False
    if not same:
        log.info(
            "writing the synthetic 3D cohort (%d volumes of %s) to %s",
            n,
            "x".join(map(str, shape)),
            cohort_dir,
        )
        manifest = make_synthetic_volumes(cohort_dir, n, seed=seed, separation=separation, shape=shape)
        spec_file.write_text(json.dumps(spec), encoding="utf-8")
    result = run_pipeline(demo3d_config(run_dir, manifest, seed), progress=progress)
    cohort = read_manifest(manifest)
    # the largest lesions: a small one may be thinner than the kernel's 3 slices
    factors = pd.read_csv(cohort_dir / "factors.csv", dtype={"case_id": str}).set_index("case_id")
    sizes = factors["lesion_volume_mm3"].reindex([c.case_id for c in cohort.cases if c.has_lesion])
    lesions = list(sizes.sort_values(ascending=False, kind="stable").index[: int(map_cases)])
    maps = compute_feature_maps(
        cohort,
        list(DEMO3D_FEATURES),
        cases=lesions,
        params="paper3d",
        kernel_radius=DEMO3D_KERNEL_RADIUS,
        out_dir=run_dir / "featuremaps",
    )
    return Demo3DResult(manifest, result, run_dir / "featuremaps", len(maps.table))
