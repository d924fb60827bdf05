"""A synthetic breast-ultrasound cohort with planted, documented differences between two classes.

Each image is a grey B-mode-like scan: layered tissue (skin, fat, fibroglandular), depth attenuation, fully
developed speckle and log compression, with one hypoechoic lesion. Lesions of the two classes differ in
the factors below; every case's true factors are written to ``factors.csv``, so that later stages can check
that the relations planted here are recovered.

=====================  ===============================  ===================================
factor                 benign                           malignant
=====================  ===============================  ===================================
``aspect_ratio``       1.3–2.0 (oval, wider than tall)  0.7–1.15 (round or taller than wide)
``irregularity``       0.00–0.03 (smooth margin)        0.06–0.16 (lobulated, angular)
``spicules``           0                                4–12 spikes (spiculated margin)
``heterogeneity``      0.03–0.10 (homogeneous)          0.18–0.40 (heterogeneous interior)
``echogenicity``       0.12–0.22 of the surrounding     0.05–0.12 (markedly hypoechoic)
``shadowing``          -0.35–0.00 (posterior enhanc.)   0.35–0.75 (posterior shadowing)
``orientation_deg``    ±10° (parallel to the skin)      ±35°
``radius_fraction``    0.07–0.13 of the image's side    0.09–0.16
=====================  ===============================  ===================================

``separation`` (0–1, default 1) moves every class-specific range towards the pooled range, so that
``separation=0`` gives two classes with identical factor distributions. An ``external`` cohort uses other
scanner settings (gain, speckle size, depth attenuation), a domain shift for external validation.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from Rad4XCNNLogic.errors import Rad4XCNNError

log = logging.getLogger(__name__)

BENIGN, MALIGNANT, NORMAL = "benign", "malignant", "normal"

#: (low, high) of each factor per class; documented in the module docstring.
FACTOR_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "aspect_ratio": {BENIGN: (1.3, 2.0), MALIGNANT: (0.7, 1.15)},
    "irregularity": {BENIGN: (0.0, 0.03), MALIGNANT: (0.06, 0.16)},
    "spicules": {BENIGN: (0, 0), MALIGNANT: (4, 12)},
    "heterogeneity": {BENIGN: (0.03, 0.10), MALIGNANT: (0.18, 0.40)},
    "echogenicity": {BENIGN: (0.12, 0.22), MALIGNANT: (0.05, 0.12)},
    "shadowing": {BENIGN: (-0.35, 0.0), MALIGNANT: (0.35, 0.75)},
    "orientation_deg": {BENIGN: (-10.0, 10.0), MALIGNANT: (-35.0, 35.0)},
    "radius_fraction": {BENIGN: (0.07, 0.13), MALIGNANT: (0.09, 0.16)},
}


@dataclass(frozen=True)
class Scanner:
    """Acquisition settings of a (synthetic) scanner."""

    gain: float = 1.0
    speckle_size: float = 1.0
    attenuation: float = 0.6
    dynamic_range: float = 30.0

    @classmethod
    def for_cohort(cls, cohort: str) -> Scanner:
        return (
            cls()
            if cohort == "internal"
            else cls(gain=1.15, speckle_size=1.5, attenuation=0.9, dynamic_range=26.0)
        )


def _draw_factors(rng: np.random.Generator, label: str, separation: float) -> dict[str, float]:
    factors: dict[str, float] = {}
    for name, ranges in FACTOR_RANGES.items():
        lo_c, hi_c = ranges[label]
        lo_p = min(r[0] for r in ranges.values())
        hi_p = max(r[1] for r in ranges.values())
        lo = separation * lo_c + (1.0 - separation) * lo_p
        hi = separation * hi_c + (1.0 - separation) * hi_p
        if name == "spicules":
            factors[name] = float(rng.integers(round(lo), round(hi) + 1))
        else:
            factors[name] = float(rng.uniform(lo, hi))
    return factors


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    return field / (field.std() + 1e-12)


def _speckle(rng: np.random.Generator, shape: tuple[int, int], size: float) -> np.ndarray:
    """Fully developed speckle: the magnitude of correlated complex Gaussian noise, unit mean power."""
    from scipy.ndimage import gaussian_filter

    sigma = (0.7 * size, 1.6 * size)  # speckle is elongated laterally in B-mode
    re = gaussian_filter(rng.standard_normal(shape), sigma)
    im = gaussian_filter(rng.standard_normal(shape), sigma)
    amp = np.hypot(re, im)
    return amp / np.sqrt(np.mean(amp**2))


def _uniform_within(rng: np.random.Generator, lo: float, hi: float) -> float:
    """A uniform draw in [lo, hi], or the midpoint when the lesion is too large for the range."""
    return float(rng.uniform(lo, hi)) if hi > lo else 0.5 * (lo + hi)


def _lesion_mask(
    rng: np.random.Generator, shape: tuple[int, int], f: dict[str, float]
) -> tuple[np.ndarray, tuple[float, float]]:
    """A star-shaped lesion: an ellipse with a Fourier-perturbed, optionally spiculated margin."""
    rows, cols = shape
    radius = f["radius_fraction"] * min(rows, cols)
    a = radius * np.sqrt(f["aspect_ratio"])  # horizontal semi-axis
    b = radius / np.sqrt(f["aspect_ratio"])  # vertical semi-axis
    phi = np.deg2rad(f["orientation_deg"])
    theta = np.linspace(-np.pi, np.pi, 4096, endpoint=False)
    r = 1.0 / np.sqrt((np.cos(theta - phi) / a) ** 2 + (np.sin(theta - phi) / b) ** 2)
    wobble = np.zeros_like(theta)
    for k in range(3, 9):
        wobble += rng.standard_normal() / np.sqrt(k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    wobble /= wobble.std() + 1e-12
    r = r * (1.0 + f["irregularity"] * wobble)
    for _ in range(int(f["spicules"])):
        centre = rng.uniform(-np.pi, np.pi)
        length = radius * rng.uniform(0.25, 0.6)
        width = rng.uniform(0.04, 0.08)
        delta = np.angle(np.exp(1j * (theta - centre)))
        r = r + length * np.clip(1.0 - np.abs(delta) / width, 0.0, None)
    extent = float(r.max())
    cy = _uniform_within(rng, max(0.3 * rows, extent + 0.05 * rows), min(0.6 * rows, rows - extent - 2))
    cx = _uniform_within(rng, max(0.25 * cols, extent + 2), min(0.75 * cols, cols - extent - 2))
    yy, xx = np.mgrid[0:rows, 0:cols]
    dy, dx = yy - cy, xx - cx
    ang = np.arctan2(dy, dx)
    idx = np.clip(((ang + np.pi) / (2 * np.pi) * theta.size).astype(int), 0, theta.size - 1)
    mask = np.hypot(dy, dx) <= r[idx]
    return mask, (float(cy), float(cx))


def synthesize_case(
    rng: np.random.Generator,
    label: str,
    shape: tuple[int, int] = (256, 320),
    separation: float = 1.0,
    scanner: Scanner | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """One synthetic scan: ``(image uint8 (H, W), lesion mask bool (H, W), factors)``.

    ``label`` is ``benign``, ``malignant`` or ``normal`` (no lesion: an empty mask).
    """
    from scipy.ndimage import gaussian_filter

    if label not in (BENIGN, MALIGNANT, NORMAL):
        raise Rad4XCNNError(f"unknown synthetic class {label!r}; expected benign, malignant or normal")
    scanner = scanner or Scanner()
    rows, cols = shape
    depth = np.linspace(0.0, 1.0, rows)[:, None]
    # layered tissue: skin line, subcutaneous fat with a wavy lower border, fibroglandular tissue
    tissue = 0.6 + 0.12 * _smooth_noise(rng, shape, 12.0)
    fat_border = 0.22 + 0.05 * _smooth_noise(rng, (1, cols), 25.0)
    tissue = np.where(depth < fat_border, 0.38 + 0.06 * _smooth_noise(rng, shape, 6.0), tissue)
    tissue[: max(2, rows // 40)] = 0.95
    tissue = np.clip(tissue, 0.05, None)
    factors: dict[str, float] = dict.fromkeys(FACTOR_RANGES, 0.0)
    mask = np.zeros(shape, dtype=bool)
    centre = (float("nan"), float("nan"))
    if label != NORMAL:
        factors = _draw_factors(rng, label, separation)
        mask, centre = _lesion_mask(rng, shape, factors)
        soft = gaussian_filter(mask.astype(float), 0.8 + 1.5 * (factors["irregularity"] < 0.05))
        interior = factors["echogenicity"] * (1.0 + factors["heterogeneity"] * _smooth_noise(rng, shape, 2.5))
        interior = np.clip(interior, 0.02, None)
        # posterior acoustic feature: below the lesion, per column, fading with depth
        below = np.maximum.accumulate(mask, axis=0) & ~mask
        column_profile = gaussian_filter(mask.any(axis=0).astype(float), 3.0)[None, :]
        fade = np.exp(-np.cumsum(below, axis=0) / (0.6 * rows))
        posterior = 1.0 - factors["shadowing"] * below * fade * column_profile
        tissue = (tissue * np.clip(posterior, 0.05, None)) * (1 - soft) + interior * soft
    attenuation = np.exp(-scanner.attenuation * depth) * (1.0 + 0.8 * depth)  # with time-gain compensation
    intensity = tissue * attenuation * _speckle(rng, shape, scanner.speckle_size)
    db = 20.0 * np.log10(intensity * scanner.gain + 1e-6)
    image = np.clip((db + scanner.dynamic_range) / (scanner.dynamic_range + 6.0), 0.0, 1.0)
    image8 = np.round(image * 255.0).astype(np.uint8)
    factors.update(
        {
            "gain": scanner.gain,
            "speckle_size": scanner.speckle_size,
            "attenuation": scanner.attenuation,
            "lesion_area_px": float(mask.sum()),
            "center_row": centre[0],
            "center_col": centre[1],
        }
    )
    return image8, mask, factors


@dataclass(frozen=True)
class SyntheticSpec:
    """What :func:`make_synthetic_cohort` generates (recorded in ``synthetic.json`` beside the manifest)."""

    n: int = 200
    n_external: int = 0
    malignant_fraction: float = 0.4
    normal_fraction: float = 0.0
    shape: tuple[int, int] = (256, 320)
    separation: float = 1.0
    seed: int = 0
    fmt: str = "png"


def make_synthetic_cohort(
    out: str | os.PathLike,
    n: int = 200,
    *,
    seed: int = 0,
    n_external: int = 0,
    malignant_fraction: float = 0.4,
    normal_fraction: float = 0.0,
    shape: tuple[int, int] = (256, 320),
    separation: float = 1.0,
    fmt: str = "png",
) -> Path:
    """Write a synthetic cohort to ``out``: ``images/``, ``masks/``, ``manifest.csv``, ``factors.csv``.

    Deterministic from ``seed``: each case draws from its own generator seeded by (seed, cohort, index),
    so the same seed writes identical files. Returns the manifest's path.

    Parameters
    ----------
    n : cases of the internal cohort; ``n_external`` : cases of an external cohort (another scanner).
    malignant_fraction, normal_fraction : class proportions (normal cases have no lesion and an empty mask).
    shape : (rows, cols) of every image. ``separation`` : 0–1, how distinct the two classes are.
    fmt : ``png`` (8-bit, like BUSI) or ``nrrd`` (keeps a 0.1 mm pixel spacing).

    Examples
    --------
    >>> manifest = make_synthetic_cohort("synthetic", n=40, seed=1)  # doctest: +SKIP
    """

    from Rad4XCNNLogic.infra.storage import write_json_atomic

    check_proportions(n, n_external, separation, malignant_fraction, normal_fraction)
    if fmt not in ("png", "nrrd"):
        raise Rad4XCNNError(f"unknown image format {fmt!r}; expected png or nrrd")
    rows, cols = int(shape[0]), int(shape[1])
    if rows < 64 or cols < 64:
        raise Rad4XCNNError(f"images must be at least 64x64 pixels, got {cols}x{rows}")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    manifest_rows, factor_rows = [], []
    for cohort, count, cohort_code in (("internal", n, 0), ("external", n_external, 1)):
        labels = class_sequence(count, malignant_fraction, normal_fraction, seed, cohort_code)
        scanner = Scanner.for_cohort(cohort)
        prefix = "syn" if cohort == "internal" else "ext"
        for i, label in enumerate(labels):
            case_id = f"{prefix}{i + 1:04d}"
            rng = np.random.default_rng([seed, cohort_code, i])
            image, mask, factors = synthesize_case(rng, label, (rows, cols), separation, scanner)
            image_path = out / "images" / f"{case_id}.{fmt}"
            mask_path = out / "masks" / f"{case_id}_mask.{fmt}"
            _write(image_path, image, fmt)
            _write(mask_path, (mask * 255).astype(np.uint8), fmt)
            manifest_rows.append(manifest_row(case_id, image_path, mask_path, label, cohort))
            factor_rows.append({"case_id": case_id, "label": label, "cohort": cohort, **factors})
    manifest_path = write_cohort_tables(out, manifest_rows, factor_rows)
    spec = SyntheticSpec(
        n, n_external, malignant_fraction, normal_fraction, (rows, cols), separation, seed, fmt
    )
    write_json_atomic(
        out / "synthetic.json",
        {"generator": "Rad4XCNNLogic.cohort.synthetic", **asdict(spec), "factor_ranges": FACTOR_RANGES},
    )
    log.debug("wrote %d synthetic cases to %s", len(manifest_rows), out)
    return manifest_path


def check_proportions(
    n: int, n_external: int, separation: float, malignant_fraction: float, normal_fraction: float
) -> None:
    """Refuse case counts, a separation or class fractions out of range (2D and 3D cohorts alike)."""
    if n < 1 or n_external < 0:
        raise Rad4XCNNError(
            f"need at least one internal case and n_external >= 0, got n={n}, n_external={n_external}"
        )
    if not (0.0 <= separation <= 1.0):
        raise Rad4XCNNError(f"separation must lie in [0, 1], got {separation}")
    if (
        not (0.0 <= malignant_fraction <= 1.0)
        or not (0.0 <= normal_fraction < 1.0)
        or malignant_fraction + normal_fraction > 1.0
    ):
        raise Rad4XCNNError("class fractions must lie in [0, 1] and add up to at most 1")


def class_sequence(
    count: int, malignant_fraction: float, normal_fraction: float, seed: int, cohort_code: int
) -> list[str]:
    n_mal = round(count * malignant_fraction)
    n_norm = round(count * normal_fraction)
    n_mal = min(n_mal, count - n_norm)
    labels = [MALIGNANT] * n_mal + [NORMAL] * n_norm + [BENIGN] * (count - n_mal - n_norm)
    order = np.random.default_rng([seed, cohort_code, 2**31 - 1]).permutation(count)
    return [labels[k] for k in order]


def _write(path: Path, array: np.ndarray, fmt: str) -> None:
    from Rad4XCNNLogic.cohort.imageio import Image2D, write_image
    from Rad4XCNNLogic.infra.storage import atomic_path

    if fmt == "png":
        from PIL import Image

        with atomic_path(path) as tmp:
            Image.fromarray(array).save(tmp, format="PNG")
    else:
        write_image(path, array, Image2D(array, spacing=(0.1, 0.1)))


def manifest_row(case_id: str, image_path: Path, mask_path: Path, label: str, cohort: str) -> dict:
    """The manifest row of a synthetic case written under ``images/`` and ``masks/``."""
    return {
        "case_id": case_id,
        "image": f"images/{image_path.name}",
        "mask": f"masks/{mask_path.name}",
        "label": label,
        "cohort": cohort,
        "has_lesion": "false" if label == NORMAL else "true",
    }


def write_cohort_tables(out: Path, manifest_rows: list[dict], factor_rows: list[dict]) -> Path:
    """Write a synthetic cohort's ``manifest.csv`` and ``factors.csv`` (its planted factors); returns the
    manifest's path."""
    import pandas as pd

    from Rad4XCNNLogic.infra.storage import write_csv_atomic

    manifest_path = out / "manifest.csv"
    write_csv_atomic(manifest_path, pd.DataFrame(manifest_rows), index=False)
    write_csv_atomic(out / "factors.csv", pd.DataFrame(factor_rows), index=False, float_format="%.6g")
    return manifest_path
