"""Voxel-based radiomic feature maps: values against a hand computation, the image's geometry kept, feature
names checked, features picked from a run, agreement with a CAM, parallel workers, and every bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import write_manifest_rows

pytest.importorskip("radiomics")

from Rad4XCNNLogic.cam.featuremaps import (
    check_feature_names,
    compute_feature_maps,
    map_agreement,
)
from Rad4XCNNLogic.cohort.imageio import Image2D, read_image, write_image
from Rad4XCNNLogic.cohort.manifest import read_manifest
from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.run.results import features_from_run

GEOMETRY = {"spacing": (0.5, 0.8), "origin": (12.0, -3.5), "direction": (0.0, 1.0, 1.0, 0.0)}


def write_nrrd_case(folder, case_id, box=(10, 12, 34, 40), shape=(48, 56), seed=0):
    """An NRRD image with non-trivial spacing, origin and direction, and its rectangular lesion mask."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 200, size=shape).astype(np.int16)
    mask = np.zeros(shape, np.uint8)
    r0, c0, r1, c1 = box
    mask[r0:r1, c0:c1] = 1
    image[r0:r1, c0:c1] += 40
    write_image(folder / f"{case_id}.nrrd", image, like=Image2D(image, **GEOMETRY))
    write_image(folder / f"{case_id}_mask.nrrd", mask, like=Image2D(mask, **GEOMETRY))
    return {"case_id": case_id, "image": f"{case_id}.nrrd", "mask": f"{case_id}_mask.nrrd", "label": "a"}


@pytest.fixture
def cohort(tmp_path):
    rows = [write_nrrd_case(tmp_path, "big", seed=1), write_nrrd_case(tmp_path, "thin", box=(20, 10, 23, 50))]
    return read_manifest(write_manifest_rows(tmp_path / "manifest.csv", rows))


def test_mean_map_is_the_window_mean_in_the_image_geometry(cohort, tmp_path):
    out = tmp_path / "maps"
    result = compute_feature_maps(
        cohort,
        "original_firstorder_Mean",
        cases="big",
        kernel_radius=1,
        out_dir=out,
        keep_maps=True,
        params="paper",
    )
    loaded = cohort.cases[0].load()
    value = result.maps[("big", "original_firstorder_Mean")]
    image, mask = loaded.image.array.astype(float), loaded.mask
    for r, c in [(10, 12), (20, 25), (33, 39)]:  # a corner, the middle, the far corner of the lesion
        window = (slice(r - 1, r + 2), slice(c - 1, c + 2))
        assert value[r, c] == pytest.approx(image[window][mask[window]].mean(), rel=1e-5)
    assert (value[~mask] == 0).all()
    written = read_image(out / "big_original_firstorder_Mean.nrrd")
    assert written.shape == loaded.image.shape
    assert written.spacing == pytest.approx(GEOMETRY["spacing"]) and written.origin == pytest.approx(
        GEOMETRY["origin"]
    )
    assert written.direction == pytest.approx(GEOMETRY["direction"])
    np.testing.assert_allclose(written.array, value)
    table = pd.read_csv(out / "featuremaps.csv")
    assert table.loc[0, "pixels"] == mask.sum() and table.loc[0, "nan_pixels"] == 0
    assert table.loc[0, "mean"] == pytest.approx(value[mask].mean(), rel=1e-5)


def test_texture_and_wavelet_maps_vary_inside_the_lesion(cohort):
    names = "original_glcm_Contrast,wavelet-LH_firstorder_Mean"
    result = compute_feature_maps(cohort, names, cases="big", kernel_radius=2, params="paper")
    mask = cohort.cases[0].load().mask
    for name in names.split(","):
        value = result.maps[("big", name)]
        assert np.nanstd(value[mask]) > 0 and (value[~mask] == 0).all()


