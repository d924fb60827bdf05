"""The 3D demo profile (``rad4xcnn demo --dims 3``): a small synthetic cohort of CT-like volumes and what
runs on volumes today: 3D radiomics (``paper3d``) and voxel-based feature maps with a 3D kernel.

Deep features, fine-tuning, the explanation, classification and saliency maps on volumes need the 2.5D
extractor, which is not built yet: the profile leaves them out and says so in one line (:data:`LEFT_OUT`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

#: The one line the 3D demo prints about the stages it cannot run yet.
LEFT_OUT = (
    "3D demo: radiomics and feature maps only; deep features, fine-tuning, the explanation, classification "
    "and CAMs on volumes need the 2.5D extractor, not yet built"
)
#: The 3D demo's volumes: (rows, columns, slices), small enough for a laptop in about a minute.
DEMO3D_SHAPE = (32, 32, 16)
#: The voxel-based maps the demo draws (a first-order and a texture feature), and their kernel radius.
DEMO3D_FEATURES = ("original_firstorder_Mean", "original_glcm_Contrast")
DEMO3D_KERNEL_RADIUS = 1


@dataclass
class Demo3DResult:
    """What the 3D demo wrote: the cohort's manifest, ``radiomics.csv``, the feature-map folder."""

    manifest: Path
    radiomics: Path
    featuremaps: Path
    summary: dict = field(default_factory=dict)
    maps: int = 0


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
    ``out/cohort``, then ``out/run/radiomics.csv`` (``paper3d``) and the voxel-based maps of
    :data:`DEMO3D_FEATURES` for the ``map_cases`` largest lesions in ``out/run/featuremaps``."""
    import json

    import pandas as pd

    from Rad4XCNNLogic.cam.featuremaps import compute_feature_maps
    from Rad4XCNNLogic.cohort.manifest import read_manifest
    from Rad4XCNNLogic.cohort.synthetic3d import make_synthetic_volumes
    from Rad4XCNNLogic.run.config import load_config
    from Rad4XCNNLogic.run.work import radiomics_stage

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
        print(f"writing the synthetic 3D cohort ({n} volumes of {'x'.join(map(str, shape))}) to {cohort_dir}")
        manifest = make_synthetic_volumes(cohort_dir, n, seed=seed, separation=separation, shape=shape)
        spec_file.write_text(json.dumps(spec), encoding="utf-8")
    # the default preset, paper, is read as paper3d on volumes
    cfg = load_config(None, {"manifest": str(manifest), "out": str(run_dir)})
    cohort = read_manifest(manifest)
    summary = radiomics_stage(
        cohort,
        run_dir / "radiomics.csv",
        radiomics=cfg.radiomics,
        cache_dir=run_dir / "cache" / "radiomics",
        progress=progress,
    )
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
    return Demo3DResult(
        manifest, run_dir / "radiomics.csv", run_dir / "featuremaps", summary, len(maps.table)
    )
