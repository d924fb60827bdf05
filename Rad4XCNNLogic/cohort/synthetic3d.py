"""A synthetic cohort of 3D volumes (CT-like, anisotropic voxels) with planted, documented lesion factors.

Each volume is soft tissue with smooth structure and noise, in integer CT-like units, holding one lesion: an
ellipsoid whose surface is perturbed by smooth noise, with a textured interior. The lesion's factors are
drawn per class and written to ``factors.csv``, so that tests can check that 3D radiomics recovers them:

=====================  ===============================  ===================================
factor                 benign                           malignant
=====================  ===============================  ===================================
``radius_fraction``    0.10–0.20 of the smallest side   0.14–0.26
``elongation``         1.2–1.6 (longest / shortest)     1.0–1.25
``irregularity``       0.00–0.06 (smooth surface)       0.20–0.45 (lobulated: less spherical)
``heterogeneity``      10–30 (std. of the interior)     60–120 (heterogeneous interior)
``contrast``           40–70 above the tissue           10–40
=====================  ===============================  ===================================

``planted_volume_mm3`` is the volume of the unperturbed ellipsoid (4/3 pi a b c, in mm^3);
``lesion_volume_mm3`` the volume of the voxels of the mask as written. ``separation`` (0–1) moves the
class ranges towards the pooled range, as for the 2D cohort (:mod:`~Rad4XCNNLogic.cohort.synthetic`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from Rad4XCNNLogic.cohort.synthetic import BENIGN, MALIGNANT, NORMAL, manifest_row, write_cohort_tables
from Rad4XCNNLogic.errors import Rad4XCNNError

#: (low, high) of each factor per class; documented in the module docstring.
FACTOR_RANGES_3D: dict[str, dict[str, tuple[float, float]]] = {
    "radius_fraction": {BENIGN: (0.10, 0.20), MALIGNANT: (0.14, 0.26)},
    "elongation": {BENIGN: (1.2, 1.6), MALIGNANT: (1.0, 1.25)},
    "irregularity": {BENIGN: (0.0, 0.06), MALIGNANT: (0.2, 0.45)},
    "heterogeneity": {BENIGN: (10.0, 30.0), MALIGNANT: (60.0, 120.0)},
    "contrast": {BENIGN: (40.0, 70.0), MALIGNANT: (10.0, 40.0)},
}
#: Default volume size (rows, columns, slices) and voxel spacing (x, y, z) in mm.
DEFAULT_SHAPE_3D = (64, 64, 32)
DEFAULT_SPACING_3D = (0.8, 0.8, 2.0)


def _draw(rng: np.random.Generator, label: str, separation: float) -> dict[str, float]:
    factors = {}
    for name, ranges in FACTOR_RANGES_3D.items():
        lo_c, hi_c = ranges[label]
        lo_p = min(r[0] for r in ranges.values())
        hi_p = max(r[1] for r in ranges.values())
        lo = separation * lo_c + (1.0 - separation) * lo_p
        hi = separation * hi_c + (1.0 - separation) * hi_p
        factors[name] = float(rng.uniform(lo, hi))
    return factors


def _unit_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    return field / (field.std() + 1e-12)


def synthesize_volume(
    rng: np.random.Generator,
    label: str,
    shape: tuple[int, int, int] = DEFAULT_SHAPE_3D,
    spacing: tuple[float, float, float] = DEFAULT_SPACING_3D,
    separation: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """One volume: ``(image int16 (slices, rows, cols), mask bool, factors)``; ``normal``: empty mask."""
    if label not in (BENIGN, MALIGNANT, NORMAL):
        raise Rad4XCNNError(f"unknown synthetic class {label!r}; expected benign, malignant or normal")
    rows, cols, slices = shape
    grid = (slices, rows, cols)
    sx, sy, sz = spacing
    # voxel sigma of ~2 mm structure in every direction, whatever the spacing
    tissue = 40.0 + 15.0 * _unit_noise(rng, grid, (2.0 / sz, 2.0 / sy, 2.0 / sx))
    factors: dict[str, float] = dict.fromkeys(FACTOR_RANGES_3D, 0.0)
    mask = np.zeros(grid, dtype=bool)
    planted = 0.0
    if label != NORMAL:
        factors = _draw(rng, label, separation)
        extent_mm = np.array([cols * sx, rows * sy, slices * sz])
        radius = factors["radius_fraction"] * float(extent_mm.min())
        stretch = factors["elongation"] ** (1.0 / 3.0)
        a, b, c = radius * stretch, radius * stretch, radius / stretch**2  # x, y, z semi-axes (mm)
        a *= float(rng.uniform(0.9, 1.1))
        planted = 4.0 / 3.0 * np.pi * a * b * c
        centre = [
            float(rng.uniform(0.4, 0.6)) * extent_mm[0],
            float(rng.uniform(0.4, 0.6)) * extent_mm[1],
            float(rng.uniform(0.45, 0.55)) * extent_mm[2],
        ]
        zz, yy, xx = np.meshgrid(
            (np.arange(slices) + 0.5) * sz,
            (np.arange(rows) + 0.5) * sy,
            (np.arange(cols) + 0.5) * sx,
            indexing="ij",
        )
        distance = np.sqrt(
            ((xx - centre[0]) / a) ** 2 + ((yy - centre[1]) / b) ** 2 + ((zz - centre[2]) / c) ** 2
        )
        smooth = radius / 4.0  # surface bumps about a quarter of a radius wide
        wobble = _unit_noise(rng, grid, (smooth / sz, smooth / sy, smooth / sx))
        mask = distance <= 1.0 + factors["irregularity"] * wobble
        interior = factors["contrast"] + factors["heterogeneity"] * _unit_noise(
            rng, grid, (1.0 / sz, 1.0 / sy, 1.0 / sx)
        )
        tissue = np.where(mask, tissue + interior, tissue)
    image = np.round(tissue + 6.0 * rng.standard_normal(grid)).astype(np.int16)
    voxel = sx * sy * sz
    factors.update(
        planted_volume_mm3=float(planted),
        lesion_volume_mm3=float(mask.sum() * voxel),
        lesion_voxels=float(mask.sum()),
    )
    return image, mask, factors


def write_volume(path: Path, array: np.ndarray, spacing: tuple[float, float, float]) -> None:
    """Write a (slices, rows, cols) array as a compressed NRRD (or any SimpleITK format) with ``spacing``."""
    import SimpleITK as sitk

    from Rad4XCNNLogic.cohort.imageio import write_sitk

    img = sitk.GetImageFromArray(array)
    img.SetSpacing(tuple(float(s) for s in spacing))
    write_sitk(path, img)


def make_synthetic_volumes(
    out: str | os.PathLike,
    n: int = 40,
    *,
    seed: int = 0,
    n_external: int = 0,
    malignant_fraction: float = 0.4,
    normal_fraction: float = 0.0,
    shape: tuple[int, int, int] = DEFAULT_SHAPE_3D,
    spacing: tuple[float, float, float] = DEFAULT_SPACING_3D,
    separation: float = 1.0,
) -> Path:
    """Write a synthetic 3D cohort to ``out`` (NRRD volumes, masks, ``manifest.csv``, ``factors.csv``).

    The same labels, cohorts and seeding as :func:`~Rad4XCNNLogic.cohort.synthetic.make_synthetic_cohort`;
    ``shape`` is (rows, columns, slices), ``spacing`` (x, y, z) in mm. Returns the manifest's path.

    Examples
    --------
    >>> manifest = make_synthetic_volumes("synthetic3d", n=20, shape=(32, 32, 16))  # doctest: +SKIP
    """

    from Rad4XCNNLogic.cohort.synthetic import check_proportions, class_sequence
    from Rad4XCNNLogic.infra.storage import write_json_atomic

    check_proportions(n, n_external, separation, malignant_fraction, normal_fraction)
    shape = tuple(int(s) for s in shape)  # type: ignore[assignment]
    if len(shape) != 3 or min(shape[:2]) < 16 or shape[2] < 8:
        raise Rad4XCNNError(f"volumes must be at least 16x16x8 voxels (rows x cols x slices), got {shape}")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise Rad4XCNNError(f"spacing must be three positive numbers (x, y, z) in mm, got {tuple(spacing)}")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    manifest_rows, factor_rows = [], []
    for cohort, count, code in (("internal", n, 0), ("external", n_external, 1)):
        labels = class_sequence(count, malignant_fraction, normal_fraction, seed, code)
        prefix = "vol" if cohort == "internal" else "evol"
        for i, label in enumerate(labels):
            case_id = f"{prefix}{i + 1:04d}"
            rng = np.random.default_rng([seed, code, i, 3])
            image, mask, factors = synthesize_volume(rng, label, shape, spacing, separation)
            if cohort == "external":
                image = np.round(image * 1.1 + 5).astype(np.int16)  # another scanner's calibration
            image_path = out / "images" / f"{case_id}.nrrd"
            mask_path = out / "masks" / f"{case_id}_mask.nrrd"
            write_volume(image_path, image, spacing)
            write_volume(mask_path, mask.astype(np.uint8), spacing)
            manifest_rows.append(manifest_row(case_id, image_path, mask_path, label, cohort))
            factor_rows.append({"case_id": case_id, "label": label, "cohort": cohort, **factors})
    manifest_path = write_cohort_tables(out, manifest_rows, factor_rows)
    write_json_atomic(
        out / "synthetic.json",
        {
            "generator": "Rad4XCNNLogic.cohort.synthetic3d",
            "dims": 3,
            "n": n,
            "n_external": n_external,
            "malignant_fraction": malignant_fraction,
            "normal_fraction": normal_fraction,
            "shape": list(shape),
            "spacing": list(spacing),
            "separation": separation,
            "seed": seed,
            "factor_ranges": FACTOR_RANGES_3D,
        },
    )
    return manifest_path