def test_names_are_checked_and_shape_features_skipped(cohort):
    assert check_feature_names(["original_glcm_Contrast", "wavelet-HH_ngtdm_Busyness"]) == (
        ["original_glcm_Contrast", "wavelet-HH_ngtdm_Busyness"],
        [],
    )
    with pytest.raises(
        Rad4XCNNError, match=r"unknown radiomic feature 'original_glcm_Contrst'.*original_glcm_Contrast"
    ):
        check_feature_names("original_glcm_Contrst")
    with pytest.raises(Rad4XCNNError, match=r"unknown radiomic feature 'Contrast' \(expected <image type>"):
        check_feature_names("Contrast")
    result = compute_feature_maps(
        cohort,
        "original_shape2D_Elongation,original_firstorder_Median",
        cases="big",
        kernel_radius=1,
        params="paper",
    )
    assert result.skipped == ["original_shape2D_Elongation"]
    assert list(result.table["feature"]) == ["original_firstorder_Median"]
    with pytest.raises(
        Rad4XCNNError, match=r"no feature with a voxel-based form among original_shape2D_MeshSurface"
    ):
        compute_feature_maps(cohort, "original_shape2D_MeshSurface", cases="big", params="paper")


def test_a_kernel_larger_than_the_lesion_fails_that_case_only(cohort, tmp_path):
    result = compute_feature_maps(
        cohort, "original_firstorder_Mean,original_glcm_Contrast", kernel_radius=2, params="paper"
    )
    assert set(result.table["case_id"]) == {"big"}
    assert len(result.failures) == 1 and result.failures[0].case_id == "thin"
    assert (
        "kernel of radius 2 (5 x 5 pixels) is larger than the lesion (3 x 40 pixels)"
        in result.failures[0].problem
    )
    with pytest.raises(Rad4XCNNError, match=r"no feature map: every case failed.*thin.*kernel of radius 2"):
        compute_feature_maps(
            cohort, "original_firstorder_Mean", cases="thin", kernel_radius=2, params="paper"
        )
    with pytest.raises(Rad4XCNNError, match=r"kernel radius must be at least 1 pixel, got 0"):
        compute_feature_maps(cohort, "original_firstorder_Mean", kernel_radius=0, params="paper")


def test_agreement_with_the_cams_is_written_beside_the_maps(cohort, tmp_path):
    first = compute_feature_maps(
        cohort, "original_firstorder_Mean", cases="big", kernel_radius=1, keep_maps=True, params="paper"
    )
    value = first.maps[("big", "original_firstorder_Mean")]
    like = cohort.cases[0].load().image
    cams = tmp_path / "cam"
    write_image(cams / "big_gradcam.nrrd", value.astype(np.float32) ** 2, like=like)
    write_image(cams / "big_eigencam.nrrd", -value.astype(np.float32), like=like)
    write_image(cams / "big_eigencam_raw.nrrd", value.astype(np.float32), like=like)  # raw: not compared
    out = tmp_path / "maps"
    compute_feature_maps(
        cohort,
        "original_firstorder_Mean",
        cases="big",
        kernel_radius=1,
        cam_dir=cams,
        out_dir=out,
        params="paper",
    )
    agreement = pd.read_csv(out / "featuremap_agreement.csv").set_index("method")["spearman"]
    assert agreement["gradcam"] == pytest.approx(1.0) and agreement["eigencam"] == pytest.approx(-1.0)
    assert len(agreement) == 2
    mask = np.zeros((3, 3), bool)
    mask[1:, 1:] = True
    feature = np.array([[9.0, 9.0, 9.0], [9.0, 1.0, 2.0], [9.0, 3.0, np.nan]])
    assert map_agreement(feature, -feature, mask) == pytest.approx(-1.0)


def test_parallel_workers_give_the_same_maps(cohort):
    names = "original_firstorder_Mean,original_glcm_Contrast"
    serial = compute_feature_maps(cohort, names, cases="big", kernel_radius=1, keep_maps=True, params="paper")
    parallel = compute_feature_maps(
        cohort, names, cases="big", kernel_radius=1, keep_maps=True, jobs=2, params="paper"
    )
    assert serial.maps.keys() == parallel.maps.keys()
    for key, value in serial.maps.items():
        np.testing.assert_array_equal(value, parallel.maps[key])
    assert list(parallel.table["feature"]) == names.split(",")


