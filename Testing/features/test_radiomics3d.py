"""Radiomics on 3D volumes: the 3D shape class, the paper3d preset, exact volumes in mm^3, resampling,
the planted factors of the synthetic 3D cohort recovered, refusals in one line, and Dask as local."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy.stats import spearmanr

from Rad4XCNNLogic.cohort.manifest import read_manifest
from Rad4XCNNLogic.cohort.synthetic3d import make_synthetic_volumes
from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.features.radiomics import extract_radiomics
from Rad4XCNNLogic.features.radiomics_params import resolve_params, with_resampling
from Testing.conftest import write_manifest_rows

SMALL = """
setting: {binCount: 32, label: 1}
imageType: {Original: {}}
featureClass: {shape: , firstorder: }
"""


@pytest.fixture(scope="module")
def small_params(tmp_path_factory):
    path = tmp_path_factory.mktemp("params") / "small3d.yaml"
    path.write_text(SMALL)
    return path


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    return make_synthetic_volumes(tmp_path_factory.mktemp("vol"), n=10, shape=(32, 32, 16), seed=0)


def _box_case(root, spacing=(0.8, 0.6, 2.5)):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 200, size=(12, 20, 22)).astype(np.int16)
    mask = np.zeros(image.shape, np.uint8)
    mask[3:8, 4:13, 5:16] = 1  # 5 x 9 x 11 voxels
    for name, array in (("img.nrrd", image), ("msk.nrrd", mask)):
        img = sitk.GetImageFromArray(array)
        img.SetSpacing(spacing)
        sitk.WriteImage(img, str(root / name))
    row = {"case_id": "box", "image": "img.nrrd", "mask": "msk.nrrd", "label": "a"}
    return read_manifest(write_manifest_rows(root / "m.csv", [row]))


def test_voxel_volume_is_exact_in_cubic_millimetres(tmp_path, small_params):
    result = extract_radiomics(_box_case(tmp_path), small_params, jobs=1, progress=False)
    features = result.features.loc["box"]
    assert features["original_shape_VoxelVolume"] == pytest.approx(5 * 9 * 11 * 0.8 * 0.6 * 2.5, rel=1e-12)
    # the marching-cubes mesh cuts the box's edges: a little less than the voxels, never more
    assert 0.8 < features["original_shape_MeshVolume"] / features["original_shape_VoxelVolume"] < 1.0
    assert "original_shape2D_PixelSurface" not in result.features.columns
    assert result.settings["dims"] == 3 and result.settings["image_preparation"].startswith("3D")


def test_resampling_is_pyradiomics_own_and_changes_the_cache_key(tmp_path, small_params):
    params = resolve_params(small_params)
    resampled = with_resampling(params, [1.0, 1.0, 1.0])
    assert resampled.sha256 != params.sha256
    result = extract_radiomics(_box_case(tmp_path), resampled, jobs=1, progress=False)
    assert result.diagnostics.loc["box", "Image-interpolated_Spacing"] == "(1.0, 1.0, 1.0)"
    with pytest.raises(Rad4XCNNError, match=r"resample spacing must be 2 or 3 positive numbers"):
        with_resampling(params, [1.0, 0.0, 1.0])
    with pytest.raises(Rad4XCNNError, match=r"has 2 values but the cohort holds 3D volumes; give 3"):
        extract_radiomics(_box_case(tmp_path), with_resampling(params, [1.0, 1.0]), jobs=1, progress=False)


def test_paper_preset_on_volumes_is_paper3d(volumes):
    cohort = read_manifest(volumes)
    result = extract_radiomics(cohort.cases[:1], "paper", jobs=1, progress=False)
    columns = result.features.columns
    assert result.settings["params"] == "paper3d"
    assert len(columns) == 14 + 9 * 93  # shape (3D) + 93 on the original and 8 wavelet sub-bands
    assert "original_shape_Sphericity" in columns and "wavelet-LLH_glcm_Correlation" in columns


def test_two_d_parameters_on_volumes_are_refused_in_one_line(volumes, tmp_path):
    path = tmp_path / "flat.yaml"
    path.write_text("setting: {force2D: true}\nfeatureClass: {firstorder: }\n")
    cohort = read_manifest(volumes)
    with pytest.raises(Rad4XCNNError, match=r"flat.yaml are made for 2D images \(force2D: true\).*paper3d"):
        extract_radiomics(cohort.cases[:1], path, jobs=1, progress=False)


def test_planted_factors_are_recovered(volumes, small_params):
    result = extract_radiomics(read_manifest(volumes), small_params, jobs=2, progress=False)
    features = result.features
    factors = pd.read_csv(volumes.parent / "factors.csv", index_col="case_id").loc[features.index]
    np.testing.assert_allclose(
        features["original_shape_VoxelVolume"], factors["lesion_volume_mm3"], rtol=1e-9
    )
    assert spearmanr(factors["planted_volume_mm3"], features["original_shape_MeshVolume"])[0] > 0.9
    assert spearmanr(factors["irregularity"], features["original_shape_Sphericity"])[0] < -0.7
    assert spearmanr(factors["heterogeneity"], features["original_firstorder_Variance"])[0] > 0.8


def test_dask_runs_volumes_as_the_local_runner(volumes, small_params):
    distributed = pytest.importorskip("distributed")
    cases = read_manifest(volumes).cases[:3]
    local = extract_radiomics(cases, small_params, jobs=1, progress=False)
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        remote = extract_radiomics(cases, small_params, scheduler=cluster.scheduler_address, progress=False)
    pd.testing.assert_frame_equal(remote.features, local.features, check_exact=True)
