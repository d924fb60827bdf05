"""The synthetic cohort: deterministic, and the classes differ in the documented factors."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from Rad4XCNNLogic.cohort.manifest import read_manifest
from Rad4XCNNLogic.cohort.synthetic import FACTOR_RANGES, make_synthetic_cohort
from Rad4XCNNLogic.errors import Rad4XCNNError


def _digest(folder):
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f.relative_to(folder).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def test_same_seed_gives_identical_files(tmp_path):
    a = make_synthetic_cohort(tmp_path / "a", n=6, n_external=2, seed=11, shape=(96, 128))
    b = make_synthetic_cohort(tmp_path / "b", n=6, n_external=2, seed=11, shape=(96, 128))
    c = make_synthetic_cohort(tmp_path / "c", n=6, n_external=2, seed=12, shape=(96, 128))
    assert _digest(a.parent) == _digest(b.parent)
    assert _digest(a.parent) != _digest(c.parent)


def test_manifest_is_valid_and_balanced(synthetic_manifest):
    cohort = read_manifest(synthetic_manifest, check_images=True)
    assert len(cohort) == 30 and not cohort.failures
    assert cohort.cohorts == ["internal", "external"]
    labels = pd.Series([c.label for c in cohort.subset(cohort="internal")]).value_counts()
    assert labels.to_dict() == {"benign": 14, "malignant": 10}
    factors = pd.read_csv(synthetic_manifest.parent / "factors.csv", index_col=0)
    assert list(factors.index) == cohort.case_ids


def test_factors_follow_the_documented_ranges(synthetic_manifest):
    factors = pd.read_csv(synthetic_manifest.parent / "factors.csv", index_col=0)
    for name, ranges in FACTOR_RANGES.items():
        for label, (lo, hi) in ranges.items():
            values = factors.loc[factors["label"] == label, name]
            assert values.between(lo - 1e-9, hi + 1e-9).all(), (name, label)


def _measured(manifest):
    """Properties measured on the pixels, to check that the planted factors show in the images."""
    cohort = read_manifest(manifest)
    rows = []
    for case in cohort:
        loaded = case.load()
        mask, img = loaded.mask, loaded.image.array
        area = mask.sum()
        perimeter = (mask & ~ndimage.binary_erosion(mask)).sum()
        rows_idx, cols_idx = np.nonzero(mask)
        height, width = np.ptp(rows_idx) + 1, np.ptp(cols_idx) + 1
        below = img[rows_idx.max() + 3 : rows_idx.max() + 40, cols_idx.min() : cols_idx.max() + 1]
        beside = img[rows_idx.max() + 3 : rows_idx.max() + 40, :]
        rows.append(
            {
                "label": case.label,
                "compactness": perimeter**2 / area,
                "width_over_height": width / height,
                "interior_mean": img[mask].mean(),
                "posterior_ratio": below.mean() / beside.mean(),
            }
        )
    return pd.DataFrame(rows)


def test_classes_differ_in_the_images(tmp_path):
    manifest = make_synthetic_cohort(tmp_path / "s", n=40, seed=5, shape=(160, 200))
    m = _measured(manifest).groupby("label").mean()
    assert m.loc["malignant", "compactness"] > 1.3 * m.loc["benign", "compactness"]  # irregular margin
    assert m.loc["benign", "width_over_height"] > 1.2 * m.loc["malignant", "width_over_height"]  # oval
    assert m.loc["malignant", "interior_mean"] < m.loc["benign", "interior_mean"]  # more hypoechoic
    assert m.loc["malignant", "posterior_ratio"] < m.loc["benign", "posterior_ratio"]  # shadowing


def test_separation_zero_removes_the_class_difference(tmp_path):
    manifest = make_synthetic_cohort(tmp_path / "s", n=60, seed=2, shape=(96, 96), separation=0.0)
    factors = pd.read_csv(manifest.parent / "factors.csv", index_col=0)
    means = factors.groupby("label")["aspect_ratio"].mean()
    assert abs(means["benign"] - means["malignant"]) < 0.15


def test_normal_cases_have_empty_masks(tmp_path):
    manifest = make_synthetic_cohort(tmp_path / "s", n=10, seed=1, shape=(96, 96), normal_fraction=0.3)
    cohort = read_manifest(manifest, check_images=True)
    normals = [c for c in cohort if c.label == "normal"]
    assert len(normals) == 3 and not cohort.failures
    assert all(not c.has_lesion and not c.load().mask.any() for c in normals)


def test_bad_arguments(tmp_path):
    with pytest.raises(Rad4XCNNError, match="separation"):
        make_synthetic_cohort(tmp_path, n=2, separation=2)
    with pytest.raises(Rad4XCNNError, match="at least 64x64"):
        make_synthetic_cohort(tmp_path, n=2, shape=(32, 32))
    with pytest.raises(Rad4XCNNError, match="class fractions"):
        make_synthetic_cohort(tmp_path, n=2, malignant_fraction=0.8, normal_fraction=0.5)