def test_features_are_picked_from_a_run(cohort, tmp_path):
    from Rad4XCNNLogic.explain.explanation import explain, write_explanation
    from Rad4XCNNLogic.explain.settings import ExplainConfig

    rng = np.random.default_rng(0)
    n = 30
    a, b = rng.random(n), rng.random(n)
    ids = [f"c{i}" for i in range(n)]
    radiomic = pd.DataFrame(
        {
            "original_firstorder_Mean": a,
            "original_glcm_Contrast": b,
            "original_firstorder_Median": rng.random(n),
        },
        index=ids,
    )
    deep = pd.DataFrame({"m_0": a + 0.01 * rng.random(n), "m_1": b + 0.01 * rng.random(n)}, index=ids)
    run = tmp_path / "run"
    write_explanation(
        explain(deep, radiomic, ExplainConfig(thresholds=[0.8], bootstrap=0, fdr=None, permutations=0)), run
    )
    pd.DataFrame(
        {"feature_set": "deep", "classifier": "rf", "feature": ["m_0", "m_1"], "importance_mean": [0.1, 0.9]}
    ).to_csv(run / "importances.csv", index=False)
    names, pairs = features_from_run(run, 1)
    assert names == ["original_glcm_Contrast"] and list(pairs["deep_feature"]) == ["m_1"]
    assert features_from_run(run, 2)[0] == ["original_glcm_Contrast", "original_firstorder_Mean"]
    result = compute_feature_maps(
        cohort,
        names,
        cases="big",
        from_run=run,
        top=1,
        pairs=pairs,
        kernel_radius=1,
        out_dir=tmp_path / "fm",
        params="paper",
    )
    assert list(result.table["feature"]) == ["original_glcm_Contrast"]
    settings = json.loads((tmp_path / "fm" / "featuremaps.json").read_text())["settings"]
    assert settings["from_run"] == str(run) and settings["pairs"][0]["deep_feature"] == "m_1"
    with pytest.raises(Rad4XCNNError, match=r"--top must be at least 1"):
        features_from_run(run, 0)
    with pytest.raises(Rad4XCNNError, match=r"name the radiomic features \(--features\), or give a run"):
        compute_feature_maps(cohort, None, cases="big", params="paper")


