"""CAM volumes of a native 3D network: maps on each case's lesion cube, put back into the image's own
geometry (an anisotropic, rotated volume here), with the checks of the 2D maps computed in 3D."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

pytest.importorskip("torch")
pytest.importorskip("pytorch_grad_cam")
pytest.importorskip("monai")

from Rad4XCNNLogic.cam.faithfulness import impute
from Rad4XCNNLogic.cam.maps import METRIC_COLUMNS, compute_cams
from Rad4XCNNLogic.cam.sanity import map_flags
from Rad4XCNNLogic.cam.settings import CamConfig
from Rad4XCNNLogic.cam.volumes import compute_cam_volumes
from Rad4XCNNLogic.cam.volumes3d import compute_cube_cams, cube_maps_to_volume, lesion_on_cube
from Rad4XCNNLogic.cohort.manifest import read_manifest
from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.features.cubes import volume_cube

SPACING = (0.7, 0.9, 2.5)  # x, y, z in mm: slices 2.5 mm apart
ORIGIN = (-40.0, 12.5, 30.0)
DIRECTION = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
#: layer2 of a ResNet10 gives a 3 x 3 x 3 grid on a 24-voxel cube (layer4: a single cell)
SECTION = {"target_layer": "layer2", "deletion_steps": 2}


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    """Six synthetic volumes (anisotropic, moved to a non-identity origin and direction) and a ResNet10
    checkpoint trained on them for one epoch."""
    from Rad4XCNNLogic.cohort.synthetic3d import make_synthetic_volumes
    from Rad4XCNNLogic.features.settings import TrainingConfig
    from Rad4XCNNLogic.features.training import train_model

    out = tmp_path_factory.mktemp("cam3d")
    manifest = make_synthetic_volumes(
        out, n=6, seed=3, shape=(32, 32, 12), spacing=SPACING, malignant_fraction=0.5
    )
    frame = pd.read_csv(manifest)
    for column in ("image", "mask"):
        for name in frame[column]:
            img = sitk.ReadImage(str(out / name))
            img.SetOrigin(ORIGIN)
            img.SetDirection(DIRECTION)
            sitk.WriteImage(img, str(out / name), True)
    cohort = read_manifest(manifest)
    settings = TrainingConfig(epochs=1, batch_size=4, input_size=24)
    train_model(cohort, "monai_resnet10", settings, device="cpu", out=out / "model3d.pt", progress=False)
    return cohort, out / "model3d.pt"


def _covered(window, shape) -> np.ndarray:
    """The voxels whose centre lies in the cube (written out here, independently of the code tested)."""
    grids = np.indices(shape, dtype=np.float64)
    inside = np.ones(shape, bool)
    for g, start, step in zip(grids, window.start, window.step, strict=True):
        position = (g - start) / step
        inside &= (position >= -0.5) & (position <= window.size - 0.5)
    return inside


def test_map_volumes_lie_in_the_image_geometry(volumes, tmp_path):
    cohort, checkpoint = volumes
    section = CamConfig(methods=["gradcam", "eigencam"], faithfulness=False, randomisation="all", **SECTION)
    result = compute_cam_volumes(cohort, checkpoint, section, device="cpu", out_dir=tmp_path, progress=False)
    metrics = result.metrics
    assert result.settings["volumes"]["network"] == "3d"  # dispatched to the native 3D maps, not slices
    assert result.settings["target_layer_grid"] == [3, 3, 3]
    assert list(metrics.columns) == METRIC_COLUMNS
    assert len(metrics) == 2 * len(cohort)
    assert sorted(metrics.groupby("method")["case_id"].apply(sorted)["gradcam"]) == sorted(cohort.case_ids)
    config = result.settings["preprocess"]
    for case in cohort.cases:
        loaded = case.load()
        image = sitk.ReadImage(str(case.image))
        cam = sitk.ReadImage(str(tmp_path / "cam" / f"{case.case_id}_gradcam.nrrd"))
        assert cam.GetSize() == image.GetSize() == (32, 32, 12)
        np.testing.assert_allclose(cam.GetSpacing(), SPACING)
        np.testing.assert_allclose(cam.GetOrigin(), ORIGIN)
        np.testing.assert_allclose(cam.GetDirection(), DIRECTION)
        array = sitk.GetArrayFromImage(cam)
        from Rad4XCNNLogic.features.backbones import PreprocessConfig

        _, window = volume_cube(loaded, PreprocessConfig.from_dict(config))
        covered = _covered(window, array.shape)
        assert not array[~covered].any()  # 0 where the cube does not reach
        row = metrics[(metrics["case_id"] == case.case_id) & (metrics["method"] == "gradcam")].iloc[0]
        mask = loaded.mask
        if array.max() > 0:
            assert row["energy_inside"] == pytest.approx(array[mask].sum() / array.sum(), rel=1e-4)
            assert row["pointing_hit"] == int(mask.flat[int(np.argmax(array))])
        # chance: the lesion's share of the voxels the cube covers, not of the whole volume
        assert row["energy_chance"] == pytest.approx(mask[covered].mean(), rel=1e-6)
        assert row["energy_chance"] > mask.mean()
    assert set(result.randomisation["step"]) == {"all"}
    assert metrics["randomisation_similarity"].notna().any()
    assert set(result.agreement["case_id"]) <= set(cohort.case_ids)
    written = pd.read_csv(tmp_path / "cam" / "cam_metrics.csv")
    assert len(written) == len(metrics)
    assert (tmp_path / "cam" / "cam_summary.csv").is_file()


def test_a_map_planted_in_the_cube_lands_on_its_voxels(volumes):
    from Rad4XCNNLogic.features.backbones import PreprocessConfig

    cohort, _ = volumes
    loaded = cohort.cases[0].load()
    config = PreprocessConfig(model_name="monai_resnet10", input_size=24, margin=0.1)
    cube, window = volume_cube(loaded, config)
    assert cube.shape == (24, 24, 24)
    assert window.step[0] == pytest.approx(window.step[1] * SPACING[1] / SPACING[2])  # isotropic in mm
    planted = (6, 15, 9)
    grid = np.indices(cube.shape)
    blob = np.exp(-sum((g - p) ** 2 for g, p in zip(grid, planted, strict=True)) / (2 * 2.0**2))
    volume_maps, covered = cube_maps_to_volume({"blob": blob}, window, loaded.image.shape)
    back = volume_maps["blob"]
    expected = [s + p * d for s, p, d in zip(window.start, planted, window.step, strict=True)]
    peak = np.unravel_index(int(np.argmax(back)), back.shape)
    assert all(abs(p - e) <= 0.5 + 1e-6 for p, e in zip(peak, expected, strict=True))
    # the lesion sampled on the cube: the same volume in mm as in the image
    lesion = lesion_on_cube(loaded.mask, window)
    mm3_image = loaded.mask.sum() * np.prod(SPACING)
    mm3_cube = lesion.sum() * np.prod([d * s for d, s in zip(window.step, SPACING[::-1], strict=True)])
    assert mm3_cube == pytest.approx(mm3_image, rel=0.2)
    assert covered.sum() < covered.size  # the cube holds the lesion, not the whole volume


def test_the_checks_in_3d(volumes):
    cohort, checkpoint = volumes
    section = CamConfig(methods=["gradcam"], randomisation="cascade", **SECTION)
    result = compute_cube_cams(
        cohort.cases[:1], checkpoint, section, device="cpu", road_percentiles=[50], progress=False
    )
    metrics = result.metrics
    assert len(metrics) == 1
    for column in ("road_combined", "deletion_auc", "insertion_auc", "road_combined_random",
                   "deletion_auc_shuffled", "insertion_auc_shuffled"):  # fmt: skip
        assert metrics[column].notna().all(), column
    assert metrics["deletion_auc"].between(0, 1).all()
    steps = result.randomisation.sort_values("order")["step"].unique().tolist()
    assert steps[0] == "fc" and steps[-1] == "all" and len(steps) == 7
    verdict = result.summary().loc["gradcam", "verdict"]
    assert isinstance(verdict, str) and verdict


def test_scorecam_runs_on_a_cube(volumes):
    cohort, checkpoint = volumes
    section = CamConfig(methods=["scorecam"], faithfulness=False, randomisation="none", **SECTION)
    result = compute_cube_cams(cohort.cases[:1], checkpoint, section, device="cpu", progress=False)
    row = result.metrics.iloc[0]
    assert row["max_value"] > 0 and row["flags"] in ("", "outside")


def test_a_3d_network_refuses_2d_images(volumes, tmp_path):
    from Rad4XCNNLogic.cohort.synthetic import make_synthetic_cohort

    _, checkpoint = volumes
    images = read_manifest(make_synthetic_cohort(tmp_path, n=2, shape=(64, 64)))
    with pytest.raises(Rad4XCNNError, match="3D network and the cohort holds 2D images"):
        compute_cam_volumes(images, checkpoint, device="cpu", progress=False)
    with pytest.raises(Rad4XCNNError, match="3D network and the cohort holds 2D images"):
        compute_cams(images, checkpoint, device="cpu", progress=False)


def test_imputation_over_26_neighbours_recovers_a_linear_field():
    import torch

    grid = np.indices((10, 10, 10), dtype=np.float32)
    field = torch.from_numpy(2.0 * grid[0] - grid[1] + 0.5 * grid[2])[None]
    removed = np.zeros((10, 10, 10), bool)
    removed[3:7, 2:8, 4:6] = True
    filled = impute(field, removed, noise=0.0)
    assert torch.allclose(filled, field, atol=1e-3)  # a linear field is its neighbours' weighted mean


def test_flags_measure_saturation_over_the_region_the_cube_covers():
    cam = np.zeros((6, 6, 6))
    cam[:2] = 1.0  # every covered voxel at the maximum
    region = np.zeros(cam.shape, bool)
    region[:2] = True
    assert map_flags(np.arange(8.0), cam, None, region=region) == ["saturated"]
    assert map_flags(np.arange(8.0), cam, None) == []  # over the whole volume, a third only