def test_cli_featuremaps_and_case(cohort, tmp_path, capsys):
    from Rad4XCNNLogic.cli import main

    manifest = tmp_path / "manifest.csv"
    out = tmp_path / "cli"
    args = ["featuremaps", "--manifest", str(manifest), "--cases", "big", "--kernel-radius", "1"]
    code = main(
        [*args, "--features", "original_firstorder_Mean,original_shape2D_Perimeter", "--out", str(out)]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert (
        "wrote 1 feature map(s) of 1 case(s)" in printed and "skipped original_shape2D_Perimeter" in printed
    )
    assert (out / "big_original_firstorder_Mean.nrrd").is_file() and (out / "featuremaps.csv").is_file()
    assert main([*args, "--features", "original_glcm_Contrastt", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "close names: original_glcm_Contrast" in err
    assert main([*args, "--out", str(out)]) == 2
    assert "--from-run RUN --top K" in capsys.readouterr().err
    # the same from 'rad4xcnn case' (one case; no run: the paper preset)
    single = write_manifest_rows(tmp_path / "one.csv", [pd.read_csv(manifest).iloc[0].to_dict()])
    case_out = tmp_path / "case"
    case_args = ["case", "--manifest", str(single), "--out", str(case_out), "--kernel-radius", "1"]
    code = main([*case_args, "--features", "original_firstorder_Mean"])
    assert code == 0
    assert (case_out / "featuremaps" / "big_original_firstorder_Mean.nrrd").is_file()
    assert (case_out / "radiomics.csv").is_file()


def write_volume_case(folder, case_id="ct01", shape=(8, 24, 24), seed=3):
    """A 3D NRRD (anisotropic spacing, an origin, an oblique direction) with a box lesion, and its mask."""
    from Rad4XCNNLogic.cohort.volumes import Volume

    rng = np.random.default_rng(seed)
    image = rng.integers(0, 200, size=shape).astype(np.int16)
    mask = np.zeros(shape, np.uint8)
    mask[2:6, 6:16, 5:17] = 1
    image[mask > 0] += 40
    c, s = np.cos(0.2), np.sin(0.2)
    like = Volume(image, (0.8, 0.7, 2.5), (10.0, -4.0, 30.0), (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    write_image(folder / f"{case_id}.nrrd", image, like=like)
    write_image(folder / f"{case_id}_mask.nrrd", mask, like=like)
    row = {"case_id": case_id, "image": f"{case_id}.nrrd", "mask": f"{case_id}_mask.nrrd", "label": "a"}
    return row, like


def test_3d_mean_map_uses_a_3d_kernel_in_the_volume_geometry(tmp_path, capsys):
    from Rad4XCNNLogic.cli import main
    from Rad4XCNNLogic.cohort.volumes import read_volume

    row, like = write_volume_case(tmp_path)
    cohort = read_manifest(write_manifest_rows(tmp_path / "manifest.csv", [row]))
    assert cohort.dims == 3
    out = tmp_path / "maps"
    args = ["featuremaps", "--manifest", str(tmp_path / "manifest.csv"), "--kernel-radius", "1"]
    assert main([*args, "--out", str(out), "--features", "original_firstorder_Mean"]) == 0
    assert "wrote 1 feature map(s) of 1 case(s)" in capsys.readouterr().out
    loaded = cohort.cases[0].load()
    image, mask = loaded.image.array.astype(float), loaded.mask
    written = read_volume(out / "ct01_original_firstorder_Mean.nrrd")
    assert written.array.shape == image.shape
    assert written.spacing == pytest.approx(like.spacing) and written.origin == pytest.approx(like.origin)
    assert written.direction == pytest.approx(like.direction)
    for z, r, c in [(2, 6, 5), (4, 10, 11), (5, 15, 16)]:  # corner, middle, far corner: a 3 x 3 x 3 window
        window = (slice(z - 1, z + 2), slice(r - 1, r + 2), slice(c - 1, c + 2))
        assert written.array[z, r, c] == pytest.approx(image[window][mask[window]].mean(), rel=1e-5)
    assert (written.array[~mask] == 0).all()
    # a kernel wider than the lesion's 4 slices is named in 3D
    with pytest.raises(
        Rad4XCNNError, match=r"\(5 x 5 x 5 voxels\) is larger than the lesion \(4 x 10 x 12 voxels"
    ):
        compute_feature_maps(cohort, "original_firstorder_Mean", kernel_radius=2, params="paper")


def test_3d_agreement_with_a_cam_volume(tmp_path):
    row, like = write_volume_case(tmp_path)
    cohort = read_manifest(write_manifest_rows(tmp_path / "manifest.csv", [row]))
    image = cohort.cases[0].load().image.array.astype(np.float32)
    cams = tmp_path / "cam"
    write_image(cams / "ct01_gradcam.nrrd", image, like=like)  # a "CAM" that is the image itself
    result = compute_feature_maps(
        cohort, "original_firstorder_Mean", kernel_radius=1, cam_dir=cams, keep_maps=True, params="paper"
    )
    assert list(result.agreement["method"]) == ["gradcam"]
    value = result.maps[("ct01", "original_firstorder_Mean")]
    expected = map_agreement(value, image, cohort.cases[0].load().mask)
    assert result.agreement["spearman"].iloc[0] == pytest.approx(expected) and expected > 0.1
